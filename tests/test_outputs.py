"""Outputs: distinct names for inputs with the same file name, atomic writes, checkpoints, finished runs,
the latest-run rule and provenance records.

Fast (tiny 24×24×12 volumes written with nibabel, Ignite engines driven by hand); the bundle-level runs of the
same behaviour are in ``test_bundle.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from mednet.errors import DataError
from mednet.data.naming import unique_names, volume_stem, with_names
from mednet.io import TEMP_MARKER, atomic_path, temp_name

SHAPE = (24, 24, 12)  # N4 bias correction (the default preprocessing) needs more than 16×16×8


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_MARKER in p.name]


# --- naming -----------------------------------------------------------------------------------------------


def test_unique_names_add_parents_only_where_names_collide() -> None:
    paths = ["/d/subA/anat/T1.nii.gz", "/d/subB/anat/T1.nii.gz", "/d/subA/anat/flair.nii.gz", "/e/series7/"]
    assert unique_names(paths) == ["subA_anat_T1", "subB_anat_T1", "flair", "series7"]
    assert unique_names(["/d/subA/T1.nii.gz", "/d/subB/T1.nii.gz"]) == ["subA_T1", "subB_T1"]
    # only the colliding members of a group grow: d/subA and e/subA need two folders, subB one
    assert unique_names(["/d/subA/T1.nii", "/d/subB/T1.nii", "/e/subA/T1.nii"]) == ["d_subA_T1", "subB_T1", "e_subA_T1"]
    # a prefixed name that meets another file's own name is extended too
    names = unique_names(["/x/subA/T1.nii.gz", "/x/subB/T1.nii.gz", "/y/subA_T1.nii.gz"])
    assert len(set(names)) == 3 and names[1] == "subB_T1" and names[2] == "y_subA_T1"
    # case-insensitive file systems: T1 and t1 are one file
    assert unique_names(["/d/a/T1.nii", "/d/b/t1.nii"]) == ["a_T1", "b_t1"]
    # nothing tells them apart: numbered in list order; deterministic
    paths = ["/d/a/T1.nii", "/d/a/T1.nii.gz", "/d/a/T1.nii"]
    assert unique_names(paths) == ["T1", "T1-2", "T1-3"] == unique_names(list(paths))
    # relative and absolute spellings of the same tree give the same names
    assert unique_names(["subA/T1.nii.gz", "subB/T1.nii.gz"]) == ["subA_T1", "subB_T1"]
    assert volume_stem("/x/scan.MHA") == "scan" and volume_stem("/x/series7/") == "series7"
    assert volume_stem("/x/ISIC_1.dicom") == "ISIC_1" and volume_stem("/x/IM2.DIC") == "IM2"  # DICOM suffixes


def test_names_from_a_datalist_never_leave_the_output_folder() -> None:
    """A datalist item may carry any "name"; one with folders ("../x") is replaced by names from the paths."""
    from mednet.data.naming import with_names

    items = [{"image": "/d/a/T1.nii.gz", "name": "../../etc/x"}, {"image": "/d/b/T2.nii.gz", "name": "ok"}]
    assert [it["name"] for it in with_names(items)] == ["T1", "T2"]
    for bad in ("..", ".", "", "a/b", "a\\b"):
        assert with_names([{"image": "/d/T1.nii.gz", "name": bad}])[0]["name"] == "T1"
    assert [it["name"] for it in with_names([{"image": "/d/T1.nii.gz", "name": "sub-01"}])] == ["sub-01"]


def test_with_names_sets_names_once_per_list() -> None:
    items = [{"image": "/d/subA/T1.nii.gz", "label": "l1"}, {"image": "/d/subB/T1.nii.gz"}]
    named = with_names(items)
    assert [it["name"] for it in named] == ["subA_T1", "subB_T1"] and "name" not in items[0]
    assert named[0]["label"] == "l1"
    given = [{"image": "/a/T1.nii", "name": "first"}, {"image": "/b/T1.nii", "name": "second"}]
    assert [it["name"] for it in with_names(given)] == ["first", "second"]
    clash = [{"image": "/a/T1.nii", "name": "x"}, {"image": "/b/T1.nii", "name": "X"}]
    assert [it["name"] for it in with_names(clash)] == ["a_T1", "b_T1"]  # given names collide: recomputed


def _volume(path: Path, seed: int) -> Path:
    """A tiny skull-stripped volume and its labels (all four values; intensity 0 exactly on background)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.uint8)
    label[2:-2, 2:-2, 1:-1] = rng.integers(1, 4, (SHAPE[0] - 4, SHAPE[1] - 4, SHAPE[2] - 2))
    image = (label * 100.0 + rng.uniform(1, 20, SHAPE)) * (label > 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), str(path))
    lab = path.with_name(path.name.replace(".nii.gz", "_label.nii.gz"))
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(lab))
    return lab


@pytest.fixture
def colliding(tmp_path: Path) -> Path:
    """A datalist whose two test (and two training) volumes are both called ``T1.nii.gz``."""
    root = tmp_path / "bids"
    splits = {}
    for split, subjects in (("training", ("sub-01", "sub-02")), ("test", ("subA", "subB"))):
        splits[split] = []
        for k, sub in enumerate(subjects):
            img = root / sub / "anat" / "T1.nii.gz"
            lab = _volume(img, seed=len(splits) * 10 + k)
            splits[split].append({"image": str(img.relative_to(root)), "label": str(lab.relative_to(root))})
    (root / "datalist.json").write_text(json.dumps(splits))
    return root / "datalist.json"


def test_list_inputs_and_volume_dataset_name_colliding_inputs(colliding: Path) -> None:
    from mednet.data.datalist import list_volume_inputs as list_inputs
    from mednet.data.datasets import volume_dataset

    assert [it["name"] for it in list_inputs(colliding, split="test")] == ["subA_anat_T1", "subB_anat_T1"]
    ds = volume_dataset(colliding, split="test")
    assert [ds[i]["name"] for i in range(len(ds))] == ["subA_anat_T1", "subB_anat_T1"]


