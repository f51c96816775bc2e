"""Model selection and checkpoint loading (:mod:`mednet.engines.checkpoints`) in the cases the end-to-end tests do not
reach: NaN validation metrics, ``mode="min"``, and checkpoints that are not a plain state dict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from mednet.engines.checkpoints import AtomicCheckpointSaver, load_weights
from mednet.errors import DataError
from mednet.runs import read_finished
from test_outputs import _engines  # a trainer whose evaluator reports values[epoch - 1] as val_dice

NAN = float("nan")


def _train(folder: Path, values: list[float], mode: str = "max", resume: bool = False
           ) -> tuple[AtomicCheckpointSaver, dict[int, float]]:
    """Train ``len(values)`` epochs of a Linear(2, 1) whose weights are the epoch number; returns the saver and the
    weight held by model.pt at the end of each epoch (None while there is none)."""
    net = torch.nn.Linear(2, 1)
    trainer, evaluator = _engines(values)

    @trainer.on(Events.EPOCH_STARTED)
    def _weights(engine: Engine) -> None:
        with torch.no_grad():
            net.weight.fill_(engine.state.epoch)

    saver = AtomicCheckpointSaver(folder, {"network": net}, evaluator=evaluator, key_metric_name="val_dice", mode=mode,
                                  resume_dict={"network": net} if resume else None)
    saver.attach(trainer)
    held: dict[int, float] = {}

    @trainer.on(Events.EPOCH_COMPLETED)
    def _snapshot(engine: Engine) -> None:  # after the saver's handlers: model.pt as this epoch left it
        model = folder / "model.pt"
        held[engine.state.epoch] = float(torch.load(model)["weight"][0, 0]) if model.is_file() else None

    trainer.run([0], max_epochs=len(values))
    return saver, held


@pytest.mark.parametrize("resume", [False, True], ids=["plain", "resumable"])
def test_a_nan_metric_never_replaces_a_real_one(tmp_path: Path, resume: bool) -> None:
    """The first validation always gives a model.pt, even a NaN one (a diverged first epoch still leaves a model);
    a real value replaces a NaN best, and a NaN never replaces a real best."""
    saver, held = _train(tmp_path, [NAN, 0.3, NAN, 0.2], resume=resume)
    assert held == {1: 1.0, 2: 2.0, 3: 2.0, 4: 2.0}
    assert (saver.best_epoch, saver.best_metric) == (2, pytest.approx(0.3))
    done = read_finished(tmp_path)
    assert done["best_epoch"] == 2 and done["best_metric"] == pytest.approx(0.3)


def test_mode_min_keeps_the_smallest_metric(tmp_path: Path) -> None:
    saver, held = _train(tmp_path / "min", [0.5, 0.3, 0.4, 0.6], mode="min")
    assert held == {1: 1.0, 2: 2.0, 3: 2.0, 4: 2.0} and saver.best_epoch == 2
    saver, held = _train(tmp_path / "max", [0.5, 0.3, 0.4, 0.6], mode="max")
    assert held == {1: 1.0, 2: 1.0, 3: 1.0, 4: 4.0} and saver.best_epoch == 4
    saver, held = _train(tmp_path / "min_nan", [NAN, 0.3, NAN, 0.2], mode="min")
    assert held[4] == 4.0 and (saver.best_epoch, saver.best_metric) == (4, pytest.approx(0.2))


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', got 'maximum'"):
        AtomicCheckpointSaver(tmp_path, {"network": torch.nn.Linear(2, 1)}, mode="maximum")


def test_load_weights_reads_the_network_of_a_resumable_checkpoint(tmp_path: Path) -> None:
    """checkpoint_last.pt given as --ckpt_path: {"network": state_dict, "trainer": ..., "rng": ...}."""
    _train(tmp_path, [0.5, 0.7], resume=True)
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert {"network", "trainer", "saver"} <= set(state)
    net = load_weights(torch.nn.Linear(2, 1), tmp_path / "checkpoint_last.pt")
    assert float(net.weight[0, 0].detach()) == 2.0  # the last epoch's weights
    torch.save({"network": torch.nn.Linear(2, 1).state_dict()}, tmp_path / "wrapped.pt")
    assert torch.equal(load_weights(torch.nn.Linear(2, 1), tmp_path / "wrapped.pt").bias,
                       torch.load(tmp_path / "wrapped.pt")["network"]["bias"])


@pytest.mark.parametrize("content", [
    [torch.zeros(1, 2), torch.zeros(1)],                 # a list of tensors
    {"weight": [1.0, 2.0], "bias": 0.0},                 # a dict of non-tensors
    {"network": {"weight": "w"}},                        # a wrapped dict of non-tensors
], ids=["list", "dict-of-non-tensors", "wrapped-non-tensors"])
def test_load_weights_refuses_what_is_not_a_state_dict(tmp_path: Path, content: object) -> None:
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    with pytest.raises(DataError, match=f"^{path}: not a network checkpoint \\(expected a state_dict of tensors\\)$"):
        load_weights(torch.nn.Linear(2, 1), path)
