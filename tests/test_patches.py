"""Balanced training patches and grid patches (mednet.data.patches)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mednet.data.datasets import CohortPatches
from mednet.data.patch_files import write_grid_patches, write_patches
from mednet.errors import DataError, OptionError
from mednet.io import TEMP_MARKER
from mednet.data.patches import (
    GridPatches,
    PatchSet,
    balance_probabilities,
    class_distribution,
    extract_balanced_patches,
    grid_patches,
    naive_extract_balanced_patches,
    reassemble_grid,
)

BAND = (0.25, 0.42)  # every class share after balancing (course exercise: 34/29/37 %)


def _random_stack(shape=(3, 23, 27), seed=0, bg=0.02):
    """Labels mostly 1–3 in small blobs, with a background border region and sparse background pixels."""
    rng = np.random.default_rng(seed)
    s, h, w = shape
    coarse = rng.integers(1, 4, size=(s, h // 2 + 1, w // 2 + 1))
    lab = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)[:, :h, :w]
    noise = rng.integers(1, 4, size=shape)
    flip = rng.random(shape) < 0.3
    lab = np.where(flip, noise, lab)
    lab[rng.random(shape) < bg] = 0
    lab[:, :, : w // 6] = 0
    image = (rng.normal(size=shape) + lab).astype(np.float32)
    return image, lab.astype(np.uint8)


def _blob_stack(shape=(8, 64, 64), seed=0, biases=(-0.9, 0.35, 0.0)):
    """Smooth random tissue blobs (no background) where class 1 (CSF) is rare."""
    rng = np.random.default_rng(seed)
    fields = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), sigma=(0, 3, 3)) for _ in range(3)])
    fields /= fields.std(axis=(1, 2, 3), keepdims=True)
    lab = (np.argmax(fields + np.asarray(biases)[:, None, None, None], axis=0) + 1).astype(np.uint8)
    image = (lab * 10 + rng.normal(size=shape)).astype(np.float32)
    return image, lab


# ----------------------------------------------------------------------------------------------- selection rule
@pytest.mark.parametrize(
    "patch_size,stride,min_pixels",
    [(4, 1, 2), (5, 2, 3), (6, 3, 0.1), (8, 1, 0.15), (3, 1, 1), (7, 4, 5)],
)
def test_matches_naive_loop(patch_size, stride, min_pixels):
    for seed in range(3):
        image, label = _random_stack(seed=seed)
        fast = extract_balanced_patches(image, label, patch_size, stride, min_pixels, balance=False)
        slow = naive_extract_balanced_patches(image, label, patch_size, stride, min_pixels)
        np.testing.assert_array_equal(fast.positions, slow.positions)
        np.testing.assert_array_equal(fast.images, slow.images)
        np.testing.assert_array_equal(fast.labels, slow.labels)
        assert fast.n_windows == slow.n_windows and fast.n_passed == slow.n_passed == len(fast)


def test_kept_patches_obey_rule_and_positions():
    image, label = _random_stack(shape=(4, 30, 33), seed=5)
    p, m = 6, 4
    for balance in (False, True):
        ps = extract_balanced_patches(image, label, patch_size=p, stride=1, min_pixels=m, balance=balance)
        assert isinstance(ps, PatchSet) and len(ps) > 0
        assert ps.images.dtype == np.float32 and ps.labels.dtype == np.uint8 and ps.positions.dtype == np.int32
        assert ps.images.shape == ps.labels.shape == (len(ps), p, p) and ps.positions.shape == (len(ps), 3)
        assert (ps.labels > 0).all()
        for k in (1, 2, 3):
            assert ((ps.labels == k).sum(axis=(1, 2)) >= m).all()
        for i in range(len(ps)):
            s, r, c = ps.positions[i]
            np.testing.assert_array_equal(ps.images[i], image[s, r:r + p, c:c + p])
            np.testing.assert_array_equal(ps.labels[i], label[s, r:r + p, c:c + p])
        # (slice, row, col) order
        keys = ps.positions[:, 0] * 10**6 + ps.positions[:, 1] * 10**3 + ps.positions[:, 2]
        assert (np.diff(keys) > 0).all()


def test_fraction_min_pixels_rounds_up():
    image, label = _random_stack(seed=2)
    a = extract_balanced_patches(image, label, patch_size=5, min_pixels=0.2, balance=False)  # 5 px
    b = extract_balanced_patches(image, label, patch_size=5, min_pixels=5, balance=False)
    np.testing.assert_array_equal(a.positions, b.positions)


def test_single_slice_accepted():
    image, label = _random_stack(shape=(1, 20, 25), seed=3)
    a = extract_balanced_patches(image[0], label[0], patch_size=4, min_pixels=2, balance=False)
    b = extract_balanced_patches(image, label, patch_size=4, min_pixels=2, balance=False)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert (a.positions[:, 0] == 0).all()


# ----------------------------------------------------------------------------------------------- balancing, seed, cap
def test_seeded_determinism():
    image, label = _blob_stack(seed=1)
    a = extract_balanced_patches(image, label, stride=2, seed=7)
    b = extract_balanced_patches(image, label, stride=2, seed=7)
    c = extract_balanced_patches(image, label, stride=2, seed=8)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.positions, c.positions)
    d = extract_balanced_patches(image, label, stride=2, seed=7, max_patches=50)
    e = extract_balanced_patches(image, label, stride=2, seed=7, max_patches=50)
    np.testing.assert_array_equal(d.positions, e.positions)


def test_balance_raises_rare_class_share_into_band():
    image, label = _blob_stack(seed=0)
    raw = extract_balanced_patches(image, label, patch_size=16, stride=2, min_pixels=8, balance=False)
    bal = extract_balanced_patches(image, label, patch_size=16, stride=2, min_pixels=8, balance=True)
    before, after = raw.class_shares, bal.class_shares
    assert before[0] < 0.2, before  # the construction makes CSF rare
    assert after[0] > before[0] + 0.1
    assert all(BAND[0] <= s <= BAND[1] for s in after), after
    assert np.ptp(after) < np.ptp(before)
    # subset of the unbalanced windows, and not a token few
    raw_keys = {tuple(p) for p in raw.positions}
    assert all(tuple(p) in raw_keys for p in bal.positions)
    assert len(bal) >= 0.05 * len(raw)
    assert bal.n_passed == len(raw)


def test_balance_probabilities_equalise_expected_shares():
    rng = np.random.default_rng(0)
    # GM-dominated compositions, a minority of windows rich in CSF or WM
    mix = rng.dirichlet([1.0, 6.0, 3.0], size=2000)
    counts = np.stack([rng.multinomial(256, m) for m in mix])
    assert ((counts.sum(0) / counts.sum())[0]) < 0.15
    p = balance_probabilities(counts)
    assert p.shape == (2000,) and (p >= 0).all() and (p <= 1).all() and p.max() == 1.0
    shares = (p @ counts) / (p @ counts).sum()
    np.testing.assert_allclose(shares, 1 / 3, atol=2e-3)
    # nothing to balance: one class only present
    assert (balance_probabilities(np.c_[np.zeros(5), np.ones(5), np.zeros(5)]) == 1).all()
    # unreachable target (no window has more than 10 % CSF): best effort, the best window kept for sure
    far = np.tile([[20, 150, 86], [10, 200, 46]], (50, 1))
    q = balance_probabilities(far)
    assert q.max() == 1.0 and np.isfinite(q).all()
    assert (q @ far)[0] / (q @ far).sum() >= (far.sum(0) / far.sum())[0]


def test_balancing_keeps_a_usable_sample_when_equal_shares_are_out_of_reach(caplog):
    """No window is a third CSF: the exact solution kept 1.5 of 1978 windows (one patch for a whole volume, and
    nothing said). The floor keeps 2 % with shares as close to equal as that allows, and warns naming the input."""
    rng = np.random.default_rng(0)
    counts = np.stack([rng.multinomial(256, m) for m in rng.dirichlet([2, 12, 6], 2000)])
    counts = counts[counts[:, 0] / 256 < 0.30]
    natural = counts.sum(0) / counts.sum()
    assert balance_probabilities(counts, min_keep_fraction=0).sum() < 2  # the old behaviour, still available
    with caplog.at_level("WARNING", logger="mednet"):
        p = balance_probabilities(counts, source="sub-07.nii.gz")
    assert p.sum() == pytest.approx(0.02 * len(counts), rel=1e-3)
    shares = (p @ counts) / (p @ counts).sum()
    assert shares[0] > natural[0] + 0.1 and shares[1] < natural[1] - 0.05  # still moved towards equal
    assert "sub-07.nii.gz: balancing the classes to 33%/33%/33% would keep about 2 of" in caplog.text
    # a reachable target that keeps plenty is not touched by the floor
    mix = rng.dirichlet([1.0, 6.0, 3.0], size=2000)
    easy = np.stack([rng.multinomial(256, m) for m in mix])
    np.testing.assert_array_equal(balance_probabilities(easy), balance_probabilities(easy, min_keep_fraction=0))


def test_windows_without_tissue_cannot_be_asked_for():
    """min_pixels 0 and a whole window of background allowed: all-background patches, whose batch loss is 0/0."""
    image, label = _blob_stack(seed=2)
    with pytest.raises(ValueError, match="keeps windows without any tissue"):
        extract_balanced_patches(image, label, stride=2, min_pixels=0, max_background=256)
    assert len(extract_balanced_patches(image, label, stride=2, min_pixels=0, max_background=255)) > 0


def test_max_patches_cap():
    image, label = _blob_stack(seed=2)
    full = extract_balanced_patches(image, label, stride=2, balance=False)
    capped = extract_balanced_patches(image, label, stride=2, balance=False, max_patches=40, seed=3)
    assert len(full) > 40 and len(capped) == 40
    full_keys = {tuple(p) for p in full.positions}
    assert all(tuple(p) in full_keys for p in capped.positions)
    assert len(extract_balanced_patches(image, label, stride=2, max_patches=10**9)) > 40


def test_class_distribution():
    lab = np.array([[0, 1, 2], [2, 3, 3], [3, 3, 0]], dtype=np.uint8)
    d = class_distribution(lab)
    assert d["counts"] == [1, 2, 4] and d["total"] == 7 and d["background"] == 2
    assert d["names"] == ["CSF", "GM", "WM"]
    np.testing.assert_allclose(d["shares"], [1 / 7, 2 / 7, 4 / 7])
    image, label = _blob_stack(seed=0)
    ps = extract_balanced_patches(image, label, stride=4, balance=False)
    assert class_distribution(ps) == class_distribution(ps.labels) == ps.distribution()
    np.testing.assert_array_equal(ps.class_counts, class_distribution(ps)["counts"])
    assert ps.class_counts.sum() == len(ps) * 16 * 16


# ----------------------------------------------------------------------------------------------- errors
def test_errors_name_the_source():
    image, label = _random_stack(shape=(2, 12, 14))
    src = "sub-007_T1w.nii.gz"
    with pytest.raises(DataError, match=r"sub-007_T1w\.nii\.gz.*patch size 16x16.*12x14"):
        extract_balanced_patches(image, label, patch_size=16, source=src)
    with pytest.raises(DataError, match=r"sub-007_T1w\.nii\.gz.*shape"):
        extract_balanced_patches(image, label[:, :, :-1], patch_size=4, source=src)
    with pytest.raises(DataError, match=r"sub-007_T1w\.nii\.gz.*lower min_pixels"):
        extract_balanced_patches(image, label, patch_size=4, min_pixels=10, source=src)
    # a tissue missing from the label: no threshold helps, the message says what is wrong
    with pytest.raises(DataError, match=r"sub-007_T1w\.nii\.gz: the label has no CSF/GM/WM voxel"):
        extract_balanced_patches(image, np.zeros_like(label), patch_size=4, min_pixels=0, source=src)
    no_csf = np.where(label == 1, 2, label)
    for extract in (extract_balanced_patches, naive_extract_balanced_patches):
        with pytest.raises(DataError, match=r"sub-007_T1w\.nii\.gz: the label has no CSF voxel .*training split"):
            extract(image, no_csf, patch_size=4, source=src)
    with pytest.raises(DataError, match="patch size"):
        naive_extract_balanced_patches(image, label, patch_size=13, source=src)
    with pytest.raises(ValueError):
        extract_balanced_patches(image, label, patch_size=4, stride=0)
    with pytest.raises(ValueError):
        extract_balanced_patches(image, label, patch_size=4, classes=(0, 1))


# ----------------------------------------------------------------------------------------------- grid patches
@pytest.mark.parametrize("shape,p", [((3, 37, 53), 16), ((2, 32, 16), 16), ((1, 5, 7), 4)])
def test_grid_round_trip(shape, p):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape).astype(np.float32)
    label = rng.integers(0, 4, size=shape).astype(np.uint8)
    grid = grid_patches(image, label, patch_size=p)
    assert isinstance(grid, GridPatches)
    s, h, w = shape
    nh, nw = -(-h // p), -(-w // p)
    assert grid.padded_shape == (s, nh * p, nw * p) and grid.original_shape == shape
    assert grid.images.shape == grid.labels.shape == (s * nh * nw, p, p) == (len(grid), p, p)
    assert grid.positions.shape == (len(grid), 3) and grid.tiles_per_slice == (nh, nw)
    np.testing.assert_array_equal(reassemble_grid(grid.images, grid), image)
    np.testing.assert_array_equal(reassemble_grid(grid.labels, grid), label)
    # positions index the padded stack
    padded = np.zeros(grid.padded_shape, np.float32)
    padded[:, :h, :w] = image
    for i in range(0, len(grid), 7):
        si, r, c = grid.positions[i]
        np.testing.assert_array_equal(grid.images[i], padded[si, r:r + p, c:c + p])
    # padding is background
    assert grid.labels.sum() == label.sum()
    # channel-first per-tile outputs (e.g. 3-class probabilities) reassemble to (S, C, H, W)
    probs = np.stack([grid.images, grid.images * 2, grid.labels.astype(np.float32)], axis=1)
    out = reassemble_grid(probs, grid)
    assert out.shape == (s, 3, h, w)
    np.testing.assert_array_equal(out[:, 0], image)
    np.testing.assert_array_equal(out[:, 1], image * 2)
    np.testing.assert_array_equal(out[:, 2], label.astype(np.float32))


def test_grid_single_slice_and_errors():
    image = np.arange(20 * 21, dtype=np.float32).reshape(20, 21)
    grid = grid_patches(image, patch_size=8)
    assert grid.labels is None and grid.single_slice and len(grid) == 9
    np.testing.assert_array_equal(reassemble_grid(grid.images, grid), image)
    with pytest.raises(ValueError):
        reassemble_grid(grid.images[:-1], grid)
    with pytest.raises(DataError):
        grid_patches(image, image[:, :-1])


# ----------------------------------------------------------------------------------------------- real MNI data
@pytest.fixture(scope="module")
def mni_slices():
    """~20 axial slices (last axis) around the middle of the MNI152 2009a template, labelled as
    ``argmax([1 − mask, mask·clip(1 − gm − wm, 0, 1), gm, wm])`` (see :mod:`mednet.data.mni`)."""
    from mednet.data.mni import load_mni152_template

    t = load_mni152_template()
    mid = t.label.shape[-1] // 2
    sl = slice(mid - 10, mid + 10)
    return np.moveaxis(t.t1[..., sl], -1, 0), np.moveaxis(t.label[..., sl], -1, 0)


def test_mni_balanced_shares_in_band(mni_slices):
    image, label = mni_slices
    assert image.shape[0] == 20
    before = class_distribution(label)
    assert before["shares"][0] < 0.2 and before["shares"][1] > 0.4  # CSF rare, GM dominant
    raw = extract_balanced_patches(image, label, patch_size=16, stride=2, min_pixels=8, balance=False, source="MNI152")
    bal = extract_balanced_patches(image, label, patch_size=16, stride=2, min_pixels=8, source="MNI152")
    assert raw.class_shares[0] < 0.25  # unbalanced before
    shares = bal.class_shares
    assert all(BAND[0] <= s <= BAND[1] for s in shares), shares
    assert len(bal) > 1000 and (bal.labels > 0).all()
    assert ((bal.labels[:, None] == np.array([1, 2, 3])[None, :, None, None]).sum(axis=(2, 3)) >= 8).all()


@pytest.mark.parametrize("max_background", [3, 0.1, 2.5])
def test_max_background_matches_naive_loop(max_background):
    rng = np.random.default_rng(3)
    label = rng.choice(4, size=(3, 24, 20), p=[0.05, 0.3, 0.35, 0.3]).astype(np.uint8)
    image = rng.random(label.shape).astype(np.float32)
    fast = extract_balanced_patches(image, label, patch_size=6, stride=2, min_pixels=2, balance=False,
                                    max_background=max_background)
    slow = naive_extract_balanced_patches(image, label, patch_size=6, stride=2, min_pixels=2,
                                          max_background=max_background)
    np.testing.assert_array_equal(fast.positions, slow.positions)
    limit = {3: 3, 0.1: 3, 2.5: 2}[max_background]  # at most 0.1 * 36 = 3.6 pixels is 3; at most 2.5 is 2
    assert ((fast.labels == 0).reshape(len(fast), -1).sum(1) <= limit).all()
    assert ((fast.labels == 0).reshape(len(fast), -1).sum(1) == limit).any()  # and the bound is reached
    assert ((fast.labels == 0).any(axis=(1, 2))).any()  # some windows do hold background


@pytest.mark.parametrize("patch_size,min_pixels,max_background", [(1, 0, 1), (1, 0, 1.0), (3, 0, 9), (3, 0.0, 20)])
def test_fast_and_reference_filters_refuse_windows_without_tissue_alike(patch_size, min_pixels, max_background):
    """A rule that lets an all-background window pass is refused by both filters (the reference used to return
    such windows while the fast one refused the setting)."""
    image, label = _random_stack(shape=(2, 9, 9), bg=0.3)
    for extract in (extract_balanced_patches, naive_extract_balanced_patches):
        with pytest.raises(ValueError, match="keeps windows without any tissue"):
            extract(image, label, patch_size=patch_size, stride=1, min_pixels=min_pixels,
                    max_background=max_background)
    # one pixel less background allowed: both accept, and agree
    kw = dict(patch_size=3, stride=1, min_pixels=0, max_background=8)
    fast = extract_balanced_patches(image, label, balance=False, **kw)
    slow = naive_extract_balanced_patches(image, label, **kw)
    np.testing.assert_array_equal(fast.positions, slow.positions)
    assert ((fast.labels > 0).reshape(len(fast), -1).sum(1) >= 1).all()


# ----------------------------------------------------------------------------------------------- patch files
def _tiny_split(root: Path, labelled: list[bool], shape=(20, 20, 5)) -> Path:
    """A datalist whose ``test`` split holds one small NIfTI volume (with a brain mask) per entry of ``labelled``,
    with a tissue label where True. Returns the datalist path."""
    rng = np.random.default_rng(0)
    items = []
    for i, has_label in enumerate(labelled):
        lab = rng.integers(1, 4, size=shape).astype(np.uint8)
        arrays = {"image": (lab * 10 + rng.normal(size=shape)).astype(np.float32), "mask": np.ones(shape, np.uint8)}
        if has_label:
            arrays["label"] = lab
        item = {}
        for key, arr in arrays.items():
            nib.save(nib.Nifti1Image(arr, np.eye(4)), str(root / f"{key}{i}.nii.gz"))
            item[key] = f"{key}{i}.nii.gz"
        items.append(item)
    path = root / "datalist.json"
    path.write_text(json.dumps({"test": items}), encoding="utf-8")
    return path


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if TEMP_MARKER in p.name]


def test_grid_patches_refuse_a_partly_labelled_split(tmp_path):
    """Labels on only some volumes would leave fewer label rows than image rows: refused, naming the volume."""
    datalist = _tiny_split(tmp_path, [True, False, True])
    with pytest.raises(DataError) as err:
        write_grid_patches(str(datalist), str(tmp_path / "out"), split="test", bias_correction="none")
    assert err.value.path == str(tmp_path / "image1.nii.gz")  # the first unlabelled volume
    assert str(err.value).startswith(f"{tmp_path / 'image1.nii.gz'}: ")
    assert "labels on all volumes of the split or on none" in err.value.problem and "'test'" in err.value.problem
    assert not (tmp_path / "out" / "grid_test.npz").exists()


@pytest.mark.parametrize("labelled", [[True, True], [False, False]])
def test_grid_patch_file_is_written_whole_and_aligned(tmp_path, monkeypatch, labelled):
    datalist = _tiny_split(tmp_path, labelled)
    out = tmp_path / "out"
    path = write_grid_patches(str(datalist), str(out), split="test", bias_correction="none")
    assert path == out / "grid_test.npz" and sorted(p.name for p in out.iterdir()) == ["grid_test.npz"]
    with np.load(path) as z:
        n = 2 * 5 * 4  # 2 volumes x 5 axial slices x 2x2 tiles of 16 (20 padded to 32)
        assert z["images"].shape == (n, 16, 16) and z["positions"].shape == (n, 4)
        assert ("labels" in z.files) == labelled[0]
        if labelled[0]:
            assert z["labels"].shape == z["images"].shape
        np.testing.assert_array_equal(np.unique(z["positions"][:, 0]), [0, 1])
    with pytest.raises(DataError, match="already exists"):
        write_grid_patches(str(datalist), str(out), split="test", bias_correction="none")
    write_grid_patches(str(datalist), str(out), split="test", bias_correction="none", overwrite=True)

    def crash(file, **arrays):  # the disk fills up half-way through a rewrite
        Path(file).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(OSError):
        write_grid_patches(str(datalist), str(out), split="test", bias_correction="none", overwrite=True)
    monkeypatch.undo()
    with np.load(path) as z:  # the previous complete file is still there
        assert z["images"].shape == (n, 16, 16)
    assert _leftovers(tmp_path) == []


def test_balanced_patch_files_are_written_whole(tmp_path):
    """``patches_*.npz``, ``stats_*.json`` and ``stats_*.csv`` keep their names and formats, no temporary file left."""
    datalist = _tiny_split(tmp_path, [True, True])
    out = tmp_path / "out"
    npz = write_patches(str(datalist), str(out), split="test", views=2, max_per_volume=20, bias_correction="none")
    assert npz == out / "patches_test.npz"
    assert sorted(p.name for p in out.iterdir()) == ["patches_test.npz", "stats_test.csv", "stats_test.json"]
    patches = CohortPatches.load(npz)
    assert len(patches) == 40 and patches.images.shape == patches.labels.shape == (40, 16, 16)
    assert patches.views == [2] and patches.stats["params"]["views"] == [2]
    assert json.loads((out / "stats_test.json").read_text(encoding="utf-8")) == patches.stats
    with open(out / "stats_test.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["stage"], r["class"]) for r in rows] == [(s, c) for s in ("before", "after") for c in ("CSF", "GM", "WM")]
    with pytest.raises(DataError, match="already exists"):
        write_patches(str(datalist), str(out), split="test", views=2, max_per_volume=20, bias_correction="none")
    write_patches(str(datalist), str(out), split="test", views=2, max_per_volume=20, bias_correction="none",
                  overwrite=True)
    assert _leftovers(tmp_path) == []


def test_patch_cap_takes_the_bundles_option_name_and_its_earlier_spelling(tmp_path):
    """``--max_patches_per_volume`` (the bundle's name) and ``--max_per_volume`` (its earlier spelling) are one cap;
    two different values are refused before any volume is read, naming both options."""
    datalist = _tiny_split(tmp_path, [True, True])
    npz = write_patches(str(datalist), str(tmp_path / "new"), split="test", views=2, max_patches_per_volume=10,
                        bias_correction="none")
    old = write_patches(str(datalist), str(tmp_path / "old"), split="test", views=2, max_per_volume=10,
                        bias_correction="none")
    a, b = CohortPatches.load(npz), CohortPatches.load(old)
    assert len(a) == len(b) == 20 and np.array_equal(a.images, b.images)
    with pytest.raises(OptionError, match="--max_per_volume: 10 disagrees with --max_patches_per_volume 20"):
        write_patches(str(datalist), str(tmp_path / "both"), split="test", views=2, max_per_volume=10,
                      max_patches_per_volume=20, bias_correction="none")
    assert not (tmp_path / "both").exists()


@pytest.mark.parametrize("option, value, flag", [("max_patches_per_volume", -5, "--max_patches_per_volume"),
                                                  ("max_patches_per_volume", 0, "--max_patches_per_volume"),
                                                  ("max_per_volume", 0, "--max_per_volume"),
                                                  ("stride", 0, "--stride"), ("patch_size", 0, "--patch_size"),
                                                  ("views", 5, "--views"), ("views", (0, 3), "--views"),
                                                  ("min_pixels", -1, "--min_pixels")])
def test_bad_patch_numbers_are_refused_before_any_volume_is_read(tmp_path, monkeypatch, option, value, flag):
    """A negative or zero cap, stride or patch size, or an axis that does not exist, was a traceback about an
    internal value after N4 had run (a cap of 0 an empty patch file): one OptionError naming the option now, and no
    volume read."""
    import mednet.data.patch_files as patch_files

    datalist = _tiny_split(tmp_path, [True, True])

    def no_reading(*args, **kwargs):
        raise AssertionError("a volume was read")

    monkeypatch.setattr(patch_files, "extract_cohort_patches", no_reading)
    with pytest.raises(OptionError, match=rf"^{flag}: "):
        write_patches(str(datalist), str(tmp_path / "out"), split="test", bias_correction="none", **{option: value})
    assert not (tmp_path / "out").exists()


def test_other_npz_files_given_as_patch_files_are_refused_naming_them(tmp_path):
    """``--patches_file`` reads :meth:`CohortPatches.load`: a grid-patch file or a slice file (the other ``.npz``
    files mednet writes), or a patch file whose arrays do not fit together, is refused naming the file and what
    is wrong, not loaded as training patches."""
    from mednet.data.slice_files import slice_datalist

    datalist = _tiny_split(tmp_path, [True])
    grid = write_grid_patches(str(datalist), str(tmp_path / "grid"), split="test", bias_correction="none")
    slice_datalist(str(datalist), str(tmp_path / "slices"), split="test", bias_correction="none")
    (sliced,) = (tmp_path / "slices" / "test").glob("*.npz")
    for path, missing in ((grid, "['axes']"), (sliced, "['axes', 'positions', 'volumes']")):
        with pytest.raises(DataError) as err:
            CohortPatches.load(path)
        assert str(err.value) == f"{path}: not a mednet patch file (missing arrays {missing})"

    good = {"images": np.zeros((4, 16, 16), np.float32), "labels": np.ones((4, 16, 16), np.uint8),
            "positions": np.zeros((4, 5), np.int32), "volumes": np.asarray(["v.nii.gz"]), "axes": np.asarray([2])}
    np.savez(tmp_path / "good.npz", **good)
    assert len(CohortPatches.load(tmp_path / "good.npz")) == 4
    for name, change, problem in (
            ("labels", np.ones((4, 16, 8), np.uint8), "images (4, 16, 16) and labels (4, 16, 8) must both be (N, P, P)"),
            ("images", np.zeros((4, 256), np.float32), "images (4, 256) and labels (4, 16, 16) must both be (N, P, P)"),
            ("positions", np.zeros((4, 4), np.int32), "positions must be (N, 5) (volume, axis, slice, row, col), got (4, 4)"),
            ("positions", np.zeros((3, 5), np.int32), "got (3, 5)")):
        path = tmp_path / f"bad_{name}.npz"
        np.savez(path, **{**good, name: change})
        with pytest.raises(DataError) as err:
            CohortPatches.load(path)
        assert str(err.value).startswith(f"{path}: ") and problem in str(err.value), str(err.value)
    with pytest.raises(DataError) as err:
        CohortPatches.load(tmp_path / "missing.npz")
    assert str(err.value) == f"{tmp_path / 'missing.npz'}: patch file does not exist"


def test_tissue_labels_outside_the_brain_mask_are_background_for_training(tmp_path, caplog):
    """A mask tighter than the label (e.g. BET against manual labels): the tissue outside it has zeroed
    intensities, so it is background for training — counted, logged and recorded, never a silent "0 is tissue"."""
    from mednet.data.datasets import extract_cohort_patches

    rng = np.random.default_rng(0)
    shape = (24, 24, 6)
    label = np.zeros(shape, np.uint8)
    label[2:22, 2:22] = rng.integers(1, 4, (20, 20, 6))
    image = np.where(label > 0, 50.0 * label + rng.normal(0, 5, shape), 0).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[2:22, 2:14] = 1  # covers 12 of the 20 labelled columns
    item = {}
    for key, arr in {"image": image, "label": label, "mask": mask}.items():
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / f"{key}.nii.gz"))
        item[key] = str(tmp_path / f"{key}.nii.gz")
    with caplog.at_level("WARNING", logger="mednet"):
        patches = extract_cohort_patches([item], views=[2], patch_size=4, min_pixels=1, bias_correction="none",
                                         progress=False)
    outside = int(((label > 0) & (mask == 0)).sum())
    assert outside == 20 * 8 * 6
    assert patches.stats["per_volume"][0]["tissue_voxels_outside_mask"] == outside
    assert sum(v["pixels"] for v in patches.stats["before"].values()) == int(((label > 0) & (mask > 0)).sum())
    assert f"image.nii.gz: {outside} labelled tissue voxel(s) lie outside the brain mask" in caplog.text
    # slices along axis 2: patch columns are the second axis; beyond the mask (column 14 on) no tissue label
    assert len(patches) > 0
    for c, lab in zip(patches.positions[:, 4], patches.labels):
        assert not (lab[:, max(0, 14 - int(c)):] > 0).any()


def test_grid_patch_labels_outside_the_brain_mask_are_background(tmp_path, caplog):
    """Grid patches follow the training patches' rule: tissue labels outside the brain mask become background
    (their intensities are zeroed), counted in a warning naming the volume; labels inside are kept."""
    from mednet.data.slicing import slice_volume
    from mednet.data.transforms import LoadLabelledVolumed

    rng = np.random.default_rng(1)
    shape = (20, 20, 5)
    label = rng.integers(1, 4, size=shape).astype(np.uint8)
    image = (label * 10 + rng.normal(size=shape)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[:, :12] = 1
    item = {}
    for key, arr in {"image": image, "label": label, "mask": mask}.items():
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / f"{key}.nii.gz"))
        item[key] = f"{key}.nii.gz"
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [item]}), encoding="utf-8")
    with caplog.at_level("WARNING", logger="mednet"):
        path = write_grid_patches(str(datalist), str(tmp_path / "out"), split="test", bias_correction="none")
    outside = int(((label > 0) & (mask == 0)).sum())
    assert outside == 20 * 8 * 5
    assert f"image.nii.gz: {outside} labelled tissue voxel(s) lie outside the brain mask" in caplog.text
    with np.load(path) as z:
        labels, positions, shapes = z["labels"], z["positions"], z["slice_stack_shapes"]
    # reassemble the label slices and compare with the masked label volume, sliced as write_grid_patches does
    d = LoadLabelledVolumed(bias_correction="none")({k: str(tmp_path / v) for k, v in item.items()})
    expected = slice_volume(d["image"], d["label"] * d["mask"], axis=-1).labels
    got = np.zeros((shapes[0][0], 32, 32), labels.dtype)
    for lab, (_, s, r, c) in zip(labels, positions):
        got[s, r:r + 16, c:c + 16] = lab
    np.testing.assert_array_equal(got[:, :20, :20], expected)
    assert expected.sum() > 0 and int((expected > 0).sum()) == int(((label > 0) & (mask > 0)).sum())