def test_slicing_colliding_inputs_keeps_every_volume(colliding: Path, tmp_path: Path) -> None:
    from mednet.data.slice_files import slice_datalist

    index = slice_datalist(str(colliding), str(tmp_path / "slices"), axis=-1)
    assert sorted(p.name for p in (tmp_path / "slices" / "test").iterdir()) == [
        "subA_anat_T1_axis2.npz", "subB_anat_T1_axis2.npz"]
    rows = list(csv.DictReader(open(index)))
    assert {(r["split"], r["name"]) for r in rows} == {("training", "sub-01_anat_T1"), ("training", "sub-02_anat_T1"),
                                                      ("test", "subA_anat_T1"), ("test", "subB_anat_T1")}
    with np.load(tmp_path / "slices" / "test" / "subB_anat_T1_axis2.npz") as z:
        assert str(z["source"]).endswith(os.path.join("subB", "anat", "T1.nii.gz"))
    assert not _leftovers(tmp_path / "slices")


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _check_slice_set(out: Path) -> None:
    """slices.csv and the .npz files agree: every listed file exists with the listed slice indices, none unlisted."""
    rows = list(csv.DictReader(open(out / "slices.csv", encoding="utf-8")))
    listed: dict[str, list[int]] = {}
    for r in rows:
        listed.setdefault(r["file"], []).append(int(r["index"]))
    assert sorted(Path(f).resolve() for f in listed) == sorted(p.resolve() for p in out.rglob("*.npz"))
    for f, indices in listed.items():
        with np.load(f) as z:
            assert z["indices"].tolist() == indices


@pytest.mark.parametrize("fail_at", ["second npz", "slices.csv"])
def test_slicing_with_overwrite_keeps_the_earlier_set_whole_when_it_fails(colliding: Path, tmp_path: Path,
                                                                         monkeypatch, fail_at: str) -> None:
    """--overwrite over an earlier slice set: a failure while the new files go in place (a move fails half-way,
    or the index cannot be written) leaves the earlier set exactly as it was, never new slices under the old
    slices.csv; the same run without the failure replaces the set whole."""
    import mednet.data.slice_files as slice_files

    out = tmp_path / "slices"
    old_options = dict(axis=-1, intensity_normalization="scale", bias_correction="none")
    new_options = dict(axis=-1, intensity_normalization="zscore", bias_correction="none", drop_empty=True)
    slice_datalist = slice_files.slice_datalist
    slice_datalist(str(colliding), str(out), **old_options)
    before = _folder_bytes(out)
    assert len(before) == 5  # slices.csv and 4 volumes

    real_replace = os.replace
    staged_moves = []

    def failing_replace(src, dst, *args, **kwargs):  # fails on the second staged file moved into place
        if TEMP_MARKER in str(src) and "new" in Path(src).parts[-4:]:  # from staging, not a file put back
            staged_moves.append(src)
            if len(staged_moves) == 2:
                raise OSError("No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    class FailingWriter:
        def __init__(self, *args, **kwargs):
            raise OSError("No space left on device")

    if fail_at == "second npz":
        monkeypatch.setattr(os, "replace", failing_replace)
    else:
        monkeypatch.setattr(slice_files.csv, "DictWriter", FailingWriter)
    with pytest.raises(OSError, match="No space left"):
        slice_datalist(str(colliding), str(out), overwrite=True, **new_options)
    monkeypatch.undo()
    assert _folder_bytes(out) == before
    _check_slice_set(out)
    assert _leftovers(tmp_path) == []  # no staging folder, no folder of set-aside files

    slice_datalist(str(colliding), str(out), overwrite=True, **new_options)
    after = _folder_bytes(out)
    assert set(after) == set(before) and all(after[k] != before[k] for k in after if k.endswith(".npz"))
    _check_slice_set(out)
    assert _leftovers(tmp_path) == []


def check_report_against_predictions(report: Path, predictions: Path, labels: dict[str, Path]) -> np.ndarray:
    """A :class:`~mednet.engines.segmentation_report.SegmentationReport` folder against a numpy recount from the
    files the evaluation wrote: for each volume (``labels``: per_volume.csv's names in order → label file) the
    confusion matrix of ``<predictions>/<volume>_seg.nii.gz`` against its label gives that row's Dice; the pooled
    matrix of metrics.json and confusion.csv is the sum over the volumes, and ``overall`` its scores. Returns the
    pooled matrix."""
    from mednet.metrics.segmentation import scores_from_confusion

    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    with open(report / "per_volume.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["volume"] for r in rows] == list(labels)
    total = np.zeros((4, 4), np.int64)
    for row in rows:
        pred = np.asarray(nib.load(predictions / f"{row['volume']}_seg.nii.gz").dataobj).astype(np.int64)
        true = np.rint(np.asarray(nib.load(labels[row["volume"]]).dataobj)).astype(np.int64)
        assert pred.shape == true.shape, row["volume"]
        total += np.bincount((true * 4 + pred).ravel(), minlength=16).reshape(4, 4)
        for c, name in ((1, "CSF"), (2, "GM"), (3, "WM")):
            p, t = pred == c, true == c
            assert float(row[f"dice_{name}"]) == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()), abs=1e-12), \
                (row["volume"], name)
    assert metrics["confusion_matrix"]["labels"] == ["background", "CSF", "GM", "WM"]
    np.testing.assert_array_equal(np.asarray(metrics["confusion_matrix"]["rows_true_cols_pred"]), total)
    np.testing.assert_array_equal(np.loadtxt(report / "confusion.csv", delimiter=",", skiprows=1,
                                             usecols=(1, 2, 3, 4), dtype=np.int64), total)
    overall = {k: math.nan if v is None else v for k, v in metrics["overall"].items()}  # JSON null is NaN
    assert overall == pytest.approx(scores_from_confusion(total), abs=1e-12, nan_ok=True)
    return total


