"""Gated retraining repeats the old run's settings: what ``settings.json`` records, and the target accuracy its
referral threshold was calibrated for (``calibration.json``).

Training and evaluation are replaced by fakes, as in ``tests/test_retrain_serving.py``: what is checked is what the
retraining asks the bundle for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mednet.app.retrain as retrain_module
from mednet.app.retrain import retrain
from mednet.errors import DataError, OptionError

METRICS = {"balanced_accuracy": 0.5, "recall_mel": 0.5, "ece": 0.10}
#: the real steps, before the fixtures replace them
REAL_EVALUATE, REAL_GATE_METRICS = retrain_module._evaluate, retrain_module._gate_metrics
REAL_CHECK = retrain_module._check_train_options


def _fake_run(folder: Path, settings: dict | None = None, target_accuracy: float | None = None,
              min_accepted: int | None = None, confidence_level: float | None = None) -> Path:
    """What the retraining reads of a run: settings.json, model.pt and (optionally) calibration.json."""
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({"model": "receptive_field_cnn", "image_size": 32, "epochs": 1,
                                                      "dataset_dir": "split", **(settings or {})}), encoding="utf-8")
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "finished.json").write_text("{}", encoding="utf-8")
    if target_accuracy is not None:
        floor = {} if min_accepted is None else {"min_accepted": min_accepted}
        if confidence_level is not None:
            floor["confidence_level"] = confidence_level
        (folder / "calibration.json").write_text(json.dumps({"temperature": 1.3, "referral": {
            "threshold": 0.8, "target_accuracy": target_accuracy, "achievable": True, **floor}}), encoding="utf-8")
    return folder


@pytest.fixture
def fake_bundle(tmp_path: Path, monkeypatch) -> dict:
    """A split folder and a retraining whose bundle runs are recorded (``calls``: ``(config, overrides)``) and whose
    training writes a finished candidate without calibration.json (which a resumed retraining completes)."""
    split = tmp_path / "split"
    split.mkdir()
    (split / "split.csv").write_text("image_id\n", encoding="utf-8")
    calls: list[tuple[str, dict]] = []

    def run_bundle(bundle: str, config: str, **overrides) -> None:
        calls.append((config, overrides))
        if config == "train":
            _fake_run(Path(overrides["run_dir"]))

    def evaluate(who, run, settings, split_name, dataset, folder: Path) -> Path:
        out = folder / f"{who}-{split_name}"
        out.mkdir(parents=True, exist_ok=True)
        return out

    monkeypatch.setattr(retrain_module, "run_bundle", run_bundle)
    monkeypatch.setattr(retrain_module, "_check_held_out", lambda run, settings, dataset: dataset)
    monkeypatch.setattr(retrain_module, "_check_train_options", lambda overrides: None)
    monkeypatch.setattr(retrain_module, "_evaluate", evaluate)
    monkeypatch.setattr(retrain_module, "_gate_metrics", lambda path: dict(METRICS))
    return {"split": split, "calls": calls}


def test_the_candidate_is_trained_and_calibrated_for_the_old_runs_target_accuracy(fake_bundle: dict,
                                                                                  tmp_path: Path) -> None:
    """A run whose referral threshold was fitted for 99 % accuracy: the candidate's must be too, not for the
    bundle's default 95 % — also when the candidate's calibration is completed after training."""
    old = _fake_run(tmp_path / "R0", settings={"val_interval": 3, "weights_path": "/models/imagenet.pt"},
                    target_accuracy=0.99, min_accepted=50, confidence_level=0.95)
    out = tmp_path / "retrain"
    retrain(str(old), str(fake_bundle["split"]), str(out))
    retrain(str(old), str(fake_bundle["split"]), str(out))  # resumed: the candidate's calibration.json is completed
    (train_config, train), (calibrate_config, calibrate) = fake_bundle["calls"]
    assert (train_config, calibrate_config) == ("train", "calibrate")
    assert train["target_accuracy"] == 0.99 and calibrate["target_accuracy"] == 0.99
    assert train["referral_min_accepted"] == 50 and calibrate["referral_min_accepted"] == 50
    assert train["referral_confidence"] == 0.95 and calibrate["referral_confidence"] == 0.95
    # carried when settings.json records them (a fine-tuned run is not retrained from scratch)
    assert train["val_interval"] == 3 and train["weights_path"] == "/models/imagenet.pt"
    record = json.loads((out / "retrain.json").read_text(encoding="utf-8"))
    assert record["train"]["target_accuracy"] == 0.99
    assert json.loads((out / "comparison.json").read_text(encoding="utf-8"))["train_settings"]["target_accuracy"] == 0.99

    # an option given on the command line still overrides the run's
    fake_bundle["calls"].clear()
    retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain2"), target_accuracy=0.9)
    assert [c[1]["target_accuracy"] for c in fake_bundle["calls"]] == [0.9]


def test_a_run_without_calibration_keeps_the_bundle_default_and_a_bad_one_is_refused(fake_bundle: dict,
                                                                                     tmp_path: Path) -> None:
    old = _fake_run(tmp_path / "R0")  # trained before calibration.json existed
    retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain"))
    assert all("target_accuracy" not in overrides for _, overrides in fake_bundle["calls"])

    bad = _fake_run(tmp_path / "R1", target_accuracy=1.5)
    fake_bundle["calls"].clear()
    with pytest.raises(DataError, match=r"R1/calibration\.json: referral\.target_accuracy 1\.5 is not a number"):
        retrain(str(bad), str(fake_bundle["split"]), str(tmp_path / "retrain_bad"))
    assert fake_bundle["calls"] == []  # refused before any training
    bad = _fake_run(tmp_path / "R2", target_accuracy=0.9, confidence_level=1.0)
    with pytest.raises(DataError, match=r"R2/calibration\.json: referral\.confidence_level 1\.0 is not a number in "
                                        r"\[0\.5, 1\)"):
        retrain(str(bad), str(fake_bundle["split"]), str(tmp_path / "retrain_bad2"))
    assert fake_bundle["calls"] == []


def test_a_run_calibrated_before_the_confidence_level_gets_the_bundle_default(fake_bundle: dict,
                                                                              tmp_path: Path) -> None:
    """A calibration.json from before 0.3.4 records no confidence_level: none is carried (the bundle's default 0.9
    applies, not the optimistic point estimate the old run used); one recorded in settings.json is carried."""
    old = _fake_run(tmp_path / "R0", target_accuracy=0.95, min_accepted=20)
    retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain"))
    assert all("referral_confidence" not in overrides for _, overrides in fake_bundle["calls"])
    fake_bundle["calls"].clear()
    old = _fake_run(tmp_path / "R1", settings={"referral_confidence": 0.8}, target_accuracy=0.95)
    retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain1"))
    assert [c[1]["referral_confidence"] for c in fake_bundle["calls"]] == [0.8]


def test_settings_the_old_run_ignored_are_not_carried(fake_bundle: dict, tmp_path: Path, monkeypatch) -> None:
    """A run recorded ``focal_gamma`` and ``momentum`` although its loss (ce) and optimiser (adam) ignore them:
    train.json would refuse them now (``only_with`` rules), so the retraining drops them — unless asked for."""
    monkeypatch.setattr(retrain_module, "_check_train_options", REAL_CHECK)  # the real train.json check
    old = _fake_run(tmp_path / "R0", settings={"loss": "ce", "optimizer": "adam", "focal_gamma": 3.0,
                                               "momentum": 0.5, "drw_start": 0.8, "weight_decay": 1e-4})
    retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain"))
    train = fake_bundle["calls"][0][1]
    assert not {"focal_gamma", "momentum", "drw_start"} & set(train)
    assert (train["loss"], train["optimizer"], train["weight_decay"]) == ("ce", "adam", 1e-4)

    fake_bundle["calls"].clear()  # a loss given on the command line makes the recorded focal_gamma apply again
    retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain2"), loss="focal")
    assert fake_bundle["calls"][0][1]["focal_gamma"] == 3.0
    # a misspelt flag of retrain itself (not of train.json) is named as such
    with pytest.raises(OptionError, match=r"--tolerence: unknown option of retrain and of train\.json \(did you mean "
                                          r"--tolerance, retrain's own option\?\)"):
        retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain3"), tolerence=0.1)
    with pytest.raises(OptionError, match=r"--learning_rat: unknown option for train\.json \(did you mean "
                                          r"--learning_rate\?\)"):
        retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain4"), learning_rat=0.1)


def test_an_evaluation_is_reused_only_for_the_same_model(fake_bundle: dict, tmp_path: Path, monkeypatch) -> None:
    """DIR/candidate deleted and the command run again: the new candidate must be evaluated, not gated on the
    metrics of the candidate it replaces; the old run's evaluations (same model.pt) are reused, none is deleted."""
    from mednet.runs import file_sha256

    weights = {"candidate": b"first candidate"}
    calls = fake_bundle["calls"]

    def run_bundle(bundle: str, config: str, **overrides) -> None:
        """Training writes ``weights["candidate"]``; evaluation scores a model by its bytes, with the
        provenance.json evaluate.json writes."""
        calls.append((config, overrides))
        if config == "train":
            (_fake_run(Path(overrides["run_dir"])) / "model.pt").write_bytes(weights["candidate"])
        elif config == "evaluate":
            out, model = Path(overrides["output_dir"]), Path(overrides["ckpt_path"])
            (out / "provenance.json").write_text(json.dumps({
                "split": overrides["split"], "dataset_dir": overrides["dataset_dir"],
                "checkpoint": {"path": str(model), "sha256": file_sha256(model)}}), encoding="utf-8")
            score = 0.9 if model.read_bytes() == b"second candidate" else 0.5
            (out / "metrics.json").write_text(json.dumps({"metrics": {**METRICS, "balanced_accuracy": score}}),
                                              encoding="utf-8")

    monkeypatch.setattr(retrain_module, "run_bundle", run_bundle)
    monkeypatch.setattr(retrain_module, "_evaluate", REAL_EVALUATE)
    monkeypatch.setattr(retrain_module, "_gate_metrics", REAL_GATE_METRICS)
    old, out = _fake_run(tmp_path / "R0"), tmp_path / "retrain"

    def evaluated() -> list[str]:
        return [Path(o["ckpt_path"]).parent.name for c, o in calls if c == "evaluate"]

    first = json.loads(Path(retrain(str(old), str(fake_bundle["split"]), str(out))["comparison"]).read_text())
    assert evaluated() == ["R0", "R0", "candidate", "candidate"]
    assert first["metrics"]["candidate"]["test"]["balanced_accuracy"] == 0.5

    calls.clear()  # resumed as it is: nothing evaluated again
    assert json.loads(Path(retrain(str(old), str(fake_bundle["split"]), str(out))["comparison"]).read_text())[
        "evaluations"] == first["evaluations"]
    assert evaluated() == []

    import shutil

    shutil.rmtree(out / "candidate")
    weights["candidate"] = b"second candidate"
    calls.clear()
    again = json.loads(Path(retrain(str(old), str(fake_bundle["split"]), str(out))["comparison"]).read_text())
    assert evaluated() == ["candidate", "candidate"]  # the old run's are reused
    assert again["evaluations"]["old"] == first["evaluations"]["old"]
    for split in ("validation", "test"):
        assert again["evaluations"]["candidate"][split] != first["evaluations"]["candidate"][split]
        assert Path(first["evaluations"]["candidate"][split], "metrics.json").is_file()  # never deleted
        assert again["metrics"]["candidate"][split]["balanced_accuracy"] == 0.9


def test_the_old_runs_nested_overrides_are_repeated(fake_bundle: dict, tmp_path: Path, monkeypatch) -> None:
    """A run trained with ``--train#trainer#epoch_length 2`` (recorded under settings.json's ``overrides``): the
    candidate is trained the same way, or the gate would compare two recipes; the command line still wins."""
    monkeypatch.setattr(retrain_module, "_check_train_options", REAL_CHECK)  # the real train.json check
    old = _fake_run(tmp_path / "R0", settings={"overrides": {"train#trainer#epoch_length": 2}})
    retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain"))
    assert fake_bundle["calls"][0][1]["train#trainer#epoch_length"] == 2
    fake_bundle["calls"].clear()
    retrain(str(old), str(fake_bundle["split"]), str(tmp_path / "retrain2"), **{"train#trainer#epoch_length": 5})
    assert fake_bundle["calls"][0][1]["train#trainer#epoch_length"] == 5
