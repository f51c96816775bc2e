"""End to end through ``python -m monai.bundle run`` (one subprocess per config; the other cases in-process through
:func:`mednet.app.bundles.run_bundle`, the same configs and checks): the dermoscopy bundle on a tiny synthetic set.

One 2-epoch training run (MixUp, shared by every test of this module) → evaluation with the full report on the
test split → inference on a folder and on one file → refitting its calibration; plus the one-line errors a user
meets first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import monai
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from _bundle_cli import bundle_error_line, run_bundle_cli
from _dermoscopy_fixtures import synthetic_split
from mednet.app.bundles import CONFIG_BASES, run_bundle

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
pytestmark = pytest.mark.slow
ARCH = ["--model", "receptive_field_cnn", "--image_size", "32"]


ARCH_SETTINGS = {"model": "receptive_field_cnn", "image_size": 32}


def bundle(config: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_bundle_cli("dermoscopy_classification", config, *args, check=check)


def refusal(config: str, **overrides: object) -> str:
    """The one error line of ``config`` run with ``overrides``, in-process (one subprocess per config is enough to
    test the command line itself; see :func:`bundle_error_line`)."""
    return bundle_error_line("dermoscopy_classification", config, **overrides)


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory) -> Path:
    return synthetic_split(tmp_path_factory.mktemp("dermoscopy"), n_images=240, size=32, seed=3)


@pytest.fixture(scope="module")
def trained(split_dir: Path, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    bundle("train", "--dataset_dir", str(split_dir), "--runs_root", str(runs), *ARCH, "--epochs", "2",
           "--augmentation", "mixup", "--augmentation_figure", "True", "--batch_size", "32")
    (run,) = runs.iterdir()
    return run


def test_training_run_records_what_evaluation_repeats(trained: Path, split_dir: Path) -> None:
    for name in ("model.pt", "model_final.pt", "settings.json", "metrics.csv", "convergence.png", "augmentations.png",
                 "finished.json"):
        assert (trained / name).is_file(), name
    settings = json.loads((trained / "settings.json").read_text(encoding="utf-8"))
    assert settings["model"] == "receptive_field_cnn" and settings["image_size"] == 32
    assert settings["augmentation"] == "mixup" and settings["data"] == "synthetic"
    assert len(settings["normalization"]["mean"]) == 3 and all(0 < s < 1 for s in settings["normalization"]["std"])
    assert set(settings["class_counts"]) == set(CLASSES) and min(settings["class_counts"].values()) > 0
    from mednet.data.splits import split_fingerprint  # what evaluation's held-out check compares against

    assert settings["dataset_dir"] == str(split_dir.resolve()) and settings["split_fingerprint"] == split_fingerprint(
        split_dir)
    epochs = pd.read_csv(trained / "metrics.csv")
    assert list(epochs["epoch"]) == [1, 2]
    for column in ("val_balanced_accuracy", "val_ece", "val_oe", "val_recall_mel", "train_loss"):
        assert epochs[column].notna().all(), column
    finished = json.loads((trained / "finished.json").read_text(encoding="utf-8"))
    assert finished["key_metric"] == "val_balanced_accuracy"  # model selection on validation, never test
    assert finished["best_metric"] == pytest.approx(epochs["val_balanced_accuracy"].max())
    # training ends by fitting the temperature and the referral threshold on the validation split
    calibration = json.loads((trained / "calibration.json").read_text(encoding="utf-8"))
    assert calibration["temperature"] > 0 and calibration["fitted_on"]["split"] == "validation"
    # the referral threshold's settings, recorded in both files (gated retraining carries them)
    assert settings["referral_confidence"] == calibration["referral"]["confidence_level"] == 0.9
    assert {"accuracy", "accuracy_lower_bound", "target_accuracy", "min_accepted"} <= set(calibration["referral"])
    assert calibration["validation"]["after"]["nll"] <= calibration["validation"]["before"]["nll"] + 1e-9
    for name in ("calibration_reliability.png", "calibration_risk_coverage.csv", "checkpoint_last.pt"):
        assert (trained / name).is_file(), name
    # finished.json is the run's last file: a run stopped while calibrating is never taken for a finished one
    finished_at = (trained / "finished.json").stat().st_mtime_ns
    assert all(f.stat().st_mtime_ns <= finished_at for f in trained.iterdir() if f.is_file())


def test_evaluate_writes_the_full_report(trained: Path, split_dir: Path) -> None:
    proc = bundle("evaluate", "--dataset_dir", str(split_dir), *ARCH, "--ckpt_path", str(trained / "model.pt"))
    (eval_dir,) = [p for p in trained.iterdir() if p.name.startswith("eval-test-")]
    assert str(eval_dir) in proc.stdout
    for name in ("metrics.json", "metrics.csv", "classification_report.md", "classification_report.csv",
                 "confusion.csv", "confusion.png", "reliability.png", "predictions.csv", "provenance.json",
                 "risk_coverage.csv", "risk_coverage.png"):
        assert (eval_dir / name).is_file(), name
    report = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    assert report["info"]["split"] == "test" and report["info"]["data"] == "synthetic"
    # the run's calibration is applied without being asked, and the scores before it are reported too
    calibration = json.loads((trained / "calibration.json").read_text(encoding="utf-8"))
    assert report["info"]["temperature"] == pytest.approx(calibration["temperature"])
    assert report["info"]["referral_threshold"] == pytest.approx(calibration["referral"]["threshold"])
    assert {"ece", "oe", "nll", "brier", "aurc"} <= set(report["uncalibrated"])
    assert 0 <= report["metrics"]["aurc"] <= 1
    predictions = pd.read_csv(eval_dir / "predictions.csv")
    test = pd.read_csv(split_dir / "split.csv").query("split == 'test'")
    assert sorted(predictions["image_id"]) == sorted(test["image_id"])
    np.testing.assert_allclose(predictions[CLASSES].sum(axis=1), 1.0, atol=1e-4)
    # the reported balanced accuracy is the one of the written predictions (independent implementation)
    assert report["metrics"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(predictions["label"], predictions["prediction"]))
    table = pd.read_csv(eval_dir / "classification_report.csv")
    assert list(table["class"])[:7] == CLASSES and {"precision", "recall", "specificity", "f1", "support"} <= set(table)


def test_inference_folder_and_file(trained: Path, split_dir: Path, tmp_path: Path) -> None:
    images = split_dir.parent / "synthetic" / "images"
    out = tmp_path / "pred"
    bundle("inference", "--input", str(images), "--output_dir", str(out), *ARCH, "--ckpt_path", str(trained / "model.pt"))
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == ["image_id", "path", *CLASSES, "prediction", "confidence", "refer", "decision"]
    threshold = json.loads((trained / "calibration.json").read_text(encoding="utf-8"))["referral"]["threshold"]
    clear = (table["confidence"] - threshold).abs() > 1e-5  # the CSV rounds to 6 digits
    assert (table["refer"] == (table["confidence"] < threshold))[clear].all()
    assert set(table.loc[table["refer"], "decision"]) <= {"refer"}
    assert len(table) == len(list(images.glob("*.jpg")))
    assert set(table["prediction"]) <= set(CLASSES)
    np.testing.assert_allclose(table[CLASSES].sum(axis=1), 1.0, atol=1e-4)
    before = (out / "predictions.csv").read_bytes()
    line = refusal("inference", input=str(images), output_dir=str(out), **ARCH_SETTINGS,
                   ckpt_path=str(trained / "model.pt"))
    assert "predictions.csv: output already exists" in line
    assert (out / "predictions.csv").read_bytes() == before  # earlier output kept
    one = next(images.glob("*.jpg"))
    run_bundle("dermoscopy_classification", "inference", input=str(one), output_dir=str(tmp_path / "one"),
               **ARCH_SETTINGS, ckpt_path=str(trained / "model.pt"))
    single = pd.read_csv(tmp_path / "one" / "predictions.csv")
    assert list(single["image_id"]) == [one.stem]
    # the same image gets the same probabilities alone and in a folder (evaluation transforms are deterministic)
    np.testing.assert_allclose(single[CLASSES].to_numpy()[0],
                               table.set_index("image_id").loc[one.stem, CLASSES].to_numpy(dtype=float), atol=1e-5)


def test_inference_refers_exactly_the_cases_below_the_runs_threshold(trained: Path, split_dir: Path,
                                                                     tmp_path: Path) -> None:
    """A 2-epoch run does not reach the 95 % target on validation: its threshold is above 1 and every case is
    referred (the check above then tests little; its temperature is near the fit's bound, every confidence ≈ 1/7).
    On a copy of the run whose calibration.json holds T = 1 and a threshold between the middle confidences of the
    test split, inference refers the cases below it and decides the others."""
    run = Path(shutil.copytree(trained, tmp_path / trained.name, ignore=shutil.ignore_patterns("eval-*")))
    calibration = json.loads((run / "calibration.json").read_text(encoding="utf-8"))

    def calibrate(**changes: float) -> None:
        calibration["temperature"] = 1.0
        calibration["referral"].update(changes)
        (run / "calibration.json").write_text(json.dumps(calibration), encoding="utf-8")

    calibrate()
    common = {"input": str(split_dir), "split": "test", **ARCH_SETTINGS, "ckpt_path": str(run / "model.pt")}
    run_bundle("dermoscopy_classification", "inference", output_dir=str(tmp_path / "first"), **common)
    first = pd.read_csv(tmp_path / "first" / "predictions.csv")
    # the widest gap between neighbouring confidences of the middle half: the 6-digit CSV values cannot cross it
    levels = np.unique(first["confidence"])
    assert len(levels) >= 2, levels
    middle = np.arange(len(levels) // 4, max(3 * len(levels) // 4, len(levels) // 4 + 1))
    low = middle[np.argmax(levels[middle + 1] - levels[middle])]
    assert levels[low + 1] - levels[low] > 2e-6, levels
    threshold = float(levels[low] + levels[low + 1]) / 2
    calibrate(threshold=threshold)

    run_bundle("dermoscopy_classification", "inference", output_dir=str(tmp_path / "second"), **common)
    table = pd.read_csv(tmp_path / "second" / "predictions.csv")
    assert len(table) == (pd.read_csv(split_dir / "split.csv")["split"] == "test").sum()
    np.testing.assert_allclose(table["confidence"], first["confidence"])  # the same model and temperature
    assert set(table["refer"]) == {True, False}
    assert (table["refer"] == (table["confidence"] < threshold)).all()
    kept = ~table["refer"]
    assert (table.loc[kept, "decision"] == table.loc[kept, "prediction"]).all()
    assert (table.loc[table["refer"], "decision"] == "refer").all()


def test_bad_inputs_fail_with_one_line(trained: Path, split_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    line = refusal("inference", input=str(folder), output_dir=str(tmp_path / "p"), **ARCH_SETTINGS,
                   ckpt_path=str(trained / "model.pt"))
    assert line.startswith("mednet error: ") and "broken.jpg" in line
    assert not (tmp_path / "p" / "predictions.csv").exists()
    # evaluate.json is an override of inference.json: alone (as `python -m monai.bundle run` is given it) it says
    # what to run; the check reads the command line, so the command line is what this process shows it
    evaluate = REPO / "bundles" / "dermoscopy_classification" / "configs" / "evaluate.json"
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", [str(Path(monai.__file__).parent / "bundle" / "__main__.py"), "run",
                                    "--config_file", str(evaluate)])
        patch.delitem(CONFIG_BASES, "evaluate")  # run_bundle would merge inference.json in
        assert "evaluate.json is an override of inference.json" in refusal("evaluate")
    # a checkpoint used with another architecture: refused, naming the setting and the override
    line = refusal("inference", input=str(folder), output_dir=str(tmp_path / "q"), model="resnet18", image_size=32,
                   ckpt_path=str(trained / "model.pt"))
    assert "model='receptive_field_cnn' (this run: 'resnet18')" in line
    # training on a split that is not there: one line, and no empty run folder left behind (as the brain bundle)
    line = refusal("train", dataset_dir=str(tmp_path / "nowhere"), runs_root=str(tmp_path / "runs"), **ARCH_SETTINGS)
    assert line.startswith("mednet error: ") and "split table not found" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_calibrate_refits_the_runs_calibration_on_validation(trained: Path, split_dir: Path, tmp_path: Path) -> None:
    """calibrate.json (an override of inference.json) on a copy of the shared run: it refuses to replace the
    run's calibration.json without --overwrite and refuses the test split; with --overwrite it refits it."""
    run = Path(shutil.copytree(trained, tmp_path / trained.name, ignore=shutil.ignore_patterns("eval-*")))
    target = run / "calibration.json"
    from_training = target.read_bytes()
    common = {"dataset_dir": str(split_dir), **ARCH_SETTINGS, "ckpt_path": str(run / "model.pt")}
    line = refusal("calibrate", **common)
    assert f"{target}: output already exists" in line and "--overwrite" in line, line
    line = refusal("calibrate", **common, split="test", overwrite=True)
    assert line.startswith("mednet error: --split: calibration is fitted on the validation split only, not 'test'"), \
        line
    assert target.read_bytes() == from_training  # both refused before anything was written

    proc = bundle("calibrate", "--dataset_dir", str(split_dir), *ARCH, "--ckpt_path", str(run / "model.pt"),
                  "--overwrite", "True", "--target_accuracy", "0.9", "--referral_min_accepted", "10",
                  "--referral_confidence", "0.8")
    assert str(run) in proc.stdout
    assert target.read_bytes() != from_training
    calibration = json.loads(target.read_text(encoding="utf-8"))
    validation = pd.read_csv(split_dir / "split.csv").query("split == 'validation'")
    assert calibration["fitted_on"]["split"] == "validation" and calibration["fitted_on"]["n_images"] == len(validation)
    assert Path(calibration["fitted_on"]["checkpoint"]).resolve() == (run / "model.pt").resolve()
    assert calibration["referral"]["min_accepted"] == 10 and calibration["referral"]["target_accuracy"] == 0.9
    assert calibration["referral"]["confidence_level"] == 0.8
    # the same model on the same validation images: the temperature training fitted
    assert calibration["temperature"] == pytest.approx(json.loads(from_training)["temperature"], rel=1e-3)
    assert calibration["validation"]["after"]["nll"] <= calibration["validation"]["before"]["nll"] + 1e-9


@pytest.fixture(scope="module")
def student(trained: Path, split_dir: Path, tmp_path_factory) -> Path:
    """A 1-epoch student distilled from the shared run, through ``python -m monai.bundle run``."""
    runs = tmp_path_factory.mktemp("students")
    bundle("distill", "--dataset_dir", str(split_dir), "--runs_root", str(runs), *ARCH, "--epochs", "1",
           "--batch_size", "32", "--teachers", f"['{trained}']", "--kd_temperature", "50")
    (run,) = runs.iterdir()
    return run


def test_distillation_run_records_its_teachers_and_is_calibrated(student: Path, trained: Path) -> None:
    assert student.name.startswith("distill-receptive_field_cnn-none-kd-T50")
    settings = json.loads((student / "settings.json").read_text(encoding="utf-8"))
    assert settings["distillation"]["teachers"] == [str(trained)]
    assert settings["distillation"]["kd_temperature"] == 50 and settings["distillation"]["kd_alpha"] == 0.8
    teacher = json.loads((trained / "settings.json").read_text(encoding="utf-8"))
    assert settings["normalization"] == teacher["normalization"]  # teachers and student see the same tensor
    for name in ("model.pt", "finished.json", "calibration.json"):
        assert (student / name).is_file(), name


def test_distillation_refuses_bad_teachers_before_training(split_dir: Path, tmp_path: Path) -> None:
    assert "--teachers" in refusal("distill", dataset_dir=str(split_dir), runs_root=str(tmp_path), **ARCH_SETTINGS,
                                   epochs=1)
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_ensemble_with_searched_weights(trained: Path, student: Path, split_dir: Path, tmp_path: Path) -> None:
    from mednet.networks.ensemble import EnsembleClassifier
    from mednet.networks.trained import load_trained_classifier

    bundle("ensemble", "--dataset_dir", str(split_dir), "--runs_root", str(tmp_path), "--members",
           f"['{trained}','{student}']", "--weights", "search")
    (run,) = tmp_path.iterdir()
    settings = json.loads((run / "settings.json").read_text(encoding="utf-8"))
    assert settings["model"] == "ensemble" and settings["weight_choice"] == "searched"
    assert sum(settings["weights"]) == pytest.approx(1.0) and len(settings["weights"]) == 2
    assert settings["dataset_dir"] == str(split_dir.resolve()) and len(settings["split_fingerprint"]) == 64
    assert (run / "calibration.json").is_file() and (run / "finished.json").is_file()
    (eval_dir,) = [p for p in run.iterdir() if p.name.startswith("eval-test-")]
    report = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    assert report["info"]["model"] == "ensemble" and "uncalibrated" in report
    rebuilt = load_trained_classifier(run)  # an ensemble run is loaded like any run (web demo, study table)
    assert isinstance(rebuilt.network, EnsembleClassifier)
    line = refusal("ensemble", dataset_dir=str(split_dir), runs_root=str(tmp_path / "x"),
                   members=[str(trained), str(student)], weights="5:1:x")
    assert "--weights" in line and "'x' is not a number" in line


def test_calibration_json_belongs_to_model_pt(trained: Path, split_dir: Path, tmp_path: Path) -> None:
    """The run's calibration.json is model.pt's (it records its SHA-256): calibrate.json refuses model_final.pt
    (its fit would have replaced model.pt's, which the web demo then applied to other weights), and evaluation of
    model_final.pt runs uncalibrated instead of applying model.pt's temperature and referral threshold."""
    from mednet.runs import file_sha256

    run = Path(shutil.copytree(trained, tmp_path / trained.name, ignore=shutil.ignore_patterns("eval-*")))
    target = run / "calibration.json"
    from_training = target.read_bytes()
    calibration = json.loads(from_training)
    assert calibration["fitted_on"]["checkpoint_sha256"] == file_sha256(run / "model.pt")
    assert calibration["temperature"] != pytest.approx(1.0)
    final = run / "model_final.pt"
    line = refusal("calibrate", dataset_dir=str(split_dir), **ARCH_SETTINGS, ckpt_path=str(final), overwrite=True)
    assert line.startswith("mednet error: --ckpt_path: calibrate.json fits the run's model.pt only, not "
                           "model_final.pt"), line
    assert target.read_bytes() == from_training
    run_bundle("dermoscopy_classification", "evaluate", dataset_dir=str(split_dir), **ARCH_SETTINGS,
               ckpt_path=str(final))
    (eval_dir,) = [p for p in run.iterdir() if p.name.startswith("eval-test-")]
    report = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    assert report["info"]["checkpoint"] == str(final.resolve())
    assert report["info"]["temperature"] == 1.0 and report["info"]["referral_threshold"] is None
    assert "refer" not in pd.read_csv(eval_dir / "predictions.csv").columns