def test_evaluation_of_colliding_inputs_writes_one_output_each(colliding: Path, tmp_path: Path) -> None:
    """A real MONAI SupervisedEvaluator with the bundle's transforms and report handler."""
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator
    from monai.inferers import SimpleInferer
    from monai.transforms import Compose

    from mednet.data.datasets import volume_dataset
    from mednet.data.transforms import SaveLabelVolumed, TissueLabelsd
    from mednet.engines.segmentation_report import SegmentationReport

    net = torch.nn.Conv3d(1, 3, 1)
    report = SegmentationReport(tmp_path / "whole_volume", protocol="test")
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(volume_dataset(colliding, split="test"), batch_size=1),
        network=net, inferer=SimpleInferer(), val_handlers=[report],
        postprocessing=Compose([TissueLabelsd("pred", "mask"), SaveLabelVolumed("pred", output_dir=tmp_path / "predictions")]))
    evaluator.run()
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["subA_anat_T1_seg.nii.gz",
                                                                           "subB_anat_T1_seg.nii.gz"]
    per_volume = list(csv.DictReader(open(tmp_path / "whole_volume" / "per_volume.csv")))
    assert [r["volume"] for r in per_volume] == ["subA_anat_T1", "subB_anat_T1"]
    assert [Path(r["file"]).parts[-3] for r in per_volume] == ["subA", "subB"]
    assert [r["tissue_voxels_outside_mask"] for r in per_volume] == ["0", "0"]  # the loader's mask reaches the report
    # overall pools the voxels; mean_over_volumes averages the per-volume scores (both in metrics.json)
    metrics = json.loads((tmp_path / "whole_volume" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["overall_is"].startswith("pooled")
    per_volume_dice = [float(r["mean_dice"]) for r in per_volume]
    assert metrics["mean_over_volumes"]["mean_dice"] == pytest.approx(np.mean(per_volume_dice))
    assert set(evaluator.state.report) == {"overall", "mean_over_volumes", "output_dir"}
    # every number is that of the predictions written: per volume, and pooled = the sum of both volumes' matrices
    root = colliding.parent
    labels = {f"{sub}_anat_T1": root / sub / "anat" / "T1_label.nii.gz" for sub in ("subA", "subB")}
    pooled = check_report_against_predictions(tmp_path / "whole_volume", tmp_path / "predictions", labels)
    assert pooled.sum() == 2 * np.prod(SHAPE)
    # the evaluation summary carries the report's pooled scores
    from mednet.engines.segmentation_report import write_evaluation_summary

    write_evaluation_summary(tmp_path, {"test": evaluator.state.report})
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["protocols"] == {"test": metrics["overall"]}
    assert {p.name for p in (tmp_path / "whole_volume").glob("slices_*.png")} == {
        "slices_subA_anat_T1.png", "slices_subB_anat_T1.png"}
    assert not _leftovers(tmp_path)


# --- atomic writes ------------------------------------------------------------------------------------------


def test_atomic_path_keeps_the_suffix_and_never_leaves_half_files(tmp_path: Path) -> None:
    assert temp_name(tmp_path / "sub-01_seg.nii.gz").name.endswith(".nii.gz")
    assert temp_name(tmp_path / "model.pt").name.startswith(".model.tmp-")
    target = tmp_path / "a" / "table.csv"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".csv"
        tmp.write_text("old\n")
    assert target.read_text(encoding="utf-8") == "old\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual permissions, not mkstemp's 0600
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old\n" and not _leftovers(tmp_path)
    with pytest.raises(DataError, match=r"table\.csv: output already exists"), atomic_path(target, overwrite=False) as tmp:
        tmp.write_text("new")
    assert target.read_text(encoding="utf-8") == "old\n" and not _leftovers(tmp_path)
    # the no-overwrite check also holds when the file appears while writing (a concurrent run)
    other = tmp_path / "race.json"
    with pytest.raises(DataError, match="already exists"), atomic_path(other, overwrite=False) as tmp:
        tmp.write_text("mine")
        other.write_text("theirs")
    assert other.read_text(encoding="utf-8") == "theirs" and not _leftovers(tmp_path)


def test_label_volume_and_reports_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    """nibabel and matplotlib write to temporary names that keep .nii.gz / .png, then rename."""
    import matplotlib.figure

    from mednet.data.volumes import load_volume, save_label_volume
    from mednet.reports import plot_convergence, write_json

    img = tmp_path / "T1.nii.gz"
    _volume(img, 0)
    ref = load_volume(img)
    out = save_label_volume(torch.ones(ref.shape), ref, tmp_path / "T1_seg.nii.gz")
    assert nib.load(out).shape == SHAPE and not _leftovers(tmp_path)
    (tmp_path / "m.csv").write_text("epoch,train_loss\n1,0.5\n2,0.4\n")
    png = plot_convergence(tmp_path / "m.csv", tmp_path / "convergence.png")
    before = png.read_bytes()
    assert before.startswith(b"\x89PNG")

    def crash(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError("killed while saving")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", crash)
    with pytest.raises(OSError):
        plot_convergence(tmp_path / "m.csv", png)
    assert png.read_bytes() == before and not _leftovers(tmp_path)
    write_json({"dice": float("nan")}, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == {"dice": None}


# --- checkpoints and finished runs ------------------------------------------------------------------------


def _engines(values: list[float]) -> tuple[Engine, Engine]:
    """A trainer with one iteration per epoch and an evaluator reporting ``values[epoch - 1]`` as val_dice."""
    evaluator = Engine(lambda e, b: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine: Engine) -> None:
        engine.state.metrics["val_dice"] = values[trainer.state.epoch - 1]

    trainer = Engine(lambda e, b: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0], max_epochs=1))
    return trainer, evaluator


def test_checkpoint_saver_keeps_the_best_and_marks_the_run_finished(tmp_path: Path) -> None:
    from mednet.engines.checkpoints import AtomicCheckpointSaver
    from mednet.runs import read_finished

    net = torch.nn.Linear(2, 1)
    trainer, evaluator = _engines([0.5, 0.3, 0.7, 0.6])
    saved = {}

    @trainer.on(Events.EPOCH_STARTED)
    def _change_weights(engine: Engine) -> None:
        with torch.no_grad():
            net.weight.fill_(engine.state.epoch)

    saver = AtomicCheckpointSaver(tmp_path, {"network": net}, evaluator=evaluator, key_metric_name="val_dice")
    saver.attach(trainer)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _snapshot(engine: Engine) -> None:  # attached after the saver: model.pt as this validation left it
        saved[trainer.state.epoch] = float(torch.load(tmp_path / "model.pt")["weight"][0, 0])
    assert read_finished(tmp_path) is None
    trainer.run([0], max_epochs=4)
    assert saved == {1: 1.0, 2: 1.0, 3: 3.0, 4: 3.0}  # epoch 2 and 4 did not improve on the best
    best = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(best) == {"weight", "bias"} and float(best["weight"][0, 0]) == 3.0  # a plain state_dict
    assert float(torch.load(tmp_path / "model_final.pt")["weight"][0, 0]) == 4.0
    done = read_finished(tmp_path)
    assert done["epochs"] == 4 and done["best_epoch"] == 3 and done["best_metric"] == pytest.approx(0.7)
    assert done["key_metric"] == "val_dice" and "finished" in done
    assert (saver.best_epoch, saver.best_metric) == (3, pytest.approx(0.7))
    assert not _leftovers(tmp_path)


def test_a_run_with_work_after_training_is_finished_only_by_its_last_step(tmp_path: Path) -> None:
    """mark_finished=False (the bundles): training completes without finished.json; finish_run writes it later,
    after the run's other post-training files (the dermoscopy bundle's calibration)."""
    from mednet.engines.checkpoints import AtomicCheckpointSaver, finish_run
    from mednet.runs import read_finished

    trainer, evaluator = _engines([0.5, 0.7])
    AtomicCheckpointSaver(tmp_path, {"network": torch.nn.Linear(2, 1)}, evaluator=evaluator,
                          key_metric_name="val_dice", mark_finished=False).attach(trainer)
    trainer.run([0], max_epochs=2)
    assert (tmp_path / "model_final.pt").is_file() and read_finished(tmp_path) is None
    (tmp_path / "calibration.json").write_text("{}")  # what the run writes after training
    finish_run(trainer)
    done = read_finished(tmp_path)
    assert done["epochs"] == 2 and done["best_epoch"] == 2 and done["best_metric"] == pytest.approx(0.7)
    assert (tmp_path / "finished.json").stat().st_mtime_ns >= (tmp_path / "calibration.json").stat().st_mtime_ns
    other, _ = _engines([0.1])
    with pytest.raises(RuntimeError, match="no AtomicCheckpointSaver"):
        finish_run(other)
    # finish_run's registry does not keep a trainer (its network, optimiser, data) alive after the run
    import gc
    import weakref

    gone = weakref.ref(trainer)
    del trainer, evaluator
    gc.collect()
    assert gone() is None


def _kill_after(trainer: Engine, stop_after: int | None) -> None:
    """Make ``trainer``'s process "die" (KeyboardInterrupt) after epoch ``stop_after``. Attach it after the
    checkpoint saver, so that this epoch's checkpoint_last.pt is written first."""
    if stop_after is not None:
        @trainer.on(Events.EPOCH_COMPLETED)
        def _kill(engine: Engine) -> None:
            if engine.state.epoch == stop_after:
                raise KeyboardInterrupt


def test_resume_continues_an_interrupted_run_and_finishes_one_stopped_after_training(tmp_path: Path) -> None:
    """checkpoint_last.pt after 2 of 4 epochs: the next run trains epochs 3-4 only. A run that trained every epoch
    but stopped before finished.json (the dermoscopy bundle's calibration step) trains nothing and can be
    finished; a finished run is refused."""
    from mednet.engines.checkpoints import AtomicCheckpointSaver, finish_run
    from mednet.runs import read_finished

    def attempt(stop_after: int | None, finish: bool = True) -> list[int]:
        net = torch.nn.Linear(2, 1)
        trainer, evaluator = _engines([0.5, 0.9, 0.7, 0.6])
        trainer.state.max_epochs, trainer.state.epoch_length = 4, 1  # as MONAI's trainers set them at construction
        epochs: list[int] = []
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
        AtomicCheckpointSaver(tmp_path, {"network": net}, evaluator=evaluator, key_metric_name="val_dice",
                              mark_finished=False, resume_dict={"network": net}).attach(trainer)
        _kill_after(trainer, stop_after)
        try:
            trainer.run([0])
        except KeyboardInterrupt:
            return epochs
        if finish:  # the run list's last step
            finish_run(trainer)
        return epochs

    assert attempt(stop_after=2) == [1, 2] and read_finished(tmp_path) is None
    assert attempt(stop_after=None, finish=False) == [3, 4]  # resumed; then stopped before the run's last step
    assert read_finished(tmp_path) is None and (tmp_path / "model_final.pt").is_file()
    assert attempt(stop_after=None) == []  # every epoch trained: nothing to train, the run is finished
    done = read_finished(tmp_path)
    assert done["epochs"] == 4 and done["best_epoch"] == 2 and done["best_metric"] == pytest.approx(0.9)
    assert done["resumed_after_epoch"] == 4
    with pytest.raises(DataError, match="already completed 4 of 4 epochs"):
        attempt(stop_after=None)


def _run_killable(folder: Path, process, data, resume_dict: dict, stop_after: int | None) -> list:
    """A 4-epoch resumable Ignite run of ``process`` over ``data`` (one iteration per epoch) with the product's
    checkpoint saver; raises the process's "death" after epoch ``stop_after``. Returns each iteration's output."""
    from mednet.engines.checkpoints import AtomicCheckpointSaver

    trainer = Engine(process)
    trainer.state.max_epochs, trainer.state.epoch_length = 4, 1  # as MONAI's trainers set them at construction
    outputs: list = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    AtomicCheckpointSaver(folder, {"network": resume_dict["network"]}, mark_finished=False,
                          resume_dict=resume_dict).attach(trainer)
    _kill_after(trainer, stop_after)
    try:
        trainer.run(data)
    except KeyboardInterrupt:
        pass
    return outputs


@pytest.mark.parametrize("sampling", ["shuffle", "weighted"])
def test_a_resumed_run_draws_the_shuffling_an_uninterrupted_run_would(tmp_path: Path, sampling: str) -> None:
    """The bundles seed the global random states once per run (set_determinism at initialize): a resumed run drew
    epoch 1's batch order again for its epoch 3. The states saved with each epoch continue the stream — also for
    the dermoscopy bundle's --balanced_sampler (a WeightedRandomSampler on the global generator, as train.json
    builds it: with a generator of its own it would replay its draws)."""
    from monai.utils import set_determinism

    def attempt(folder: Path, stop_after: int | None) -> list[list[int]]:
        set_determinism(seed=0)  # what every bundle run does first
        net = torch.nn.Linear(2, 1)
        sampler = torch.utils.data.WeightedRandomSampler(torch.linspace(1, 2, 12), 12) if sampling == "weighted" else None
        loader = torch.utils.data.DataLoader(list(range(12)), batch_size=12, shuffle=sampler is None, sampler=sampler)
        orders = _run_killable(folder, lambda engine, batch: batch.tolist(), loader, {"network": net}, stop_after)
        set_determinism(seed=None)
        return orders

    uninterrupted = attempt(tmp_path / "a", None)
    assert len({tuple(o) for o in uninterrupted}) == 4  # four different orders
    assert attempt(tmp_path / "b", stop_after=2) == uninterrupted[:2]
    assert attempt(tmp_path / "b", stop_after=None) == uninterrupted[2:]  # resumed: epochs 3-4 as uninterrupted


def test_a_resumed_run_draws_the_augmentation_an_uninterrupted_run_would(tmp_path: Path) -> None:
    """The brain bundle's batch augmentation has a generator of its own (not the global states): as one of the
    resume objects its state is saved with every epoch, so a resumed run's epoch 3 is augmented as an uninterrupted
    run's epoch 3, not as epoch 1 again. The state is tensors only (checkpoint_last.pt loads weights_only)."""
    from mednet.data.augment import TissuePatchAugmentation

    image = torch.rand(8, 1, 16, 16) + 0.1
    label = torch.ones(8, 1, 16, 16, dtype=torch.long)

    def attempt(folder: Path, stop_after: int | None) -> list[torch.Tensor]:
        augmentation = TissuePatchAugmentation(noise_prob=1.0, blur_prob=0.5, bias_prob=0.5, seed=3)
        return _run_killable(folder, lambda engine, batch: augmentation(image, label), [0],
                             {"network": torch.nn.Linear(2, 1), "patch_augmentation": augmentation}, stop_after)

    uninterrupted = attempt(tmp_path / "a", None)
    assert not torch.equal(uninterrupted[0], uninterrupted[2])  # the epochs draw differently
    first = attempt(tmp_path / "b", stop_after=2)
    after_epoch_2 = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)
    resumed = attempt(tmp_path / "b", stop_after=None)
    assert len(first) == len(resumed) == 2
    for got, want in zip(first + resumed, uninterrupted):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    state = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)["patch_augmentation"]
    assert set(state) == {"cpu"} and state["cpu"].dtype == torch.uint8
    # a checkpoint from before the augmentation saved its state (0.3.5) still resumes: the augmentation restarts
    # from its seed, as it did then; other objects stay required
    old = after_epoch_2
    del old["patch_augmentation"]
    (tmp_path / "c").mkdir()
    torch.save(old, tmp_path / "c" / "checkpoint_last.pt")
    restarted = attempt(tmp_path / "c", stop_after=None)
    assert len(restarted) == 2 and torch.equal(restarted[0], uninterrupted[0])  # epoch 3 drew epoch 1's draws
    del old["network"]
    (tmp_path / "d").mkdir()
    torch.save(old, tmp_path / "d" / "checkpoint_last.pt")
    with pytest.raises(DataError, match="not a resumable checkpoint of this run \\(no network\\)"):
        attempt(tmp_path / "d", stop_after=None)
    # a state for a device this machine lacks is skipped, not an error
    augmentation = TissuePatchAugmentation(seed=3)
    augmentation.load_state_dict({"cuda:7": torch.zeros(16, dtype=torch.uint8)})


