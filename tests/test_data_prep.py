"""data_prep command-line tools on the tiny MNI-derived cohort: demo cohort, slicing, balanced and grid patches."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _bundle_cli import command_in_process
from _killed_replacement import kill_while_moving_in
from mednet.data.brain_demo_cohort import _geometry, build_demo_cohort, split_subjects
from mednet.data.datalist import load_datalist
from mednet.data.patch_files import write_patches
from mednet.data.slice_files import slice_datalist
from mednet.errors import DataError, OptionError
from mednet.io import TEMP_MARKER

REPO = Path(__file__).resolve().parents[1]


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=300)


def test_demo_cohort_layout_and_labels(tiny_cohort: Path) -> None:
    splits = {s: load_datalist(tiny_cohort, s) for s in ("training", "validation", "test")}
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [3, 1, 1]
    rows = list(csv.DictReader(open(tiny_cohort / "cohort.csv")))
    assert [r["subject"] for r in rows] == [f"sub-{i:03d}" for i in range(5)]
    # every geometry the pipeline must handle is present: template grid, anisotropic, LPS other-shape
    assert {r["orientation"] for r in rows} == {"RAS", "LPS"}
    assert len({r["shape"] for r in rows}) >= 3
    for r in rows:
        img = nib.load(tiny_cohort / "images" / f"{r['subject']}.nii.gz")
        lab = nib.load(tiny_cohort / "labels" / f"{r['subject']}.nii.gz")
        assert img.shape == lab.shape and np.allclose(img.affine, lab.affine)
        a, b = img.get_fdata(), np.asarray(lab.dataobj)
        assert set(np.unique(b)) == {0, 1, 2, 3}
        np.testing.assert_array_equal(a == 0, b == 0)  # skull-stripped: intensity 0 exactly where background
        shares = np.bincount(b[b > 0].astype(int), minlength=4)[1:] / (b > 0).sum()
        assert 0.06 < shares[0] < 0.16 and 0.50 < shares[1] < 0.63 and 0.27 < shares[2] < 0.39  # ≈ 10/57/33 %


def test_demo_cohort_is_deterministic_and_refuses_overwrite(tmp_path: Path) -> None:
    a = build_demo_cohort(out=str(tmp_path / "a"), subjects=3, seed=7, zoom=0.3)
    b = build_demo_cohort(out=str(tmp_path / "b"), subjects=3, seed=7, zoom=0.3)
    c = build_demo_cohort(out=str(tmp_path / "c"), subjects=3, seed=8, zoom=0.3)
    for name in ("sub-000", "sub-002"):
        va, vb, vc = (nib.load(p.parent / "images" / f"{name}.nii.gz").get_fdata() for p in (a, b, c))
        np.testing.assert_array_equal(va, vb)
        assert not np.array_equal(va, vc)
    with pytest.raises(DataError, match="not empty"):
        build_demo_cohort(out=str(tmp_path / "a"), subjects=3, seed=7, zoom=0.3)
    with pytest.raises(DataError, match="at least 3"):
        split_subjects(2)
    proc = cli("data_prep.demo_cohort", "--out", str(tmp_path / "a"), "--subjects", "3", "--zoom", "0.3")
    assert proc.returncode == 2 and "not empty" in proc.stderr and str(tmp_path / "a") in proc.stderr


def test_demo_cohort_overwrite_keeps_foreign_files_and_replaces_the_cohort(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    build_demo_cohort(out=str(out), subjects=4, seed=1, zoom=0.2)
    (out / "images" / "mine.txt").write_text("my notes")
    (out / "labels" / "keep.nii.gz").write_bytes(b"not a cohort file")
    (out / "README.md").write_text("mine too")
    before = nib.load(out / "images" / "sub-000.nii.gz").get_fdata()
    build_demo_cohort(out=str(out), subjects=3, seed=2, zoom=0.2, overwrite=True)
    assert (out / "images" / "mine.txt").read_text() == "my notes"
    assert (out / "labels" / "keep.nii.gz").read_bytes() == b"not a cohort file"
    assert (out / "README.md").read_text() == "mine too"
    # the new cohort, complete, and nothing of the old one (it had a 4th subject)
    assert sorted(p.name for p in (out / "images").glob("sub-*")) == [f"sub-{i:03d}.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (out / "labels").glob("sub-*")) == [f"sub-{i:03d}.nii.gz" for i in range(3)]
    assert [r["subject"] for r in csv.DictReader(open(out / "cohort.csv"))] == ["sub-000", "sub-001", "sub-002"]
    assert sum(len(load_datalist(out, s)) for s in ("training", "validation", "test")) == 3
    assert not np.array_equal(nib.load(out / "images" / "sub-000.nii.gz").get_fdata(), before)
    assert not [p for p in out.rglob("*") if TEMP_MARKER in p.name]


def _files(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fail_moving_in(m: pytest.MonkeyPatch, root: Path, at: int, error: BaseException) -> list[Path]:
    """os.replace raises ``error`` on the ``at``-th file moved from a hidden staging folder under ``root`` into place
    (not on the earlier files moved aside or back, nor on atomic writes inside the staging folder); the files moved
    in are listed."""
    real, moves, root = os.replace, [], root.resolve()

    def replace(src, dst, *args, **kwargs):
        parts = Path(src).relative_to(root).parts if Path(src).is_relative_to(root) else ()
        staged = any(TEMP_MARKER in p for p in parts) and "new" in parts
        if staged and not any(TEMP_MARKER in p for p in Path(dst).relative_to(root).parts):
            moves.append(Path(dst))
            if len(moves) == at:
                raise error
        return real(src, dst, *args, **kwargs)

    m.setattr(os, "replace", replace)
    return moves


def test_demo_cohort_overwrite_that_fails_midway_keeps_the_earlier_cohort(tmp_path: Path, monkeypatch) -> None:
    """--overwrite generates the new cohort whole before it replaces the old one: a failure while generating (here
    the second subject), or while the new files are moved in, leaves the earlier cohort byte for byte."""
    import mednet.data.brain_demo_cohort as cohort

    out = tmp_path / "cohort"
    build_demo_cohort(out=str(out), subjects=3, seed=1, zoom=0.2)
    (out / "notes.txt").write_text("mine")
    before = _files(out)
    vary, calls = cohort._vary_intensity, []

    def fail_on_the_second_subject(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return vary(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(cohort, "_vary_intensity", fail_on_the_second_subject)
        with pytest.raises(RuntimeError, match="disk full"):
            build_demo_cohort(out=str(out), subjects=3, seed=2, zoom=0.2, overwrite=True)
    assert _files(out) == before
    assert not [p for p in tmp_path.rglob("*") if TEMP_MARKER in p.name]  # no staging folder left either
    for error in (OSError("disk full"), KeyboardInterrupt()):  # a failed move, or Ctrl-C, while the files move in
        with monkeypatch.context() as m:
            moves = _fail_moving_in(m, tmp_path, at=3, error=error)
            with pytest.raises(type(error)):
                build_demo_cohort(out=str(out), subjects=3, seed=2, zoom=0.2, overwrite=True)
        assert _files(out) == before and len(moves) == 3
        assert not [p for p in tmp_path.rglob("*") if TEMP_MARKER in p.name]
    build_demo_cohort(out=str(out), subjects=3, seed=2, zoom=0.2, overwrite=True)  # the re-run then works
    after = _files(out)
    assert after[Path("notes.txt")] == b"mine" and after[Path("cohort.csv")] != before[Path("cohort.csv")]


def test_demo_cohort_out_under_a_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("a file")
    with pytest.raises(DataError, match=rf"^{re.escape(str(blocker))}: is a file, not a folder \(--out "):
        build_demo_cohort(out=str(blocker / "cohort"), subjects=3, zoom=0.2)
    assert sorted(tmp_path.iterdir()) == [blocker]


@pytest.mark.parametrize("options, option", [
    ({"zoom": 0}, "--zoom"), ({"zoom": 1.5}, "--zoom"), ({"zoom": "abc"}, "--zoom"),
    ({"subjects": "abc"}, "--subjects"), ({"subjects": 2}, "--subjects"), ({"subjects": 3.5}, "--subjects"),
    ({"seed": "x"}, "--seed"), ({"seed": -1}, "--seed"),
])
def test_demo_cohort_bad_options_are_refused_before_creating_anything(tmp_path: Path, options: dict, option: str) -> None:
    out = tmp_path / "new" / "cohort"
    with pytest.raises(OptionError, match=f"^{option}: "):
        build_demo_cohort(out=str(out), **{"subjects": 3, "zoom": 0.2, **options})
    assert not (tmp_path / "new").exists()
    # the corrected options then work (nothing half-made blocks them as "not empty")
    if option == "--zoom":
        build_demo_cohort(out=str(out), subjects=3, zoom=0.2)
        assert (out / "datalist.json").exists()


def test_demo_cohort_out_being_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    out.write_text("a file")
    with pytest.raises(DataError, match=rf"^{re.escape(str(out))}: is a file, not a folder; choose another --out$"):
        build_demo_cohort(out=str(out), subjects=3, zoom=0.2)
    assert out.read_text() == "a file" and sorted(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("index", [1, 2])
def test_demo_cohort_resampling_keeps_labels_on_the_image(index: int) -> None:
    """Each resampled subject's labels stay where the template's are in world space (no half-voxel shift)."""
    import torch
    from monai.data import MetaTensor

    from mednet.data.mni import load_mni152_template

    t = load_mni152_template(zoom=0.5)

    def centroids(label: np.ndarray, affine: np.ndarray) -> np.ndarray:  # brain, CSF, GM, WM (world mm)
        return np.stack([(affine @ np.r_[np.argwhere(np.isin(label, c)).mean(0), 1])[:3]
                         for c in ((1, 2, 3), (1,), (2,), (3,))])

    data = {k: MetaTensor(torch.from_numpy(v[None].astype(np.float32)), affine=torch.as_tensor(t.affine))
            for k, v in (("image", t.t1), ("label", t.label))}
    out = _geometry(index, zoom=0.5)(data)
    affine = np.asarray(out["label"].affine, dtype=float)
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    shift = np.abs(centroids(np.rint(out["label"][0].numpy()), affine) - centroids(t.label, t.affine)) / voxel
    # a half-voxel shift moves the whole brain by 0.5 voxel; thin CSF moves by up to ≈ 0.4 of these coarse
    # (2–4 mm) voxels by nearest-neighbour sampling alone, so it gets a looser bound
    assert np.all(shift[[0, 2, 3]] < 0.15) and np.all(shift[1] < 0.45), f"labels shifted by {shift.round(2)} voxels"


def test_slice_cli(tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "slices"
    proc = cli("data_prep.slice", "--datalist", str(tiny_cohort / "datalist.json"), "--out", str(out),
               "--split", "training", "--axis", "1", "--drop_empty")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "slices.csv")))
    files = sorted((out / "training").glob("*.npz"))
    assert len(files) == 3
    with np.load(files[0]) as z:
        assert z["images"].ndim == 3 and z["labels"].shape == z["images"].shape and int(z["axis"]) == 1
        assert len(z["indices"]) == len(z["images"]) < z["volume_shape"][1]  # empty slices dropped
        assert (z["labels"].reshape(len(z["labels"]), -1) > 0).any(1).all()
    assert len(rows) == sum(len(np.load(f)["indices"]) for f in files)
    assert {r["axis"] for r in rows} == {"1"} and all(int(r["foreground_pixels"]) > 0 for r in rows)
    again = command_in_process(slice_datalist, "--datalist", str(tiny_cohort / "datalist.json"), "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_patches_cli_balances_classes(tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "patches"
    proc = cli("data_prep.patches", "--datalist", str(tiny_cohort / "datalist.json"), "--out", str(out),
               "--stride", "1", "--min_pixels", "8", "--max_patches_per_volume", "2000")
    assert proc.returncode == 0, proc.stderr
    assert "before" in proc.stdout and "after" in proc.stdout
    stats = json.loads((out / "stats_training.json").read_text(encoding="utf-8"))
    before = [stats["before"][n]["share"] for n in ("CSF", "GM", "WM")]
    after = [stats["after"][n]["share"] for n in ("CSF", "GM", "WM")]
    assert before[0] < 0.2 and before[1] > 0.45  # brain pixels: CSF rare, GM dominant
    assert all(0.25 <= s <= 0.42 for s in after), after  # kept patches: balanced
    with np.load(out / "patches_training.npz") as z:
        images, labels, positions = z["images"], z["labels"], z["positions"]
        assert images.shape[1:] == (16, 16) and labels.shape == images.shape and positions.shape == (len(images), 5)
        assert set(np.unique(positions[:, 1])) == {0, 1, 2} and list(z["axes"]) == [0, 1, 2]  # all three planes
        assert labels.min() >= 1  # no background pixel in any patch
        per_class = np.stack([(labels == c).reshape(len(labels), -1).sum(1) for c in (1, 2, 3)], 1)
        assert per_class.min() >= 8
        assert len(images) <= 3 * 2000
    rows = list(csv.DictReader(open(out / "stats_training.csv")))
    assert {(r["stage"], r["class"]) for r in rows} == {(s, c) for s in ("before", "after") for c in ("CSF", "GM", "WM")}

    grid = command_in_process(write_patches, "--datalist", str(tiny_cohort / "datalist.json"), "--out", str(out),
                              "--split", "test", "--grid")
    assert grid.returncode == 0, grid.stderr
    with np.load(out / "grid_test.npz") as z:
        (s, h, w), = z["slice_stack_shapes"]
        assert len(z["images"]) == s * -(-h // 16) * -(-w // 16)  # whole slices covered, no overlap

    too_big = command_in_process(write_patches, "--datalist", str(tiny_cohort / "datalist.json"),
                                 "--out", str(tmp_path / "x"), "--patch_size", "512")
    assert too_big.returncode == 2 and "512" in too_big.stderr and "sub-000" in too_big.stderr


def test_patches_of_each_plane_come_from_where_their_positions_say(tiny_cohort: Path) -> None:
    from mednet.data.datalist import load_datalist
    from mednet.data.datasets import extract_cohort_patches
    from mednet.data.transforms import LoadLabelledVolumed

    patches = extract_cohort_patches(tiny_cohort / "datalist.json", views=(2, 0), max_per_volume=301, progress=False,
                                     bias_correction="none")  # N4 is not what is tested here
    assert patches.views == [2, 0] and patches.stats["params"]["views"] == [2, 0]
    pos = patches.positions
    per_volume_axis = np.bincount(pos[:, 0] * 3 + pos[:, 1], minlength=9).reshape(3, 3)
    assert (per_volume_axis[:, [0, 2]] > 0).all() and (per_volume_axis[:, 1] == 0).all()
    assert (per_volume_axis.sum(1) <= 302).all()  # the per-volume cap is shared by the axes (151 each)
    items = load_datalist(tiny_cohort / "datalist.json", "training")
    vols = [LoadLabelledVolumed(intensity_normalization="histogram", bias_correction="none")(item) for item in items]
    rng = np.random.default_rng(0)
    for i in rng.choice(len(patches), size=20, replace=False):
        v, axis, s, r, c = (int(x) for x in pos[i])
        img = np.moveaxis(vols[v]["image"][0].numpy(), axis, 0)[s]
        lab = np.moveaxis(vols[v]["label"][0].numpy(), axis, 0)[s]
        np.testing.assert_allclose(patches.images[i], img[r:r + 16, c:c + 16], atol=1e-6)
        np.testing.assert_array_equal(patches.labels[i], lab[r:r + 16, c:c + 16])
    with pytest.raises(ValueError, match="twice"):
        extract_cohort_patches(tiny_cohort / "datalist.json", views=(2, -1), progress=False)
    with pytest.raises(ValueError, match="spatial axes"):
        extract_cohort_patches(tiny_cohort / "datalist.json", views=3, progress=False)


def test_patch_file_feeds_the_training_dataset(tiny_cohort: Path, tmp_path: Path) -> None:
    """A patches file written once (``data_prep.patches``) is what ``train.json --patches_file`` reads."""
    import torch

    from mednet.data.datasets import CohortPatches, PatchDataset, extract_cohort_patches

    patches = extract_cohort_patches(tiny_cohort / "datalist.json", max_per_volume=200, progress=False,
                                     max_background=0.25, bias_correction="none")
    path = patches.save(tmp_path / "p.npz")
    with pytest.raises(DataError, match="already exists"):
        patches.save(path)
    ds = PatchDataset(str(path))
    assert len(ds) == len(patches) and ds.patches.stats["params"]["max_background"] == 0.25
    item = ds[0]
    assert item["image"].shape == item["label"].shape == (1, 16, 16)
    assert item["label"].dtype == torch.int64 and int(item["label"].min()) >= -1 and int(item["label"].max()) <= 2
    np.testing.assert_array_equal(ds.labels[:, 0].numpy() + 1, patches.labels)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        CohortPatches.load(tmp_path / "bad.npz")


def test_a_prepared_patch_file_must_come_from_the_runs_training_split(tiny_cohort: Path, tmp_path: Path) -> None:
    from mednet.data.datasets import check_patch_params, check_patch_source, extract_cohort_patches

    datalist = tiny_cohort / "datalist.json"
    training = extract_cohort_patches(datalist, max_per_volume=31, progress=False, max_background=0.25,
                                      bias_correction="none")
    per_volume: dict[str, int] = {}
    for row in training.stats["per_volume"]:
        per_volume[row["volume"]] = per_volume.get(row["volume"], 0) + row["patches"]
    assert max(per_volume.values()) <= 33  # the cap shared by the three views, rounded up per view (11 each)
    assert check_patch_source(training, "p.npz", datalist) is training
    check_patch_params(training, "p.npz", patch_size=16, max_background=0.25, min_pixels=8, stride=1)
    with pytest.raises(DataError, match=r"p.npz: patches were extracted with patch_size=16 \(this run: 32\)"):
        check_patch_params(training, "p.npz", patch_size=32, max_background=0.25)
    validation = extract_cohort_patches(datalist, split="validation", max_per_volume=30, progress=False,
                                        bias_correction="none")
    with pytest.raises(DataError, match="p.npz: patches were extracted from the 'validation' split"):
        check_patch_source(validation, "p.npz", datalist)
    # the same file claiming the training split is still refused: its volume is the validation volume
    validation.stats["params"]["split"] = "training"
    with pytest.raises(DataError, match="in its 'validation' split"):
        check_patch_source(validation, "p.npz", datalist)
    other = tmp_path / "other.json"  # another cohort's datalist: the volumes are in no split of it
    other.write_text(json.dumps({"training": [load_datalist(datalist, "test")[0]]}), encoding="utf-8")
    with pytest.raises(DataError, match="in no split of"):
        check_patch_source(training, "p.npz", other)


def test_slice_failure_on_a_later_volume_leaves_nothing_and_the_rerun_works(tiny_cohort: Path, tmp_path: Path) -> None:
    """A bad third volume: refused naming it, no per-volume files left behind; once fixed, the re-run succeeds
    without --overwrite (nothing of the failed run blocks it)."""
    from mednet.data.slice_files import slice_datalist

    src = load_datalist(tiny_cohort, "training")[:3]
    for name, item in zip("abc", src):
        for key, folder in (("image", "images"), ("label", "labels")):
            (tmp_path / folder).mkdir(exist_ok=True)
            shutil.copy(item[key], tmp_path / folder / f"{name}.nii.gz")
    good_label = tmp_path / "c_label_ok.nii.gz"
    shutil.copy(tmp_path / "labels" / "c.nii.gz", good_label)
    lab = nib.load(good_label)
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[:-3], lab.affine), tmp_path / "labels" / "c.nii.gz")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": f"images/{n}.nii.gz", "label": f"labels/{n}.nii.gz"}
                                                 for n in "abc"]}))
    out = tmp_path / "slices"
    options = dict(split="training", axis=-1, intensity_normalization="scale", bias_correction="none")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "labels" / "c.nii.gz"))):
        slice_datalist(str(datalist), str(out), **options)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in tmp_path.iterdir() if TEMP_MARKER in p.name) == []  # no staging folder left
    shutil.copy(good_label, tmp_path / "labels" / "c.nii.gz")
    index = slice_datalist(str(datalist), str(out), **options)
    assert sorted(p.name for p in (out / "training").iterdir()) == ["a_axis2.npz", "b_axis2.npz", "c_axis2.npz"]
    assert {r["name"] for r in csv.DictReader(open(index))} == {"a", "b", "c"}
    # every output is refused up front: one per-volume file alone (no slices.csv) is enough, and nothing is loaded
    (out / "slices.csv").unlink()
    (out / "training" / "a_axis2.npz").unlink()
    with pytest.raises(DataError, match=re.escape(str(out / "training" / "b_axis2.npz")) + ": output already exists"):
        slice_datalist(str(datalist), str(out), **options)
    assert not (out / "training" / "a_axis2.npz").exists()


def _tiny_datalist(folder: Path) -> Path:
    """Two tiny labelled volumes (24×24×12, all four labels) and their datalist: slicing them takes milliseconds."""
    rng = np.random.default_rng(0)
    items = []
    for name in ("a", "b"):
        label = np.zeros((24, 24, 12), np.uint8)
        label[2:-2, 2:-2, 1:-1] = rng.integers(1, 4, (20, 20, 10))
        image = ((label * 100.0 + rng.uniform(1, 20, label.shape)) * (label > 0)).astype(np.float32)
        for data, sub in ((image, "images"), (label, "labels")):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / sub / f"{name}.nii.gz"))
        items.append({"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz"})
    (folder / "datalist.json").write_text(json.dumps({"training": items}))
    return folder / "datalist.json"


def test_slicing_overwrite_interrupted_or_killed_keeps_the_earlier_slice_set(tmp_path: Path, monkeypatch) -> None:
    """--overwrite over an earlier slice set: Ctrl-C while the new files move in leaves the earlier set byte for
    byte; a run killed outright (SIGKILL) midway is rolled back by the next run before it checks anything (so
    without --overwrite it refuses the earlier set, unchanged); with --overwrite the set is then replaced whole."""
    datalist = _tiny_datalist(tmp_path / "data")
    out = tmp_path / "slices"
    options = dict(split="training", axis=-1, intensity_normalization="scale", bias_correction="none")
    slice_datalist(str(datalist), str(out), **options)
    before = _files(out)
    assert sorted(map(str, before)) == ["slices.csv", "training/a_axis2.npz", "training/b_axis2.npz"]
    with monkeypatch.context() as m:
        moves = _fail_moving_in(m, tmp_path, at=2, error=KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            slice_datalist(str(datalist), str(out), overwrite=True, drop_empty=True, **options)
    assert _files(out) == before and len(moves) == 2
    assert not [p for p in tmp_path.rglob("*") if TEMP_MARKER in p.name]
    if os.name == "posix":
        names = [str(rel) for rel in before if rel.name != "slices.csv"] + ["slices.csv"]
        proc = kill_while_moving_in(out, names, kill_at=2)
        assert proc.returncode == -9, proc.stderr
        assert _files(out) != before and [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]
        with pytest.raises(DataError, match="output already exists"):
            slice_datalist(str(datalist), str(out), **options)
        assert _files(out) == before and not [p for p in tmp_path.rglob("*") if TEMP_MARKER in p.name]
    slice_datalist(str(datalist), str(out), overwrite=True, drop_empty=True, **options)
    after = _files(out)
    assert set(after) == set(before) and all(after[k] != before[k] for k in after)
    assert not [p for p in tmp_path.rglob("*") if TEMP_MARKER in p.name]


def test_slicing_overwrite_along_another_axis_retires_the_earlier_set(tmp_path: Path) -> None:
    """--overwrite replaces the earlier set whole: slices of the earlier axis (listed by the earlier slices.csv, not
    by the new one) used to stay beside the new files, so a glob of *.npz mixed two axes."""
    datalist = _tiny_datalist(tmp_path / "data")
    out = tmp_path / "slices"
    options = dict(split="training", intensity_normalization="scale", bias_correction="none")
    slice_datalist(str(datalist), str(out), axis=2, **options)
    slice_datalist(str(datalist), str(out), axis=0, overwrite=True, **options)
    assert sorted(map(str, _files(out))) == ["slices.csv", "training/a_axis0.npz", "training/b_axis0.npz"]
    (tmp_path / "mine.npz").write_bytes(b"a file outside --out")  # named by a hand-edited index: never touched
    with open(out / "slices.csv", "a", encoding="utf-8") as f:
        f.write(f"training,x,mine,0,0,{tmp_path / 'mine.npz'},1\n")
    slice_datalist(str(datalist), str(out), axis=1, overwrite=True, **options)
    assert sorted(map(str, _files(out))) == ["slices.csv", "training/a_axis1.npz", "training/b_axis1.npz"]
    assert (tmp_path / "mine.npz").read_bytes() == b"a file outside --out"


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_demo_cohort_after_a_run_killed_while_moving_in(tmp_path: Path) -> None:
    """A cohort run killed outright (SIGKILL) with 2 new files in place: the next run puts the earlier cohort back
    before its "not empty" check (so it refuses it, unchanged, without --overwrite) and leaves no hidden folder."""
    out = tmp_path / "cohort"
    build_demo_cohort(out=str(out), subjects=3, seed=1, zoom=0.2)
    before = _files(out)
    names = [str(rel) for rel in before if rel.name != "datalist.json"] + ["datalist.json"]
    proc = kill_while_moving_in(out, names, kill_at=2)
    assert proc.returncode == -9, proc.stderr
    assert _files(out) != before and [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]
    with pytest.raises(DataError, match="not empty"):
        build_demo_cohort(out=str(out), subjects=3, seed=1, zoom=0.2)
    assert _files(out) == before and not [p for p in tmp_path.rglob("*") if TEMP_MARKER in p.name]


def test_demos_refuse_to_reuse_data_made_with_other_options(tmp_path: Path) -> None:
    """A demo folder holds a cohort / synthetic set from an earlier command: reusing it under other --subjects,
    --seed, --images or --size would train on other data than asked for, while the report said otherwise."""
    from mednet.app.brain_demo import _check_reused_cohort
    from mednet.app.dermoscopy_demo import _check_reused_set

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    from mednet.data.brain_demo_cohort import GENERATOR

    (cohort / "cohort.csv").write_text("subject,split,seed,generator\n" + "".join(
        f"sub-{i:03d},training,2,{GENERATOR}\n" for i in range(6)), encoding="utf-8")
    _check_reused_cohort(cohort, subjects=6, seed=2)
    with pytest.raises(OptionError) as err:
        _check_reused_cohort(cohort, subjects=4, seed=0)
    assert set(err.value.problems) == {"--subjects", "--seed"}
    assert "was built with --subjects 6; pass --subjects 6 to reuse it" in str(err.value)
    # a cohort an earlier generator made (seed column 1000 · seed + i, no generator) holds other subjects
    (cohort / "cohort.csv").write_text("subject,split,seed\n" + "".join(f"sub-{i:03d},training,{2000 + i}\n"
                                                                       for i in range(6)), encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(str(cohort / "cohort.csv")) + ": this demo cohort was made by an "
                                        "earlier mednet"):
        _check_reused_cohort(cohort, subjects=6, seed=2)

    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    (synthetic / "synthetic.json").write_text(json.dumps({"seed": 0, "n_images": 2000, "size": 64}), encoding="utf-8")
    _check_reused_set(synthetic, images=2000, size=64, seed=0)
    with pytest.raises(OptionError, match="--size: the synthetic set in .* was made with --size 64"):
        _check_reused_set(synthetic, images=2000, size=32, seed=0)
