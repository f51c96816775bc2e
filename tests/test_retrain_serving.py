"""Gated retraining and the serving file: a promotion replaces only the run the candidate was compared with.

Training and evaluation are replaced by fakes (the end-to-end run with real training is
``tests/test_feedback.py::test_gated_retraining_end_to_end``): here the candidate always beats the old run, and what
is checked is what happens to ``--serving`` — refused before training when it names another run than ``--run``,
left alone (and the refusal recorded) when another promotion replaced it while the candidate trained, and replaced
with ``"previous"`` = the run it named otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mednet.app.retrain as retrain_module
from mednet.app.retrain import resolve_serving, retrain
from mednet.errors import DataError

OLD_METRICS = {"balanced_accuracy": 0.5, "recall_mel": 0.5, "ece": 0.10}
NEW_METRICS = {"balanced_accuracy": 0.6, "recall_mel": 0.6, "ece": 0.05}  # better on every criterion


def _fake_run(folder: Path) -> Path:
    """What the retraining reads of a run: settings.json and a model.pt."""
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({"model": "receptive_field_cnn", "image_size": 32,
                                                      "epochs": 1, "dataset_dir": "split"}), encoding="utf-8")
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "finished.json").write_text("{}", encoding="utf-8")
    return folder


def _write_serving(path: Path, run: Path) -> Path:
    path.write_text(json.dumps({"run": str(run)}), encoding="utf-8")
    return path


@pytest.fixture
def fake_training(tmp_path: Path, monkeypatch) -> dict:
    """Runs R0 and R1, a split folder, and a retraining whose training and evaluation are fakes: ``trained`` lists
    the candidates "trained"; ``during_training`` (a callable) runs while a candidate trains."""
    split = tmp_path / "split"
    split.mkdir()
    (split / "split.csv").write_text("image_id\n", encoding="utf-8")
    state = {"r0": _fake_run(tmp_path / "R0"), "r1": _fake_run(tmp_path / "R1"), "split": split, "trained": [],
             "during_training": None}

    def train(candidate: Path, dataset: Path, overrides) -> None:
        state["trained"].append(candidate)
        if state["during_training"] is not None:
            state["during_training"]()
        _fake_run(candidate)

    def evaluate(who, run, settings, split_name, dataset, folder: Path) -> Path:
        out = folder / f"{who}-{split_name}"
        out.mkdir(parents=True, exist_ok=True)
        return out

    monkeypatch.setattr(retrain_module, "_check_held_out", lambda run, settings, dataset: dataset)
    monkeypatch.setattr(retrain_module, "_check_train_options", lambda overrides: None)
    monkeypatch.setattr(retrain_module, "_train", train)
    monkeypatch.setattr(retrain_module, "_evaluate", evaluate)
    monkeypatch.setattr(retrain_module, "_gate_metrics",
                        lambda path: dict(NEW_METRICS if path.name.startswith("candidate") else OLD_METRICS))
    return state


def test_a_serving_file_naming_another_run_is_refused_before_training(fake_training: dict, tmp_path: Path) -> None:
    """serving.json serves R1; a retraining compared with R0 must not replace it (R1 was never compared)."""
    r0, r1 = fake_training["r0"], fake_training["r1"]
    serving = _write_serving(tmp_path / "serving.json", r1)
    before = serving.read_bytes()
    out = tmp_path / "retrain"
    with pytest.raises(DataError, match=rf"serving\.json: names run {r1.resolve()}, not --run {r0.resolve()}"):
        retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    assert fake_training["trained"] == [] and not out.exists()
    assert serving.read_bytes() == before

    # the same file named by a relative path, and --run given as the serving file itself: accepted
    _write_serving(serving, Path("R0"))
    result = retrain(str(serving), str(fake_training["split"]), str(out), serving=str(serving))
    record = json.loads(serving.read_text(encoding="utf-8"))
    assert result["promote"] and result["serving"] == str(serving.resolve()) and result["serving_refused"] is None
    assert Path(record["run"]) == (out / "candidate").resolve() and record["previous"] == str(r0.resolve())

    # run again after its promotion: the file now serves the candidate, not R0 — said, not promoted twice
    with pytest.raises(DataError, match="already names this retraining's candidate"):
        retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))


@pytest.mark.parametrize("bad", ["model.pt", "folder"])
def test_serving_must_be_a_serving_file_not_a_model_or_a_folder(fake_training: dict, bad: str) -> None:
    """``--serving R0/model.pt`` resolves to R0 itself: a promotion would have written JSON over the weights."""
    r0 = fake_training["r0"]
    serving = r0 / "model.pt" if bad == "model.pt" else r0
    with pytest.raises(DataError, match="is not a serving file"):
        retrain(str(r0), str(fake_training["split"]), str(r0.parent / "out"), serving=str(serving))
    assert (r0 / "model.pt").read_bytes() == b"weights" and fake_training["trained"] == []


def test_a_promotion_during_training_is_not_overwritten(fake_training: dict, tmp_path: Path) -> None:
    """Two retrainings from one serving file: the one that promotes first wins; the second, whose candidate was
    compared with a run no longer served, leaves the file alone and records why."""
    r0, r1 = fake_training["r0"], fake_training["r1"]
    serving = _write_serving(tmp_path / "serving.json", r0)
    # another retraining promotes R1 into the serving file while this candidate trains
    fake_training["during_training"] = lambda: _write_serving(serving, r1)
    out = tmp_path / "retrain"
    result = retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    assert result["promote"] and result["serving"] is None
    assert resolve_serving(serving).resolve() == r1.resolve()  # untouched
    assert str(r1.resolve()) in result["serving_refused"] and "another promotion came first" in result["serving_refused"]
    comparison = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert comparison["promote"] is True and comparison["serving"] is None
    assert comparison["serving_refused"] == result["serving_refused"]
    markdown = (out / "comparison.md").read_text(encoding="utf-8")
    assert "(serving file not switched)" in markdown and f"`{serving.resolve()}` NOT switched" in markdown
    assert str(r1.resolve()) in markdown


def test_a_promotion_records_the_run_it_replaces_and_creates_a_missing_file(fake_training: dict,
                                                                            tmp_path: Path) -> None:
    r0 = fake_training["r0"]
    serving = _write_serving(tmp_path / "serving.json", r0)
    out = tmp_path / "retrain"
    result = retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    record = json.loads(serving.read_text(encoding="utf-8"))
    assert result["serving"] == str(serving.resolve()) and result["serving_refused"] is None
    assert record["previous"] == str(r0.resolve()) and Path(record["comparison"]) == (out / "comparison.json")
    assert "Serving file updated" in (out / "comparison.md").read_text(encoding="utf-8")

    fresh = tmp_path / "new" / "serving.json"  # no file yet: nothing served, so nothing to refuse
    fresh.parent.mkdir()
    result = retrain(str(r0), str(fake_training["split"]), str(tmp_path / "again"), serving=str(fresh))
    assert resolve_serving(fresh).resolve() == (tmp_path / "again" / "candidate").resolve()