def test_a_run_killed_after_an_improving_validation_keeps_the_best_model_of_the_epochs_it_resumes(
        tmp_path: Path) -> None:
    """Killed after epoch 3's validation improved (0.9) but before the epoch's checkpoint_last.pt: the resumed run
    continues after epoch 2, so model.pt must be epoch 2's weights (best 0.6), not the discarded epoch 3's."""
    from mednet.engines.checkpoints import AtomicCheckpointSaver, finish_run, load_weights
    from mednet.runs import read_finished

    def attempt(values: list[float], kill_at_validation: int | None) -> torch.nn.Linear:
        net = torch.nn.Linear(2, 1)
        trainer, evaluator = _engines(values)
        trainer.state.max_epochs, trainer.state.epoch_length = 5, 1

        @trainer.on(Events.EPOCH_STARTED)
        def _train(engine: Engine) -> None:  # the epoch's weights: every weight = the epoch number
            torch.nn.init.constant_(net.weight, float(engine.state.epoch))

        AtomicCheckpointSaver(tmp_path, {"network": net}, evaluator=evaluator, key_metric_name="val_dice",
                              mark_finished=False, resume_dict={"network": net}).attach(trainer)
        if kill_at_validation is not None:
            @evaluator.on(Events.COMPLETED)  # after the saver's validation handler, before the epoch's end
            def _kill(engine: Engine) -> None:
                if trainer.state.epoch == kill_at_validation:
                    raise KeyboardInterrupt
        try:
            trainer.run([0])
        except KeyboardInterrupt:
            return net
        finish_run(trainer)
        return net

    attempt([0.5, 0.6, 0.9, 0.0, 0.0], kill_at_validation=3)
    best = torch.nn.Linear(2, 1)
    load_weights(best, tmp_path / "model.pt")
    assert torch.all(best.weight == 2.0)  # epoch 3 never reached checkpoint_last.pt: its weights are not the best
    attempt([0.5, 0.6, 0.55, 0.58, 0.4], kill_at_validation=None)  # resumed after epoch 2; nothing beats 0.6
    done = read_finished(tmp_path)
    assert (done["best_epoch"], done["best_metric"]) == (2, pytest.approx(0.6))
    load_weights(best, tmp_path / "model.pt")
    assert torch.all(best.weight == 2.0)  # model.pt is the model finished.json describes


