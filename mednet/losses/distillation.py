"""Knowledge distillation loss: a student classifier learns from the labels and from the softened predictions of
one or several trained teachers.

Definition (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014 Deep Learning
Workshop, arXiv:1503.02531), per batch::

    loss = γ · CE(s, y) + α · T² · KL(softmax(t / T) ‖ softmax(s / T))

with ``s`` the student's logits ``(B, K)``, ``t`` a teacher's logits ``(B, K)``, ``y`` the labels, ``T`` the
temperature. The KL divergence is summed over the classes and averaged over the samples
(``F.kl_div(log_softmax(s / T), softmax(t / T), reduction="batchmean")``); the ``T²`` factor keeps the soft
term's gradients at the scale of the hard term's when ``T`` changes (Hinton et al., section 2). The cross-entropy
is :class:`mednet.losses.classification.CrossEntropy` on the *untempered* logits, so integer labels ``(B,)`` and
the soft labels ``(B, K)`` of MixUp / CutMix both work. Defaults α = 0.8, γ = 0.2, T = 4.

With ``M`` teachers (an ensemble distilled into one network) three ways to combine them (``--kd_mode``):

- ``add_loss``: ``Σ_m α T² KL_m`` — one KD term per teacher, added, as in the study's code. The KD part weighs
  ``M`` times as much against the CE as with ``avg_loss`` (0.8 × 5 = 4.0 against 0.2 with five teachers).
- ``avg_loss``: ``(1/M) Σ_m α T² KL_m`` (this class's default: the KD weight does not grow with ``M``), or the
  weighted mean with ``teacher_weights``. The bundle's ``distill.json`` defaults to ``add_loss``, the study's mode,
  so that its ensemble-KD runs repeat the study.
- ``avg_softmax``: ``α T² KL(p̄ ‖ softmax(s / T))`` with ``p̄ = Σ_m w_m softmax(t_m / T)``, weights normalised to
  sum to 1 (uniform by default): the student matches the ensemble's averaged prediction, a distribution that
  sums to 1. (The study's code added the teachers' softmaxes without dividing by ``M``.)

With one teacher the three modes are the same vanilla KD.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mednet.errors import OptionError
from mednet.losses.classification import CrossEntropy

__all__ = ["KD_MODES", "DistillationLoss", "stack_teacher_logits"]

logger = logging.getLogger("mednet")

#: ``--kd_mode`` choices (see the module docstring)
KD_MODES = ("add_loss", "avg_loss", "avg_softmax")

TeacherWeights = Sequence[float] | torch.Tensor | str | None


def _parse_teacher_ratio(ratio: str, n_teachers: int) -> list[float]:
    """``"5:1:5:1:1"`` → one weight per teacher, by the project's shared ratio parser (which names
    ``--teacher_weights`` in its errors)."""
    from mednet.calibration.ensemble import parse_ratio

    return [float(w) for w in parse_ratio(ratio, n_teachers, "--teacher_weights")]


def stack_teacher_logits(teacher_logits: torch.Tensor | Sequence[torch.Tensor],
                         student_logits: torch.Tensor) -> torch.Tensor:
    """Teachers' logits as one ``(M, B, K)`` tensor, checked against the student's ``(B, K)``.

    Args:
        teacher_logits: ``(M, B, K)``, a list of ``M`` tensors ``(B, K)``, or one ``(B, K)`` (``M = 1``).
        student_logits: ``(B, K)``.

    Raises:
        ValueError: no teacher, or a teacher's logits are not of the student's shape (names both shapes).
    """
    if isinstance(teacher_logits, torch.Tensor):
        stacked = teacher_logits[None] if teacher_logits.ndim == 2 else teacher_logits
    else:
        teachers = list(teacher_logits)
        if not teachers:
            raise ValueError("no teacher logits given")
        for m, t in enumerate(teachers):
            if t.shape != student_logits.shape:
                raise ValueError(f"teacher {m + 1}'s logits have shape {tuple(t.shape)}, the student's "
                                 f"{tuple(student_logits.shape)}: teachers must score the same batch and classes")
        stacked = torch.stack(teachers)
    if student_logits.ndim != 2:
        raise ValueError(f"expected student logits of shape (B, K), got {tuple(student_logits.shape)}")
    if stacked.ndim != 3 or stacked.shape[1:] != student_logits.shape or stacked.shape[0] == 0:
        raise ValueError(f"teacher logits of shape {tuple(stacked.shape)} do not match the student's "
                         f"{tuple(student_logits.shape)}: expected (M, {', '.join(map(str, student_logits.shape))})")
    return stacked


class DistillationLoss(torch.nn.Module):
    """``γ · CE(s, y) + α · T² · KD(s, teachers)``, KD combined over teachers by ``mode`` (module docstring).

    Args:
        temperature: ``T > 0``; softens both the teachers' and the student's distributions in the KD term.
        alpha: ``α ≥ 0``, weight of the KD term.
        gamma: ``γ ≥ 0``, weight of the cross-entropy with the labels (α and γ are not both 0).
        mode: one of :data:`KD_MODES`.
        teacher_weights: one non-negative weight per teacher (not all 0), as numbers or a ratio string
            ``"5:1:5:1:1"``; ``None`` = uniform. Normalised to sum to 1 for ``avg_loss`` / ``avg_softmax`` and to
            ``M`` for ``add_loss`` (so ``add_loss`` stays ``M ×`` the weighted ``avg_loss``). Their count is
            checked when the number of teachers is known (first call, or the trainer's :meth:`weights_for`).
        label_smoothing: ε of the cross-entropy with the labels.

    Raises:
        OptionError: a value out of range, naming ``--kd_temperature``, ``--kd_alpha``, ``--kd_gamma``,
            ``--kd_mode`` or ``--teacher_weights``.

    Attributes:
        last_parts: ``{"ce": γ·CE, "kd": KD term}`` of the last batch as floats (their sum is the loss), for
            logging; read lazily, so computing the loss does not wait for the GPU.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.8, gamma: float = 0.2, mode: str = "avg_loss",
                 teacher_weights: TeacherWeights = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        problems: dict[str, str] = {}
        if not _finite(temperature) or temperature <= 0:
            problems["--kd_temperature"] = f"the temperature must be a finite number > 0, got {temperature!r}"
        for option, value in (("--kd_alpha", alpha), ("--kd_gamma", gamma)):
            if not _finite(value) or value < 0:
                problems[option] = f"must be a finite number >= 0, got {value!r}"
        if not problems and alpha == 0 and gamma == 0:
            problems["--kd_alpha"] = problems["--kd_gamma"] = (
                "--kd_alpha and --kd_gamma are both 0: the loss would be 0; give the KD term, the label term or both "
                "a positive weight")
        if mode not in KD_MODES:
            problems["--kd_mode"] = f"unknown mode {mode!r}; choose add_loss, avg_loss or avg_softmax"
        if not 0.0 <= label_smoothing < 1.0:
            problems["--label_smoothing"] = f"must be in [0, 1), got {label_smoothing!r}"
        raw_weights: str | list[float] | None = None
        if isinstance(teacher_weights, str):
            raw_weights = teacher_weights.strip()
        elif teacher_weights is not None:
            try:
                raw_weights = [float(w) for w in torch.as_tensor(teacher_weights, dtype=torch.float64).flatten()]
            except (TypeError, ValueError, RuntimeError):
                problems["--teacher_weights"] = f"expected one number per teacher, got {teacher_weights!r}"
            else:
                problem = _weights_problem(raw_weights)
                if problem:
                    problems["--teacher_weights"] = problem
        if problems:
            raise OptionError(problems)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.mode = mode
        self.teacher_weights = raw_weights
        self.ce = CrossEntropy(label_smoothing=label_smoothing)
        self._weights: dict[int, list[float]] = {}
        self._logged: set[int] = set()
        self._last: dict[str, torch.Tensor] = {}

    # --- weights ------------------------------------------------------------------------------------------------

    def weights_for(self, n_teachers: int) -> list[float]:
        """The weight of each of ``n_teachers`` teachers as used in the loss: sums to ``M`` for ``add_loss``,
        to 1 otherwise (``teacher_weights`` normalised; uniform when not given).

        Raises:
            OptionError: ``--teacher_weights`` has another count than ``n_teachers`` (or a bad ratio string).
        """
        if n_teachers < 1:
            raise OptionError({"--teachers": "no teachers: distillation needs at least one"})
        if n_teachers not in self._weights:
            if self.teacher_weights is None:
                raw = [1.0] * n_teachers
            elif isinstance(self.teacher_weights, str):
                raw = _parse_teacher_ratio(self.teacher_weights, n_teachers)
                problem = _weights_problem(raw)
                if problem:
                    raise OptionError({"--teacher_weights": problem})
            else:
                raw = list(self.teacher_weights)
            if len(raw) != n_teachers:
                raise OptionError({"--teacher_weights": f"{len(raw)} weights ({', '.join(f'{w:g}' for w in raw)}) "
                                                        f"for {n_teachers} teachers: give one weight per teacher"})
            total = math.fsum(raw)
            scale = n_teachers if self.mode == "add_loss" else 1.0
            self._weights[n_teachers] = [w * scale / total for w in raw]
        return list(self._weights[n_teachers])

    def effective_weights(self, n_teachers: int) -> dict:
        """How much each part weighs with ``n_teachers`` teachers (before the ``T²`` factor, which is common to
        every KD term).

        Returns:
            ``{"ce": γ, "kd_per_teacher": [α·w_m for each teacher], "kd_total": Σ_m α·w_m}``: ``kd_total`` is
            ``α·M`` for ``add_loss`` and ``α`` for ``avg_loss`` / ``avg_softmax`` (where a teacher's weight is its
            share of the averaged target ``p̄``).
        """
        per_teacher = [self.alpha * w for w in self.weights_for(n_teachers)]
        return {"ce": self.gamma, "kd_per_teacher": per_teacher, "kd_total": math.fsum(per_teacher)}

    def log_weights(self, n_teachers: int) -> None:
        """Log :meth:`effective_weights` once per number of teachers (logger ``"mednet"``), e.g. ``KD add_loss
        with 5 teachers: CE weight 0.2, KD weight 0.8 per teacher, 4.0 in total (T=4)``."""
        if n_teachers in self._logged:
            return
        weights = self.effective_weights(n_teachers)
        per = weights["kd_per_teacher"]
        if max(per) - min(per) <= 1e-12 * max(1.0, max(per)):
            per_text = f"{_num(per[0])} per teacher"
        else:
            per_text = f"{', '.join(_num(w) for w in per)} for the teachers in order"
        if self.mode == "avg_softmax":
            per_text = f"on the teachers' mean softmax ({per_text})"
        teachers = f"{n_teachers} teacher{'s' if n_teachers != 1 else ''}"
        logger.info("KD %s with %s: CE weight %s, KD weight %s, %s in total (T=%g)", self.mode, teachers,
                    _num(weights["ce"]), per_text, _num(weights["kd_total"]), self.temperature)
        self._logged.add(n_teachers)

    # --- the loss -----------------------------------------------------------------------------------------------

    def teacher_target(self, teacher_logits: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The teachers' averaged tempered prediction ``p̄ = Σ_m w_m softmax(t_m / T)`` ``(B, K)``, weights summing
        to 1 (rows sum to 1): the KD target of ``avg_softmax``, and the ensemble's soft target in any mode."""
        teachers = teacher_logits if isinstance(teacher_logits, torch.Tensor) else torch.stack(list(teacher_logits))
        if teachers.ndim == 2:
            teachers = teachers[None]
        return self._log_mean_target(teachers.detach().float()).exp()

    def _log_mean_target(self, teachers: torch.Tensor) -> torch.Tensor:
        """``log p̄`` ``(B, K)`` from teachers' logits ``(M, B, K)``, by log-sum-exp (no log of a rounded 0)."""
        n = teachers.shape[0]
        weights = torch.tensor(self.weights_for(n), dtype=teachers.dtype, device=teachers.device)
        if self.mode == "add_loss":
            weights = weights / n
        log_p = F.log_softmax(teachers / self.temperature, dim=-1)
        return torch.logsumexp(log_p + weights.log()[:, None, None], dim=0)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | Sequence[torch.Tensor],
                target: torch.Tensor) -> torch.Tensor:
        """Scalar loss.

        Args:
            student_logits: ``(B, K)``.
            teacher_logits: ``(M, B, K)`` or a list of ``M`` tensors ``(B, K)`` (``(B, K)`` alone: one teacher);
                not differentiated.
            target: class indices ``(B,)`` / ``(B, 1)`` or soft labels ``(B, K)``.

        Computed in float32 whatever the logits' dtype (AMP), as log-softmax differences of half-precision
        logits lose the small KL values.
        """
        teachers = stack_teacher_logits(teacher_logits, student_logits).detach().float()
        student = student_logits.float()
        n = teachers.shape[0]
        weights = torch.tensor(self.weights_for(n), dtype=student.dtype, device=student.device)
        self.log_weights(n)
        scale = self.alpha * self.temperature**2
        log_q = F.log_softmax(student / self.temperature, dim=-1)  # (B, K)
        if self.mode == "avg_softmax":
            kl = F.kl_div(log_q, self._log_mean_target(teachers), reduction="batchmean", log_target=True)
            kd = scale * kl
        else:
            log_p = F.log_softmax(teachers / self.temperature, dim=-1)  # (M, B, K)
            # KL_m summed over classes, averaged over samples: (M,)
            kl = F.kl_div(log_q.expand_as(log_p), log_p, reduction="none", log_target=True).sum(-1).mean(-1)
            kd = scale * (weights * kl).sum()
        ce = self.gamma * self.ce(student, target) if self.gamma else student.new_zeros(())
        self._last = {"ce": ce.detach(), "kd": kd.detach()}
        return ce + kd

    @property
    def last_parts(self) -> dict[str, float]:
        """``{"ce": γ·CE, "kd": KD term}`` of the last batch (floats; they sum to the loss)."""
        return {k: float(v) for k, v in self.last_part_tensors.items()}

    @property
    def last_part_tensors(self) -> dict[str, torch.Tensor]:
        """:attr:`last_parts` as detached 0-d tensors on the loss's device: reading them does not wait for the GPU
        (``float()`` would, every iteration)."""
        return dict(self._last)

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, temperature={self.temperature:g}, alpha={self.alpha:g}, gamma={self.gamma:g}, "
                f"teacher_weights={self.teacher_weights!r}")


def _num(x: float) -> str:
    """A weight for the log: ``0.8``, ``4.0``, ``0.1333``."""
    return str(round(x, 4))


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _weights_problem(weights: Sequence[float]) -> str | None:
    if not weights:
        return "no weights given: give one non-negative weight per teacher"
    if any(not math.isfinite(w) or w < 0 for w in weights):
        return f"weights must be finite and >= 0, got {', '.join(f'{w:g}' for w in weights)}"
    if math.fsum(weights) <= 0:
        return "the weights are all 0: at least one teacher needs a positive weight"
    return None
