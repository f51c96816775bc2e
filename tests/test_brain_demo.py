"""The main job, ``python -m mednet.app.brain_demo``, end to end on the tests' tiny cohort: patches → training →
evaluation report, each step run with the demo's options (one epoch, axial view, no N4, a small patch cap)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_brain_demo_reuses_a_cohort_trains_and_writes_the_evaluation_report(tiny_cohort: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    from mednet.app.brain_demo import brain_demo
    from mednet.data.datasets import CohortPatches

    out = tmp_path / "demo"
    shutil.copytree(tiny_cohort, out / "cohort")  # the demo reuses a cohort of the same --subjects / --seed
    result = brain_demo(out=str(out), epochs=1, subjects=5, seed=1, views=(2,), bias_correction="none",
                        max_patches_per_volume=200)
    printed = capsys.readouterr().out
    assert f"reusing the demo cohort in {out / 'cohort'}" in printed
    assert set(result) == {"patches", "run_dir", "eval_dir", "minutes"} and 0 < result["minutes"] < 5
    patches, run_dir, eval_dir = (Path(result[k]) for k in ("patches", "run_dir", "eval_dir"))

    # patches: a new patches-* folder of the demo, extracted with the demo's options from the training split
    assert patches.name == "patches_training.npz" and patches.parent.parent == out
    assert patches.parent.name.startswith("patches-")
    params = CohortPatches.load(patches).stats["params"]
    assert params["views"] == [2] and params["bias_correction"] == "none" and params["max_per_volume"] == 200
    assert params["split"] == "training" and params["seed"] == 1

    # training: a finished run under <out>/runs with the same options (the patches were its training data)
    assert run_dir.parent == out / "runs" and run_dir.name.startswith("train-skip-")
    settings = json.loads((run_dir / "settings.json").read_text(encoding="utf-8"))
    assert {k: settings[k] for k in ("views", "bias_correction", "epochs", "seed")} == {
        "views": [2], "bias_correction": "none", "epochs": 1, "seed": 1}
    assert (run_dir / "model.pt").is_file()
    assert json.loads((run_dir / "finished.json").read_text(encoding="utf-8"))["epochs"] == 1

    # evaluation: the report of the run's checkpoint on the test subject, printed at the end
    assert eval_dir.parent == run_dir and eval_dir.name.startswith("eval-test-")
    provenance = json.loads((eval_dir / "provenance.json").read_text(encoding="utf-8"))
    assert provenance["checkpoint"]["path"] == str((run_dir / "model.pt").resolve())
    for name in ("summary.md", "summary.json", "whole_volume/metrics.json", "whole_volume/per_volume.csv",
                 "grid_patches/metrics.json", "predictions/sub-004_seg.nii.gz"):
        assert (eval_dir / name).is_file(), name
    summary = json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
    assert "no bias-field correction" in summary["info"]["preprocessing"]
    assert "axes [2]" in summary["info"]["preprocessing"]
    for protocol in ("whole volume", "grid patches"):
        assert 0 < summary["protocols"][protocol]["mean_dice"] <= 1, protocol  # NaN fails too
    assert (eval_dir / "summary.md").read_text(encoding="utf-8") in printed


def test_the_main_job_names_its_own_options_for_a_demo_folder_built_otherwise(tiny_cohort: Path,
                                                                            tmp_path: Path) -> None:
    """A cohort built by ``brain_demo --subjects 5``: ``python -m mednet.app.demo`` said "pass --subjects 5 to
    reuse it", an option it does not take."""
    from _bundle_cli import command_in_process
    from mednet.app.demo import demo

    out = tmp_path / "demo"
    shutil.copytree(tiny_cohort, out / "cohort")
    proc = command_in_process(demo, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("mednet error:")]
    assert line.startswith(f"mednet error: {out}: the demo cohort in {out / 'cohort'} was built with --subjects 5")
    assert "python -m mednet.app.demo has no --subjects: choose another --out" in line
    assert "pass --subjects" not in line and not (out / "runs").exists()