def test_resume_restores_the_amp_loss_scale(tmp_path: Path) -> None:
    """With AMP the trainer's GradScaler has learnt a loss scale; a resumed run restarting at 2^16 would skip
    steps until it fell back. MONAI trainers keep it as ``engine.scaler``."""
    from mednet.engines.checkpoints import AtomicCheckpointSaver

    class AmpTrainer(Engine):
        """As MONAI's Trainer: no scaler while handlers are attached, a new one made by run()."""

        scaler = None

        def run(self, *args, **kwargs):
            self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
            return super().run(*args, **kwargs)

    def attempt(stop_after: int | None) -> torch.amp.GradScaler:
        net = torch.nn.Linear(2, 1)
        evaluator = Engine(lambda e, b: None)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(val_dice=0.5))
        trainer = AmpTrainer(lambda e, b: None)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0], max_epochs=1))
        trainer.state.max_epochs, trainer.state.epoch_length = 3, 1

        @trainer.on(Events.EPOCH_STARTED)
        def _step(engine: Engine) -> None:  # as after overflows: the scale has come down
            engine.scaler.scale(torch.ones(()))
            engine.scaler.update(new_scale=2.0 ** (10 - engine.state.epoch))

        AtomicCheckpointSaver(tmp_path, {"network": net}, evaluator=evaluator, key_metric_name="val_dice",
                              mark_finished=False, resume_dict={"network": net}).attach(trainer)
        if stop_after is not None:
            trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())
            trainer.run([0])
            return trainer.scaler
        restored = []
        trainer.add_event_handler(Events.STARTED, lambda e: restored.append(e.scaler.get_scale()))
        trainer.run([0])
        return restored[0]

    assert attempt(stop_after=2).get_scale() == 2.0 ** 8
    assert attempt(stop_after=None) == 2.0 ** 8  # not 2^16


