"""The calibration study command end to end on a tiny synthetic set: killed mid-run, then resumed.

A real subprocess (``python -m mednet.app.calibration_study``) is killed while a teacher is training (after its
first epoch's ``checkpoint_last.pt``, before its fourth); the same command then skips the finished runs, continues the interrupted
one from its last epoch, and writes the table and the figure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from _bundle_cli import command_in_process
from _dermoscopy_fixtures import synthetic_split
from mednet.app.calibration_study import run_calibration_study

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _study(dataset: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mednet.app.calibration_study", "--dataset_dir", str(dataset), "--out", str(out),
            "--epochs", "4", "--student_epochs", "1", "--image_size", "32"]


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory) -> Path:
    return synthetic_split(tmp_path_factory.mktemp("study_data"), n_images=210, size=32, seed=5)


def test_study_resumes_after_a_kill_and_writes_its_table(tiny_split: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    log = open(tmp_path / "first.log", "w", encoding="utf-8")
    first = subprocess.Popen(_study(tiny_split, out), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    victim = out / "runs" / "teacher-mixup"
    deadline = time.time() + 300
    while not (victim / "checkpoint_last.pt").is_file():
        assert first.poll() is None, (tmp_path / "first.log").read_text(encoding="utf-8")[-3000:]
        if time.time() > deadline:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            log.close()
            pytest.fail(f"no {victim / 'checkpoint_last.pt'} after 300 s, so the study could not be killed mid-run; "
                        "its log ends:\n" + (tmp_path / "first.log").read_text(encoding="utf-8")[-3000:])
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # mid-run: at least one epoch of four done
    first.wait()
    log.close()
    assert (victim / "checkpoint_last.pt").is_file() and not (victim / "finished.json").is_file()
    done_before = (out / "runs" / "teacher-none" / "finished.json").stat().st_mtime_ns

    second = subprocess.run(_study(tiny_split, out), cwd=REPO, capture_output=True, text=True, encoding="utf-8",
                            errors="replace", env=env, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (out / "runs" / "teacher-none" / "finished.json").stat().st_mtime_ns == done_before  # skipped
    resumed = json.loads((victim / "finished.json").read_text(encoding="utf-8"))
    assert 1 <= resumed["resumed_after_epoch"] < 4 and resumed["epochs"] == 4
    assert list(pd.read_csv(victim / "metrics.csv")["epoch"]) == [1, 2, 3, 4]  # the earlier epochs' rows kept

    table = pd.read_csv(out / "study_table.csv")
    assert len(table) == 20 and table["run"].is_unique
    assert set(table["section"]) == {"Calibration (teachers)", "Student", "Individual KD", "KD ensemble",
                                     "Ensemble of KD students"}
    teachers = table[table["run"].str.startswith("teacher-")]
    assert (teachers["parameters"] == 201_621).all()
    students = table[table["run"].str.startswith("student-")]
    assert (students["parameters"] == 51_221).all()
    for column in ("accuracy", "balanced_accuracy", "macro_f1", "mel_sensitivity", "ece_T1", "ece_T", "oe_T",
                   "nll_T1", "nll_T", "brier_T", "aurc_T", "temperature", "images_per_s"):
        assert table[column].notna().all(), column
    assert ((table["accuracy"] >= 0) & (table["accuracy"] <= 1)).all()
    # a row is its run's one test evaluation: the resumed teacher's row holds its eval's metrics.json, whose accuracy
    # is that of the predictions written beside it (the model finished after the resume, not the killed one)
    (evaluation,) = victim.glob("eval-test-*")
    report = json.loads((evaluation / "metrics.json").read_text(encoding="utf-8"))
    row = table.set_index("run").loc["teacher-mixup"]
    for column, value in (("accuracy", report["metrics"]["accuracy"]),
                          ("balanced_accuracy", report["metrics"]["balanced_accuracy"]),
                          ("ece_T", report["metrics"]["ece"]), ("ece_T1", report["uncalibrated"]["ece"]),
                          ("nll_T1", report["uncalibrated"]["nll"]), ("temperature", report["info"]["temperature"])):
        assert row[column] == pytest.approx(value, rel=1e-9, abs=1e-12), column
    predictions = pd.read_csv(evaluation / "predictions.csv")
    assert row["accuracy"] == pytest.approx((predictions["label"] == predictions["prediction"]).mean())
    calibration = json.loads((victim / "calibration.json").read_text(encoding="utf-8"))
    assert row["temperature"] == pytest.approx(calibration["temperature"]) and row["ece_T"] != row["ece_T1"]
    assert (out / "study_table.md").read_text(encoding="utf-8").count("## ") == 5
    assert (out / "study_reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "study.json").read_text(encoding="utf-8"))
    assert record["complete"] and record["preset"] == "cpu" and record["elapsed_s"] > 0
    # the searched ensemble is chosen on validation and recorded in its run
    searched = json.loads((out / "runs" / "ensemble-teachers-searched" / "settings.json").read_text(encoding="utf-8"))
    assert searched["weight_choice"] == "searched" and abs(sum(searched["weights"]) - 1) < 1e-9

    # the same folder with other settings is refused, not mixed (in-process: the command line ran twice above)
    other = command_in_process(run_calibration_study, *_study(tiny_split, out)[3:-2], "--image_size", "48")
    assert other.returncode == 2 and "mednet error:" in other.stderr and "other settings" in other.stderr


def test_compare_classifiers_refuses_an_empty_list_before_any_work(tmp_path: Path) -> None:
    from mednet.app.compare_classifiers import compare_classifiers
    from mednet.errors import OptionError

    with pytest.raises(OptionError, match="--augmentations: needs at least one name"):
        compare_classifiers(dataset_dir=str(tmp_path), augmentations=",", out=str(tmp_path / "cmp"))
    assert not (tmp_path / "cmp").exists()
