"""evaluate.json and ensemble.json refuse a test table holding lesions the evaluated run(s) trained or selected on.

A split folder of another seed of the same source puts lesions of the run's training and validation splits in its
"test" split; scoring the model there reports inflated scores with no sign of it. The check
(:func:`mednet.data.splits.check_evaluated_rows`) is wired into both configs; the runs here use an untrained
network saved as a run folder (nothing is trained), on nine tiny images. The evaluation the check lets through
writes the probabilities of an independent forward pass (PIL decode, the run's normalisation, its temperature).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from _bundle_cli import bundle_error_line
from _dermoscopy_fixtures import independent_probabilities
from mednet.app.bundles import run_bundle

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
SIZE = 32
MEAN, STD, TEMPERATURE = [0.5] * 3, [0.25] * 3, 1.5


def _split_folder(folder: Path, images: Path, assignment: dict[str, str]) -> Path:
    """``folder/split.csv`` for lesions ``L<i>`` (one image each, ``images/L<i>.png``) in the given splits."""
    folder.mkdir()
    rows = [{"image_id": f"I{lesion[1:]}", "lesion_id": lesion, "dx": CLASSES[int(lesion[1:]) % 7],
             "dx_type": "synthetic", "path": str(images / f"{lesion}.png"), "split": split}
            for lesion, split in assignment.items()]
    pd.DataFrame(rows).to_csv(folder / "split.csv", index=False)
    return folder


def _run(folder: Path, dataset_dir: Path) -> Path:
    """A run folder trained (as its settings.json says) on ``dataset_dir``, holding an untrained network (its
    BatchNorm statistics moved away from 0/1, so the train-mode network would give other outputs) and a
    calibration.json with temperature :data:`TEMPERATURE`."""
    from mednet.networks import build_classifier

    folder.mkdir()
    torch.manual_seed(0)
    network = build_classifier("receptive_field_cnn", len(CLASSES), SIZE)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    torch.save(network.state_dict(), folder / "model.pt")
    settings = {"model": "receptive_field_cnn", "image_size": SIZE, "cifar_stem": None, "cosine_head": False,
                "batch_norm": True, "class_names": CLASSES, "loss": "ce", "augmentation": "none",
                "normalization": {"mean": MEAN, "std": STD}, "seed": 0, "dataset_dir": str(dataset_dir)}
    (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    (folder / "calibration.json").write_text(json.dumps({"temperature": TEMPERATURE}), encoding="utf-8")
    (folder / "finished.json").write_text("{}", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("holdout")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 10):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(images / f"L{i}.png")
    own = _split_folder(root / "own", images, {"L1": "training", "L2": "training", "L3": "training",
                                               "L4": "validation", "L5": "validation", "L6": "validation",
                                               "L7": "test", "L8": "test", "L9": "test"})
    # another "seed": its validation is the run's validation (post-hoc fits pass), its test the run's training
    other = _split_folder(root / "other", images, {"L7": "training", "L8": "training", "L9": "training",
                                                   "L4": "validation", "L5": "validation", "L6": "validation",
                                                   "L1": "test", "L2": "test", "L3": "test"})
    return {"own": own, "other": other, "run": _run(root / "run", own), "root": root}


def test_evaluate_refuses_another_splits_test_lesions_the_run_trained_on(folders) -> None:
    run, other, own = folders["run"], folders["other"], folders["own"]
    line = bundle_error_line("dermoscopy_classification", "evaluate", dataset_dir=str(other),
                             ckpt_path=str(run / "model.pt"), model="receptive_field_cnn", image_size=SIZE)
    assert line.startswith(f"mednet error: {other / 'split.csv'}: 3 lesion(s) of its test split are in the "
                           f"training or validation split of the run that trained {run / 'model.pt'} "
                           f"({own / 'split.csv'}: 3 training, 0 validation; e.g. L1, L2, L3)"), line
    assert not [p for p in run.iterdir() if p.name.startswith("eval-")]  # refused before writing anything
    # the run's own test split is evaluated as before
    wf = run_bundle("dermoscopy_classification", "evaluate", dataset_dir=str(own), ckpt_path=str(run / "model.pt"),
                    model="receptive_field_cnn", image_size=SIZE)
    report = json.loads((Path(wf.parser.get_parsed_content("output_dir")) / "metrics.json").read_text("utf-8"))
    assert report["info"]["n_images"] == 3 and report["info"]["split"] == "test"


def test_evaluation_writes_the_probabilities_of_an_independent_forward_pass(folders) -> None:
    """evaluate.json builds its own dataset line from the run's normalisation: its predictions.csv must be
    softmax(net((x / 255 - mean) / std) / T) of each test image, computed here without the project's code."""
    run, own = folders["run"], folders["own"]
    wf = run_bundle("dermoscopy_classification", "evaluate", dataset_dir=str(own), ckpt_path=str(run / "model.pt"),
                    model="receptive_field_cnn", image_size=SIZE)
    out = Path(wf.parser.get_parsed_content("output_dir"))
    assert json.loads((out / "metrics.json").read_text("utf-8"))["info"]["temperature"] == TEMPERATURE
    predictions = pd.read_csv(out / "predictions.csv").set_index("image_id")
    assert sorted(predictions.index) == ["I7", "I8", "I9"]
    for image_id in predictions.index:
        image = folders["root"] / "images" / f"L{image_id[1:]}.png"
        _, expected = independent_probabilities(run, image, MEAN, STD, TEMPERATURE, SIZE)
        np.testing.assert_allclose(predictions.loc[image_id, CLASSES].to_numpy(float), expected, atol=2e-6)
        assert predictions.loc[image_id, "prediction"] == CLASSES[int(np.argmax(expected))]


def test_ensemble_refuses_a_test_split_holding_a_members_training_lesions(folders) -> None:
    run, other, root = folders["run"], folders["other"], folders["root"]
    clean = _run(root / "clean", other)  # trained on `other` itself: nothing to refuse for this member
    runs_root = root / "ensembles"
    line = bundle_error_line("dermoscopy_classification", "ensemble", dataset_dir=str(other),
                             members=[str(clean), str(run)], runs_root=str(runs_root))
    assert line.startswith(f"mednet error: {other / 'split.csv'}: 3 lesion(s) of its test split are in the "
                           f"training or validation split of the run that trained {run / 'model.pt'}"), line
    assert not runs_root.exists() or not any(runs_root.iterdir())  # refused before the ensemble run was written