def test_a_crash_while_saving_keeps_the_previous_model(tmp_path: Path, monkeypatch) -> None:
    from mednet.engines.checkpoints import AtomicCheckpointSaver, load_weights

    net = torch.nn.Linear(2, 1)
    trainer, evaluator = _engines([0.5, 0.9])
    AtomicCheckpointSaver(tmp_path, {"network": net}, evaluator=evaluator, key_metric_name="val_dice").attach(trainer)
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: torch.nn.init.constant_(net.weight, e.state.epoch))
    real_save = torch.save
    partial: list[Path] = []

    def crash_after_partial_write(obj, f, *args, **kwargs):
        if trainer.state.epoch == 2:
            partial.append(Path(f))
            real_save(obj, f)
            with open(f, "r+b") as fh:  # a half-written file, then the process "dies"
                fh.truncate(os.path.getsize(f) // 2)
            raise OSError("No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_after_partial_write)
    with pytest.raises(OSError, match="No space left"):
        trainer.run([0], max_epochs=2)
    restored = load_weights(torch.nn.Linear(2, 1), tmp_path / "model.pt")
    assert float(restored.weight.detach()[0, 0]) == 1.0  # epoch 1's model, intact and loadable
    assert partial[0].parent == tmp_path and partial[0].name.endswith(".pt") and not partial[0].exists()
    assert not (tmp_path / "finished.json").exists() and not (tmp_path / "model_final.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file behind


def test_convergence_png_redraws_within_a_time_share_and_always_shows_the_last_epoch(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """A redraw that costs more than epochs take is skipped (the plot's share of the run stays ≤ max_plot_share),
    but the last epoch — or the last before an early stop — is always drawn; cheap redraws happen every epoch."""
    import time

    import pandas as pd

    import mednet.engines.handlers as handlers

    drawn: list[int] = []

    def slow_plot(csv_path, png, groups=None):  # a redraw as slow as 0.2 s, epochs of almost no time
        time.sleep(0.2)
        drawn.append(len(pd.read_csv(csv_path)))

    monkeypatch.setattr(handlers, "plot_convergence", slow_plot)
    trainer, evaluator = _engines([0.5] * 6)
    handlers.EpochMetricsWriter(tmp_path, evaluator, max_plot_share=0.1).attach(trainer)
    trainer.run([0], max_epochs=6)
    assert drawn[0] == 1 and drawn[-1] == 6 and len(drawn) < 6  # first, then skipped, then the last epoch
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 6  # the CSV itself is written every epoch

    drawn.clear()
    trainer, evaluator = _engines([0.5] * 6)
    handlers.EpochMetricsWriter(tmp_path / "early", evaluator, max_plot_share=0.1).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=4), lambda e: e.terminate())  # e.g. early stopping
    trainer.run([0], max_epochs=6)
    assert drawn[-1] == 4

    drawn.clear()
    trainer, evaluator = _engines([0.5] * 3)
    handlers.EpochMetricsWriter(tmp_path / "always", evaluator, max_plot_share=1e9).attach(trainer)
    trainer.run([0], max_epochs=3)
    assert drawn == [1, 2, 3]


def test_epoch_metrics_csv_is_rewritten_whole(tmp_path: Path) -> None:
    from mednet.engines.handlers import EpochMetricsWriter

    trainer, evaluator = _engines([0.5, 0.6, 0.7])
    EpochMetricsWriter(tmp_path, evaluator, plot=False).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(train_loss=1.0 / e.state.epoch))
    trainer.run([0], max_epochs=3)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and [r["val_dice"] for r in rows] == ["0.5", "0.6", "0.7"]
    assert not _leftovers(tmp_path)


def test_epoch_metrics_keep_validation_columns_when_validation_skips_epochs(tmp_path: Path) -> None:
    """``--val_interval 2``: epoch 1 has no validation, so its row must not fix the columns (the validation metric
    was dropped for the whole run), and epoch 3 must not repeat epoch 2's validation."""
    from mednet.engines.handlers import EpochMetricsWriter

    evaluator = Engine(lambda e, b: None)
    trainer = Engine(lambda e, b: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine: Engine) -> None:
        engine.state.metrics["val_dice"] = trainer.state.epoch / 10

    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=2), lambda e: evaluator.run([0], max_epochs=1))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(train_loss=1.0 / e.state.epoch))
    EpochMetricsWriter(tmp_path, evaluator, plot=False).attach(trainer)
    trainer.run([0], max_epochs=5)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv", encoding="utf-8")))
    assert list(rows[0]) == ["epoch", "train_loss", "val_dice", "elapsed_s"]
    assert [r["val_dice"] for r in rows] == ["", "0.2", "", "0.4", ""]


# --- latest finished run, provenance ---------------------------------------------------------------------


def _run(root: Path, name: str, settings: dict | None, finished: bool) -> Path:
    from mednet.runs import mark_finished, write_run_settings

    run = root / name
    run.mkdir(parents=True)
    torch.save(torch.nn.Linear(2, 1).state_dict(), run / "model.pt")
    if settings is not None:
        write_run_settings(run, settings)
    if finished:
        mark_finished(run, epochs=1)
        time.sleep(0.02)
    return run


def test_latest_run_is_the_newest_finished_compatible_one(tmp_path: Path) -> None:
    from mednet.runs import latest_run, resolve_checkpoint

    wanted = {"variant": "skip", "views": [0, 1, 2]}
    old = _run(tmp_path, "train-skip-20260101-000000", {"variant": "skip", "views": [0, 1, 2]}, True)
    _run(tmp_path, "train-skip-20260102-000000", {"variant": "skip", "views": [2]}, True)
    _run(tmp_path, "train-skip-20260103-000000", {"variant": "skip", "views": [0, 1, 2]}, False)  # crashed
    assert latest_run(tmp_path, "train-skip-", settings=wanted) == old
    assert resolve_checkpoint(None, tmp_path, "train-skip-", wanted) == old / "model.pt"
    assert latest_run(tmp_path, "train-skip-", settings={"views": [2]}).name == "train-skip-20260102-000000"
    # a setting only one side records (added after the run was trained) does not disqualify it
    assert latest_run(tmp_path, "train-skip-", settings={**wanted, "bias_correction": True}) == old
    newer = _run(tmp_path, "train-skip-20260104-000000", None, True)  # no settings.json: unknown settings
    assert latest_run(tmp_path, "train-skip-", settings=wanted) == old  # never the default for named settings
    assert latest_run(tmp_path, "train-skip-") == newer


