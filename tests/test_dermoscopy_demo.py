"""The dermoscopy demo (``python -m mednet.app.dermoscopy_demo``), the README's first command, at a tiny size:
synthetic set → lesion-grouped split → one training epoch → the test split's evaluation report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score


def test_demo_builds_the_data_trains_and_writes_the_report(tmp_path: Path, capsys) -> None:
    from mednet.app.dermoscopy_demo import dermoscopy_demo

    result = dermoscopy_demo(out=str(tmp_path / "demo"), images=120, size=32, epochs=1, batch_size=32)
    root = (tmp_path / "demo" / "dermoscopy").resolve()
    assert (Path(result["data"]), Path(result["split"])) == (root / "synthetic", root / "split")
    metadata = pd.read_csv(root / "synthetic" / "HAM10000_metadata.csv")
    assert len(metadata) == 120 and set(metadata["dx_type"]) == {"synthetic"}
    split = pd.read_csv(root / "split" / "split.csv")
    assert sorted(split["image_id"]) == sorted(metadata["image_id"]) and set(split["split"]) == {
        "training", "validation", "test"}

    run, evaluation = Path(result["run_dir"]), Path(result["eval_dir"])
    assert run.parent == root / "runs" and evaluation.parent == run
    for name in ("model.pt", "settings.json", "metrics.csv", "calibration.json", "finished.json"):
        assert (run / name).is_file(), name
    settings = json.loads((run / "settings.json").read_text(encoding="utf-8"))
    assert (settings["model"], settings["image_size"], settings["epochs"]) == ("receptive_field_cnn", 32, 1)
    assert (settings["optimizer"], settings["lr_schedule"], settings["data"]) == ("adam", "cosine", "synthetic")
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [1]

    report = json.loads((evaluation / "metrics.json").read_text(encoding="utf-8"))
    assert result["metrics"] == report["metrics"] and report["info"]["split"] == "test"
    predictions = pd.read_csv(evaluation / "predictions.csv")
    test = split[split["split"] == "test"]
    assert sorted(predictions["image_id"]) == sorted(test["image_id"])
    assert result["metrics"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(predictions["label"], predictions["prediction"]))
    assert 0 <= result["metrics"]["accuracy"] <= 1 and result["metrics"]["nll"] > 0 and result["minutes"] > 0
    table = (evaluation / "classification_report.md").read_text(encoding="utf-8")
    out = capsys.readouterr().out
    assert "mednet dermoscopy demo (synthetic data) finished" in out and str(evaluation) in out and table in out
    assert f"balanced accuracy {result['metrics']['balanced_accuracy']:.3f}" in out
