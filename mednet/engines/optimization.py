"""Optimisers and learning-rate schedules chosen by name in a bundle config (``--optimizer``, ``--lr_schedule``).

Defaults follow the calibration study (SGD, lr 0.05, momentum 0.9, weight decay 5e-4, MultiStep ×0.1) with
milestones given as **fractions of the run** (``[0.5, 0.75]`` of 10 epochs = epochs 5 and 8), so one setting
serves a 2-epoch test and a 200-epoch study. Schedules step once per epoch (MONAI ``LrScheduleHandler``).
``plateau`` (ReduceLROnPlateau) follows a *validation* metric: :class:`PlateauOnValidation` reads it from the
evaluator after each validation, so it fits the same handler as the other schedules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from ignite.engine import Engine, Events

from mednet.errors import OptionError

__all__ = ["OPTIMIZERS", "LR_SCHEDULES", "make_optimizer", "make_scheduler", "PlateauOnValidation"]

OPTIMIZERS = ("sgd", "adam", "rmsprop")
LR_SCHEDULES = ("multistep", "step", "plateau", "cosine", "constant")


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float = 0.05, momentum: float = 0.9,
                   weight_decay: float = 5e-4) -> torch.optim.Optimizer:
    """``sgd`` (momentum, Nesterov off, as the study), ``adam`` or ``rmsprop`` (momentum as given)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise OptionError({"--optimizer": f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}"})


class PlateauOnValidation:
    """``ReduceLROnPlateau`` stepped with a validation metric of ``evaluator`` (mode ``max``: higher is better).

    Has ``step()`` without arguments and ``_last_lr`` like the other schedulers, so MONAI's
    ``LrScheduleHandler`` drives it unchanged (attach it after the ``ValidationHandler``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, evaluator: Engine | None, metric: str, factor: float = 0.1,
                 patience: int = 2) -> None:
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=factor, patience=patience)
        self.optimizer, self.evaluator, self.metric = optimizer, evaluator, metric
        self._last_lr = [g["lr"] for g in optimizer.param_groups]
        self._validated = False  # a validation finished since the last step (val_interval > 1 skips epochs)
        if evaluator is not None:
            evaluator.add_event_handler(Events.COMPLETED, self._on_validation)

    def _on_validation(self, engine: Engine) -> None:
        self._validated = True

    def step(self) -> None:
        metrics = getattr(getattr(self.evaluator, "state", None), "metrics", {}) or {}
        if self._validated and self.metric in metrics:
            self.scheduler.step(float(metrics[self.metric]))
        self._validated = False
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int, milestones: Sequence[float] = (0.5, 0.75),
                   gamma: float = 0.1, step_fraction: float = 0.3, evaluator: Engine | None = None,
                   metric: str = "val_balanced_accuracy"):
    """An epoch-level schedule.

    Args:
        name: ``multistep`` (×``gamma`` at each milestone), ``step`` (×``gamma`` every ``step_fraction`` of the run),
            ``plateau`` (×``gamma`` at the 3rd validation in a row without improvement of ``metric``: patience 2), ``cosine`` (to 1 % of
            the initial rate), ``constant``.
        milestones: fractions of ``epochs`` in (0, 1) (rounded to epochs ≥ 1).
    """
    epochs = max(int(epochs), 1)
    if name == "multistep":
        if any(not 0 < m < 1 for m in milestones):
            raise OptionError({"--milestones": f"fractions of the run in (0, 1), got {list(milestones)}"})
        steps = sorted({max(1, round(m * epochs)) for m in milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=steps, gamma=gamma)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, round(step_fraction * epochs)), gamma=gamma)
    if name == "plateau":
        return PlateauOnValidation(optimizer, evaluator, metric, factor=gamma)
    if name == "cosine":
        base = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=base * 0.01)
    if name == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise OptionError({"--lr_schedule": f"unknown schedule {name!r}; choose one of {', '.join(LR_SCHEDULES)}"})