def test_no_qualifying_run_says_what_was_found_and_the_fix(tmp_path: Path) -> None:
    from mednet.runs import latest_run

    _run(tmp_path, "train-skip-20260102-000000", {"variant": "skip", "views": [2]}, True)
    _run(tmp_path, "train-skip-20260103-000000", {"variant": "skip", "views": [0, 1, 2]}, False)
    with pytest.raises(DataError) as err:
        latest_run(tmp_path, "train-skip-", settings={"variant": "skip", "views": [0, 1, 2]})
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path}: no finished run 'train-skip-*'")
    assert "train-skip-20260103-000000: unfinished (no finished.json" in msg
    assert "train-skip-20260102-000000: other settings: views=[2] (requested [0, 1, 2])" in msg
    assert "--ckpt_path" in msg and "--views '[2]'" in msg
    with pytest.raises(DataError, match="no run 'train-unpool-\\*' found"):
        latest_run(tmp_path, "train-unpool-")


def test_resuming_with_other_settings_is_refused_and_keeps_the_run_settings(tmp_path: Path) -> None:
    """--run_dir continues an interrupted run: its settings.json and patch record are never rewritten to
    describe something else (the earlier epochs' model.pt would carry the wrong settings)."""
    from mednet.runs import write_run_record, write_run_settings

    started = {"variant": "skip", "intensity_normalization": "histogram", "views": [0, 1, 2]}
    # a run that failed before its first epoch (e.g. bad validation data) binds nothing: the corrected command
    # may rewrite its records in the same --run_dir
    write_run_settings(tmp_path, {**started, "views": [2]})
    write_run_record({"patches": 3}, tmp_path, "patch_stats.json")
    path = write_run_settings(tmp_path, started)
    assert json.loads(path.read_text(encoding="utf-8")) == started
    (tmp_path / "checkpoint_last.pt").write_bytes(b"")  # from here on, the run has trained an epoch
    before = path.read_bytes()
    with pytest.raises(DataError) as err:
        write_run_settings(tmp_path, {**started, "intensity_normalization": "zscore", "views": [2]})
    msg = str(err.value)
    assert msg.startswith(f"{path}: the run being resumed was started with intensity_normalization='histogram'")
    assert "--intensity_normalization histogram --views '[0,1,2]'" in msg and "leave out --run_dir" in msg
    assert path.read_bytes() == before
    assert write_run_settings(tmp_path, started) == path and path.read_bytes() == before  # same: untouched
    write_run_settings(tmp_path, {**started, "augmentation": True})  # a setting the file lacks is added
    assert json.loads(path.read_text(encoding="utf-8")) == {**started, "augmentation": True}

    # a split folder recorded as typed by 0.3.2 ("demo/split") is the absolute path 0.3.3 records; a re-made split
    # is refused without a hint to pass an option that does not exist
    old_run = tmp_path / "old_run"
    old_run.mkdir()
    (old_run / "settings.json").write_text(json.dumps({"dataset_dir": "demo/split", "split_fingerprint": "a"}))
    (old_run / "checkpoint_last.pt").write_bytes(b"")
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        (tmp_path / "demo" / "split").mkdir(parents=True)
        write_run_settings(old_run, {"dataset_dir": str(tmp_path / "demo" / "split"), "split_fingerprint": "a"})
        with pytest.raises(DataError, match="another assignment of its split's images .*leave out --run_dir") as err:
            write_run_settings(old_run, {"dataset_dir": str(tmp_path / "demo" / "split"), "split_fingerprint": "b"})
        assert "--split_fingerprint" not in str(err.value)
        with pytest.raises(DataError, match="started with dataset_dir='demo/split'"):
            write_run_settings(old_run, {"dataset_dir": str(tmp_path / "other"), "split_fingerprint": "a"})
    finally:
        os.chdir(cwd)

    stats = {"patches": 10, "share": float("nan"), "views": (0, 1)}
    (tmp_path / "patch_stats.json").unlink()
    record = write_run_record(stats, tmp_path, "patch_stats.json")
    assert json.loads(record.read_text(encoding="utf-8")) == {"patches": 10, "share": None, "views": [0, 1]}
    assert write_run_record(dict(stats), tmp_path, "patch_stats.json") == record
    with pytest.raises(DataError, match="patch_stats.json: the run being resumed was started on other training data"):
        write_run_record({**stats, "patches": 11}, tmp_path, "patch_stats.json")
    assert json.loads(record.read_text(encoding="utf-8"))["patches"] == 10


def test_provenance_and_sidecars(tmp_path: Path) -> None:
    import hashlib

    from mednet.runs import checkpoint_provenance, sidecar_path, write_provenance, write_sidecar

    run = _run(tmp_path, "train-skip-1", {"variant": "skip", "views": [0, 1, 2]}, True)
    prov = checkpoint_provenance(run / "model.pt", {"variant": "skip", "views": (0, 1, 2)}, job="inference")
    assert prov["checkpoint"]["sha256"] == hashlib.sha256((run / "model.pt").read_bytes()).hexdigest()
    assert prov["checkpoint"]["training_settings"] == {"variant": "skip", "views": [0, 1, 2]}
    assert prov["checkpoint"]["training_finished"]["epochs"] == 1
    assert prov["settings"] == {"variant": "skip", "views": [0, 1, 2]} and prov["job"] == "inference"
    assert {"mednet", "monai", "torch"} <= set(prov["versions"])
    with pytest.raises(DataError, match="--views '\\[0,1,2\\]'"):  # never recorded for a checkpoint it may not use
        checkpoint_provenance(run / "model.pt", {"views": [2]})
    path = write_provenance(prov, tmp_path / "eval")
    assert json.loads(path.read_text(encoding="utf-8"))["checkpoint"]["path"] == str((run / "model.pt").resolve())
    with pytest.raises(DataError, match="provenance.json: output already exists"):
        write_provenance(prov, tmp_path / "eval")
    out = tmp_path / "pred" / "subA_T1_seg.nii.gz"
    assert sidecar_path(out) == tmp_path / "pred" / "subA_T1_seg.json"
    side = json.loads(write_sidecar(out, {**prov, "input": "datalist.json"}, input="/data/subA/T1.nii.gz").read_text(encoding="utf-8"))
    assert side["input"].endswith("T1.nii.gz") and side["output"] == str(out.resolve())
    assert side["checkpoint"] == prov["checkpoint"] and side["settings"] == prov["settings"]
    with pytest.raises(DataError, match="already exists"):
        write_sidecar(out, prov)
    write_sidecar(out, {**prov, "job": "again"}, overwrite=True)
    assert json.loads(sidecar_path(out).read_text(encoding="utf-8"))["job"] == "again"


def test_evaluation_counts_labelled_tissue_outside_the_brain_mask(tmp_path: Path, caplog) -> None:
    """Tissue the label map puts outside the mask is predicted background and counts as missed: per_volume.csv
    says how much, and a warning names the volume (training already zeroes it with a warning)."""
    from ignite.engine import Engine
    from monai.data import MetaTensor

    from mednet.engines.segmentation_report import SegmentationReport

    label = torch.zeros(1, 6, 6, 6)
    label[0, 1:5, 1:5, 1:5] = 2
    mask = (label > 0).float()
    label[0, 0, 0, :3] = 3  # three WM voxels outside the mask
    pred = label * mask
    image = MetaTensor(torch.rand(1, 6, 6, 6), affine=torch.eye(4), meta={"filename_or_obj": "/x/sub-09.nii.gz"})
    engine = Engine(lambda e, b: [{"pred": pred, "label": label, "image": image, "mask": mask}])
    SegmentationReport(tmp_path, protocol="test", qualitative=False).attach(engine)
    with caplog.at_level("WARNING"):
        engine.run([0], max_epochs=1)
    rows = list(csv.DictReader(open(tmp_path / "per_volume.csv", encoding="utf-8")))
    assert rows[0]["tissue_voxels_outside_mask"] == "3"
    assert "sub-09: 3 labelled tissue voxel(s) lie outside the brain mask" in caplog.text
    assert "tissue_voxels_outside_mask" not in engine.state.report["mean_over_volumes"]


def test_a_settings_mismatch_suggests_overrides_the_command_line_accepts(tmp_path: Path) -> None:
    """The hint printed `--cosine_head true` (JSON spelling): the option check refuses the text 'true', and no
    option sets cosine_head — --loss ldam does."""
    from mednet.runs import check_run_settings

    (tmp_path / "settings.json").write_text(json.dumps({"cosine_head": True, "augmentation": False,
                                                        "weights_path": None, "views": [0, 1]}), encoding="utf-8")
    with pytest.raises(DataError) as err:
        check_run_settings(tmp_path / "model.pt", {"cosine_head": False, "augmentation": True,
                                                   "weights_path": "w.pt", "views": [2]})
    assert "pass --loss ldam --augmentation False --weights_path None --views '[0,1]' to use it" in str(err.value)


def test_segmentation_report_never_replaces_an_earlier_report(tmp_path: Path) -> None:
    """An --output_dir override pointing at an earlier report: refused with DataError naming the existing file,
    when the handler is attached and again when the evaluator starts (before any volume is evaluated), and
    nothing of the earlier report changes. The evaluation summary is refused the same way."""
    from ignite.engine import Engine
    from monai.data import MetaTensor

    from mednet.engines.segmentation_report import REPORT_FILES, SegmentationReport, write_evaluation_summary

    label = torch.zeros(1, 6, 6, 6)
    label[0, 1:5, 1:5, 1:5] = torch.randint(1, 4, (4, 4, 4), generator=torch.Generator().manual_seed(0)).float()
    image = MetaTensor(torch.rand(1, 6, 6, 6), affine=torch.eye(4), meta={"filename_or_obj": "/x/sub-01.nii.gz"})
    evaluated = []

    def engine() -> Engine:
        def step(e, b):
            evaluated.append(b)
            return [{"pred": label, "label": label, "image": image, "mask": label > 0}]
        return Engine(step)

    first = engine()
    SegmentationReport(tmp_path / "r", protocol="test").attach(first)
    first.run([0], max_epochs=1)
    written = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    assert set(REPORT_FILES) | {"slices_sub-01.png"} == set(written)
    evaluated.clear()

    with pytest.raises(DataError) as err:  # at attach: the evaluator is not even built
        SegmentationReport(tmp_path / "r", protocol="again", qualitative=False).attach(engine())
    assert err.value.path == str(tmp_path / "r" / "metrics.json") and "never overwritten" in err.value.problem

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "slices_old.png").write_bytes(b"png")  # any earlier slice figure counts
    with pytest.raises(DataError) as err:
        SegmentationReport(tmp_path / "s", protocol="again").attach(engine())
    assert err.value.path == str(tmp_path / "s" / "slices_old.png")

    later = engine()
    SegmentationReport(tmp_path / "t", protocol="again").attach(later)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "per_volume.csv").write_text("earlier\n", encoding="utf-8")  # appears before the run
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "t" / "per_volume.csv"))):
        later.run([0], max_epochs=1)
    assert evaluated == [] and sorted(p.name for p in (tmp_path / "t").iterdir()) == ["per_volume.csv"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == written

    reports = {"test": first.state.report}
    write_evaluation_summary(tmp_path, reports, split="test")
    summary = (tmp_path / "summary.md").read_bytes()
    with pytest.raises(DataError) as err:
        write_evaluation_summary(tmp_path, reports, split="other")
    assert err.value.path == str(tmp_path / "summary.md")
    assert (tmp_path / "summary.md").read_bytes() == summary and not _leftovers(tmp_path)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_slice_figure_titles_name_the_axis_not_top_or_bottom(tmp_path: Path, monkeypatch, axis: int) -> None:
    """"top / bottom" only fits axial slices: the columns say the axis, the slice and its place in the brain."""
    import mednet.reports.slice_figures as slice_figures

    label = np.zeros((10, 12, 14), np.uint8)
    label[1:9, 2:10, 3:13] = 2
    titles = []
    real_save = slice_figures.save_figure

    legends = []

    def capture(fig, png, **kwargs):
        titles.extend(ax.get_title() for ax in fig.axes if ax.get_title())
        legends.extend([text.get_text() for text in legend.get_texts()] for legend in fig.legends)
        return real_save(fig, png, **kwargs)

    monkeypatch.setattr(slice_figures, "save_figure", capture)
    png = slice_figures.plot_tissue_slices(label.astype(np.float32), label, label, tmp_path / "s.png", axis=axis)
    assert png.is_file()
    a = axis % 3
    lo, hi = {0: (1, 8), 1: (2, 9), 2: (3, 12)}[a]  # labelled slices along the axis
    picks = [lo + round(q * (hi - lo)) for q in (0.8, 0.5, 0.2)]
    assert titles == [f"axis {a}, slice {s} ({q}% of brain)" for s, q in zip(picks, (80, 50, 20))]
    assert not any(word in t for t in titles for word in ("top", "bottom"))
    assert legends == [["CSF", "grey matter", "white matter"]]  # which colour is which tissue
