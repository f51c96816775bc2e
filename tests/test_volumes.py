"""Tests for :mod:`mednet.data.volumes` and :class:`mednet.errors.DataError`.

Tiny volumes (12 x 10 x 8 voxels) are written with nibabel (and one DICOM series with SimpleITK) into
``tmp_path``. Every bad input must raise a :class:`DataError` whose message starts with the offending file's
path and says, in words, what is wrong. Good inputs must come back as ``(1, X, Y, Z)`` RAS MetaTensors, and
labels computed on that RAS grid must be written back with the input file's own shape, affine and voxel order.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from mednet.errors import DataError
from mednet.data.datalist import list_volume_inputs
from mednet.data.transforms import LoadLabelledVolumed, output_name
from mednet.data.volumes import (
    check_volume_headers,
    check_label_values,
    describe_volume,
    load_labelled_volume,
    load_volume,
    normalize_brain_intensity,
    save_label_volume,
)
from mednet.io import refuse_existing

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

SHAPE = (12, 10, 8)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _write(path: Path, array: np.ndarray, affine: np.ndarray = np.eye(4)) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _image(seed: int = 0) -> np.ndarray:
    """Strictly positive intensities, unique per voxel (so any axis flip or permutation is visible)."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(np.prod(SHAPE)).reshape(SHAPE) + 1.0).astype(np.float32)


def _label(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, SHAPE).astype(np.uint8)


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    return _write(tmp_path / "img.nii.gz", _image()), _write(tmp_path / "lab.nii.gz", _label())


def _assert_data_error(err: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)
    msg = str(err.value)
    assert err.value.path == str(path)
    assert msg.startswith(f"{path}: "), msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


# ------------------------------------------------------------------ DataError itself


def test_data_error_message_format():
    e = DataError(Path("/a/b.nii.gz"), "is broken")
    assert str(e) == "/a/b.nii.gz: is broken" and e.path == "/a/b.nii.gz" and e.problem == "is broken"
    e = DataError(None, "no file involved")
    assert str(e) == "no file involved" and e.path is None
    assert issubclass(DataError, ValueError)


# ------------------------------------------------------------------ unreadable files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(DataError) as err:
        load_volume(path)
    _assert_data_error(err, path, "image", "does not exist")
    with pytest.raises(DataError) as err:
        load_volume(path, kind="label")
    _assert_data_error(err, path, "label file does not exist")


def test_missing_label_in_pair(pair, tmp_path):
    image, _ = pair
    path = tmp_path / "no_label.nii.gz"
    with pytest.raises(DataError) as err:
        load_labelled_volume(image, path)
    _assert_data_error(err, path, "label file does not exist")


def test_random_bytes_nifti(tmp_path):
    path = tmp_path / "random.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(600))
    with pytest.raises(DataError) as err:
        load_volume(path)
    _assert_data_error(err, path, "cannot read image")


def test_truncated_nifti(tmp_path):
    good = _write(tmp_path / "good.nii.gz", _image())
    data = good.read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        load_volume(path)
    _assert_data_error(err, path, "cannot read image")
    assert "\n" not in err.value.problem  # one line, not a traceback


# ------------------------------------------------------------------ inconsistent pairs


def test_label_shape_mismatch(pair, tmp_path):
    image, _ = pair
    path = _write(tmp_path / "short.nii.gz", _label()[:11])
    with pytest.raises(DataError) as err:
        load_labelled_volume(image, path)
    _assert_data_error(err, path, "does not match its image", str(image), "(11, 10, 8)", "(12, 10, 8)")


def test_label_affine_mismatch(pair, tmp_path):
    image, _ = pair
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    path = _write(tmp_path / "shifted.nii.gz", _label(), shifted)
    with pytest.raises(DataError) as err:
        load_labelled_volume(image, path)
    _assert_data_error(err, path, "does not match its image", "affine")


def test_mask_affine_mismatch(pair, tmp_path):
    image, label = pair
    scaled = np.diag([2.0, 1.0, 1.0, 1.0])
    path = _write(tmp_path / "mask.nii.gz", np.ones(SHAPE, np.uint8), scaled)
    with pytest.raises(DataError) as err:
        load_labelled_volume(image, label, path)
    _assert_data_error(err, path, "mask does not match its image")


# ------------------------------------------------------------------ bad values


@pytest.mark.parametrize("bad, shown", [(5, "5"), (1.5, "1.5"), (-1, "-1")])
def test_label_values_outside_allowed_set(pair, tmp_path, bad, shown):
    image, _ = pair
    lab = _label().astype(np.float32)
    lab[3, 4, 5] = bad
    path = _write(tmp_path / "bad_values.nii.gz", lab)
    with pytest.raises(DataError) as err:
        load_labelled_volume(image, path)
    _assert_data_error(err, path, "label values", "not in the allowed set", "[0, 1, 2, 3]")
    assert "{" + shown + "}" in str(err.value)


@pytest.mark.parametrize("bad, count", [(np.nan, 1), (np.inf, 2), (-np.inf, 3)])
def test_non_finite_intensities(tmp_path, bad, count):
    img = _image()
    img.reshape(-1)[:count] = bad
    path = _write(tmp_path / "nonfinite.nii.gz", img)
    with pytest.raises(DataError) as err:
        load_volume(path)
    _assert_data_error(err, path, f"{count} NaN/Inf voxel(s)")


def test_2d_image(tmp_path):
    path = _write(tmp_path / "flat.nii.gz", _image()[:, :, 0])
    with pytest.raises(DataError) as err:
        load_volume(path)
    _assert_data_error(err, path, "expected a 3D image volume", "(12, 10)", "2D")


def test_single_slice_3d_image(tmp_path):
    path = _write(tmp_path / "slab.nii.gz", _image()[:, :, :1])
    with pytest.raises(DataError) as err:
        load_volume(path)
    _assert_data_error(err, path, "expected a 3D image volume", "(12, 10, 1)", "2D image")


def test_4d_image_with_three_volumes(tmp_path):
    path = _write(tmp_path / "series.nii.gz", np.stack([_image(i) for i in range(3)], axis=-1))
    with pytest.raises(DataError) as err:
        load_volume(path)
    _assert_data_error(err, path, "expected a 3D image volume", "4D")


@pytest.mark.parametrize("trailing", [(1,), (1, 1)])
def test_3d_image_with_singleton_trailing_axes_is_3d(tmp_path, trailing):
    image = _image()
    path = _write(tmp_path / "singleton.nii.gz", image.reshape(image.shape + trailing))
    loaded = load_volume(path)
    assert tuple(loaded.shape) == (1, *SHAPE)
    np.testing.assert_allclose(loaded[0].numpy(), load_volume(_write(tmp_path / "plain.nii.gz", image))[0].numpy())


def test_volume_headers_are_checked_before_any_volume_is_loaded(tmp_path):
    good = _write(tmp_path / "good.nii.gz", _image())
    mha = tmp_path / "good.mha"
    mha_image = sitk.GetImageFromArray(_image().T.copy())
    mha_image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # LPS: the NIfTI's identity RAS grid
    sitk.WriteImage(mha_image, str(mha))
    items = [{"image": str(good)}, {"image": str(mha), "mask": str(good)}]
    assert check_volume_headers(items) == items
    text = tmp_path / "notes.nii.gz"
    text.write_text("scan of subject 7\n", encoding="utf-8")
    series = _write(tmp_path / "series.nii.gz", np.stack([_image(i) for i in range(3)], axis=-1))
    flat = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_image()[:, :, 0].T.copy()), str(flat))
    for bad, item, words in [
        (text, {"image": str(text)}, ("cannot read the image's header", "not a gzip file")),
        (series, {"image": str(good), "mask": str(series)}, ("expected a 3D mask volume", "4D")),
        (flat, {"image": str(flat)}, ("expected a 3D image volume", "2D")),
        (tmp_path / "gone.nii.gz", {"image": str(good), "label": str(tmp_path / "gone.nii.gz")}, ("does not exist",)),
    ]:
        with pytest.raises(DataError) as err:
            check_volume_headers([{"image": str(good)}, item])  # the second item: no volume is read before it
        _assert_data_error(err, bad, *words)


def test_all_background_label(pair, tmp_path):
    image, _ = pair
    path = _write(tmp_path / "empty_label.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(DataError) as err:
        load_labelled_volume(image, path)
    _assert_data_error(err, path, "all background")


def test_all_zero_image(tmp_path):
    path = _write(tmp_path / "zero.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.raises(DataError) as err:
        load_labelled_volume(path)
    _assert_data_error(err, path, "all zero")


def test_empty_mask(pair, tmp_path):
    image, label = pair
    path = _write(tmp_path / "mask.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(DataError) as err:
        load_labelled_volume(image, label, path)
    _assert_data_error(err, path, "brain mask is empty")


@pytest.mark.parametrize("column", [2, 0], ids=["zero-z-column", "zero-x-column"])
def test_singular_affine_is_named(tmp_path, column):
    """A broken orientation header (an sform with a zero column) is named, not a reorientation traceback."""
    path = tmp_path / "broken_header.nii.gz"
    img = nib.Nifti1Image(_image(), np.eye(4))
    sform = np.eye(4)
    sform[:3, column] = 0.0
    img.set_sform(sform, code=1)
    img.set_qform(None, code=0)
    nib.save(img, str(path))
    with pytest.raises(DataError) as err:
        load_volume(path)
    _assert_data_error(err, path, "singular voxel-to-world affine", "header")


def test_mask_that_misses_the_image_is_refused(tmp_path):
    """A mask over voxels where the image is 0 (another scan's mask) would normalise to NaN or a flat 0.5."""
    image = _image()
    image[:6] = 0.0
    mask = np.zeros(SHAPE, np.uint8)
    mask[:6] = 1
    img_path, mask_path = _write(tmp_path / "img.nii.gz", image), _write(tmp_path / "mask.nii.gz", mask)
    with pytest.raises(DataError) as err:
        load_labelled_volume(img_path, mask=mask_path)
    _assert_data_error(err, img_path, "inside the brain mask", str(mask_path), "does not cover")


@pytest.mark.parametrize("with_mask", [False, True], ids=["no-mask", "mask"])
def test_constant_brain_is_refused(tmp_path, with_mask):
    """A binary mask given as the image has no tissue contrast: refused instead of segmented as noise."""
    image = np.zeros(SHAPE, np.float32)
    image[2:10, 2:8, 2:6] = 1.0
    img_path = _write(tmp_path / "brain_mask_as_image.nii.gz", image)
    mask_path = _write(tmp_path / "mask.nii.gz", (image > 0).astype(np.uint8)) if with_mask else None
    with pytest.raises(DataError) as err:
        load_labelled_volume(img_path, mask=mask_path)
    _assert_data_error(err, img_path, "intensity is constant (1)", "192 voxel(s)", "no tissue contrast")


@pytest.mark.parametrize("mode", ["zscore", "scale", "histogram"])
def test_normalisation_of_a_tiny_mask_stays_finite(mode):
    """One brain voxel: the unbiased std is NaN and would have turned the whole volume into NaN."""
    img = torch.from_numpy(_image())[None]
    mask = torch.zeros_like(img, dtype=torch.bool)
    mask[0, 3, 3, 3] = True
    out = normalize_brain_intensity(img, mode, mask=mask)
    assert torch.isfinite(out).all() and torch.all(out[~mask] == 0)


def test_check_label_values_direct():
    check_label_values(np.array([0, 1, 2, 3]), "x.nii")
    check_label_values(torch.tensor([0.0, 3.0]), None)
    with pytest.raises(DataError, match=r"^x\.nii: label values \{7\}"):
        check_label_values(np.array([0, 7]), "x.nii")
    with pytest.raises(DataError, match="all background"):
        check_label_values(np.zeros(5), "x.nii")
    check_label_values(np.array([0, 5]), "x.nii", allowed=(0, 5))


# ------------------------------------------------------------------ happy path


def test_load_shapes_and_values(pair, tmp_path):
    image, label = pair
    mask_arr = (_image() > 100).astype(np.uint8) * 7  # any non-zero value is brain
    mask = _write(tmp_path / "mask.nii.gz", mask_arr)
    out = load_labelled_volume(image, label, mask)
    assert set(out) == {"image", "label", "mask"}
    for key in out:
        assert isinstance(out[key], MetaTensor)
        assert tuple(out[key].shape) == (1, *SHAPE), key
    assert out["image"].dtype == torch.float32
    assert out["mask"].dtype == torch.bool
    np.testing.assert_array_equal(out["image"][0].numpy(), _image())
    np.testing.assert_array_equal(out["label"][0].numpy(), _label())
    np.testing.assert_array_equal(out["mask"][0].numpy(), mask_arr > 0)
    assert set(load_labelled_volume(image)) == {"image"}
    assert set(load_labelled_volume(image, mask=mask)) == {"image", "mask"}


def test_lps_volume_is_flipped_to_ras(tmp_path):
    img = _image()
    path = _write(tmp_path / "lps.nii.gz", img, LPS)
    vol = load_volume(path)
    assert tuple(vol.shape) == (1, *SHAPE)
    np.testing.assert_array_equal(vol[0].numpy(), img[::-1, ::-1, :])
    aff = np.asarray(vol.affine, dtype=float)
    assert nib.aff2axcodes(aff) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(aff)[:3], [1.0, 1.0, 1.0])
    # the RAS affine maps each voxel to the same world point as the file's affine did
    ijk_file = np.array([2, 3, 4, 1.0])
    ijk_ras = np.array([SHAPE[0] - 1 - 2, SHAPE[1] - 1 - 3, 4, 1.0])
    np.testing.assert_allclose(aff @ ijk_ras, LPS @ ijk_file)
    np.testing.assert_allclose(np.asarray(vol.meta["original_affine"]), LPS)
    assert "RAS" in describe_volume(vol) and "(12, 10, 8)" in describe_volume(vol)
    assert "spacing (1.0, 1.0, 1.0) mm" in describe_volume(vol)


def test_lps_image_and_label_stay_aligned(tmp_path):
    img, lab = _image(), _label()
    out = load_labelled_volume(_write(tmp_path / "i.nii.gz", img, LPS), _write(tmp_path / "l.nii.gz", lab, LPS))
    np.testing.assert_array_equal(out["label"][0].numpy(), lab[::-1, ::-1, :])
    np.testing.assert_array_equal(out["image"][0].numpy(), img[::-1, ::-1, :])


def test_label_in_other_orientation_but_same_world_grid_is_accepted(tmp_path):
    """Same voxels in world space, stored RAS vs LPS: after reorientation both are on the same RAS grid."""
    img, lab = _image(), _label()
    # LPS voxel (i, j, k) sits at (-i, -j, k); the RAS-stored voxel (X-1-i, Y-1-j, k) must sit there too
    ras_shift = np.eye(4)
    ras_shift[:2, 3] = [-(SHAPE[0] - 1), -(SHAPE[1] - 1)]
    out = load_labelled_volume(
        _write(tmp_path / "i.nii.gz", img, LPS), _write(tmp_path / "l.nii.gz", lab[::-1, ::-1, :].copy(), ras_shift)
    )
    np.testing.assert_array_equal(out["label"][0].numpy(), lab[::-1, ::-1, :])


def test_normalize_brain_intensity():
    img = torch.from_numpy(_image()).clone()[None].abs() + 0.5
    img[:, :4] = 0.0  # background slab
    bg, brain = img == 0, img != 0
    z = normalize_brain_intensity(img, "zscore")
    assert z.shape == img.shape and torch.all(z[bg] == 0)  # exactly 0, not merely close
    vals = z[brain].double()
    assert abs(float(vals.mean())) < 1e-5
    assert abs(float(vals.std(unbiased=False)) - 1.0) < 1e-3
    assert torch.equal(torch.argsort(z[brain]), torch.argsort(img[brain]))  # order preserved
    s = normalize_brain_intensity(img, "scale")  # brain mean 1, background 0 stays the darkest value
    assert torch.all(s[bg] == 0) and float(s[brain].min()) > 0
    assert abs(float(s[brain].double().mean()) - 1.0) < 1e-5
    torch.testing.assert_close(s[brain] / img[brain], torch.full_like(img[brain], float(s[brain][0] / img[brain][0])))
    with pytest.raises(ValueError, match="unknown intensity normalisation"):
        normalize_brain_intensity(img, "minmax")


def test_normalize_histogram_removes_contrast_differences():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.gamma(4.0, 20.0, size=(1, 24, 24, 12)).astype(np.float32)) + 1.0
    img[:, :5] = 0.0  # background slab
    bg, brain = img == 0, img != 0
    h = normalize_brain_intensity(img)  # default: "histogram"
    assert torch.all(h[bg] == 0) and float(h[brain].min()) >= 0 and float(h[brain].max()) == pytest.approx(1.0)
    # the value is the intensity's rank within the brain: uniform over [0, 1]
    assert float(h[brain].double().mean()) == pytest.approx(0.5, abs=0.01)
    # another subject with other gain and gamma (any monotonic change) maps to the same values
    other = torch.where(brain, 3.0 * img.clamp(min=1e-3) ** 1.4, torch.zeros_like(img))
    h2 = normalize_brain_intensity(other, "histogram")
    assert float((h2 - h).abs().max()) < 0.01
    # "scale" keeps the contrast difference: that is what "histogram" is for
    s, s2 = normalize_brain_intensity(img, "scale"), normalize_brain_intensity(other, "scale")
    assert float((s2 - s).abs().max()) > 0.3
    with pytest.raises(ValueError, match="histogram, scale, zscore"):
        normalize_brain_intensity(img, "minmax")


def test_normalize_keeps_meta(pair):
    vol = load_volume(pair[0])
    out = normalize_brain_intensity(vol)
    assert isinstance(out, MetaTensor)
    np.testing.assert_allclose(np.asarray(out.affine), np.asarray(vol.affine))


# ------------------------------------------------------------------ writing back


OBLIQUE_PERMUTED = np.array(  # axes permuted (i->S-ish, j->R, k->P) and anisotropic, non-zero origin
    [[0.0, 0.9, 0.0, -5.0], [0.0, 0.0, -1.5, 10.0], [1.1, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]]
)


@pytest.mark.parametrize(
    "affine",
    [np.eye(4), LPS, np.diag([-0.7, 1.3, -2.5, 1.0]), OBLIQUE_PERMUTED],
    ids=["ras", "lps", "anisotropic", "permuted"],
)
@pytest.mark.parametrize("as_numpy", [False, True], ids=["tensor", "numpy3d"])
def test_save_label_volume_round_trip(tmp_path, affine, as_numpy):
    img, lab = _image(), _label()
    out = load_labelled_volume(_write(tmp_path / "i.nii.gz", img, affine), _write(tmp_path / "l.nii.gz", lab, affine))
    labels = out["label"][0].numpy() if as_numpy else out["label"]
    written = save_label_volume(labels, out["image"], tmp_path / "pred" / "seg.nii.gz")
    assert written == tmp_path / "pred" / "seg.nii.gz"
    nii = nib.load(str(written))
    assert nii.shape == SHAPE
    np.testing.assert_allclose(nii.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(nii.dataobj), lab)
    assert nii.get_data_dtype() == np.uint8
    # both sform and qform set, with the input's sform code (nibabel writes code 2, "aligned", by default)
    assert int(nii.header["sform_code"]) == int(nii.header["qform_code"]) == 2
    np.testing.assert_allclose(nii.get_qform(), affine, atol=1e-5)


def test_save_label_volume_of_a_volume_loaded_in_another_process(tmp_path):
    """A volume loaded in a DataLoader worker carries that process's Orientation instance id; MONAI accepts a
    foreign id only under "spawn", so with "forkserver" (Python 3.14's default) saving failed. Simulated here by
    the id a worker would record."""
    from monai.utils import TraceKeys

    out = load_labelled_volume(_write(tmp_path / "i.nii.gz", _image(), LPS), _write(tmp_path / "l.nii.gz", _label(), LPS))
    ops = [dict(op) for op in out["image"].applied_operations]
    ops[-1][TraceKeys.ID] = ops[-1][TraceKeys.ID] + 4096  # another process, another instance
    foreign = MetaTensor(out["image"].as_tensor(), meta=dict(out["image"].meta), applied_operations=ops)
    written = save_label_volume(out["label"], foreign, tmp_path / "seg.nii.gz")
    nii = nib.load(str(written))
    np.testing.assert_allclose(nii.affine, LPS, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(nii.dataobj), _label())
    assert out["image"].applied_operations[-1][TraceKeys.ID] != ops[-1][TraceKeys.ID]  # the input is not modified


def test_save_permuted_image_grid_differs_but_file_matches(tmp_path):
    """Sanity check that the permuted case really reorders axes in RAS (so the round trip above is not trivial)."""
    path = _write(tmp_path / "i.nii.gz", _image(), OBLIQUE_PERMUTED)
    vol = load_volume(path)
    assert tuple(vol.shape[1:]) != SHAPE and sorted(vol.shape[1:]) == sorted(SHAPE)
    ras_labels = (vol[0] > vol[0].median()).to(torch.uint8) + 1
    written = nib.load(str(save_label_volume(ras_labels, vol, tmp_path / "o.nii")))
    np.testing.assert_array_equal(np.asarray(written.dataobj), (_image() > np.median(_image())).astype(np.uint8) + 1)


def test_save_after_normalization_uses_same_reference(pair, tmp_path):
    out = load_labelled_volume(*pair)
    written = save_label_volume(out["label"], normalize_brain_intensity(out["image"]), tmp_path / "o.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(str(written)).dataobj), _label())


def test_save_refuses_existing_output(pair, tmp_path):
    out = load_labelled_volume(*pair)
    target = tmp_path / "seg.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(DataError) as err:
        save_label_volume(out["label"], out["image"], target)
    _assert_data_error(err, target, "already exists", "overwrite")
    assert target.read_bytes() == b"precious"
    save_label_volume(out["label"], out["image"], target, overwrite=True)
    np.testing.assert_array_equal(np.asarray(nib.load(str(target)).dataobj), _label())


def test_save_rejects_wrong_label_shape(pair, tmp_path):
    vol = load_volume(pair[0])
    target = tmp_path / "seg.nii.gz"
    with pytest.raises(DataError) as err:
        save_label_volume(np.zeros((12, 10, 7), np.uint8), vol, target)
    _assert_data_error(err, target, "does not match the image grid")
    assert not target.exists()


def test_refuse_existing(tmp_path):
    p = tmp_path / "x.txt"
    refuse_existing(p)  # nothing there: no error
    p.write_text("x")
    with pytest.raises(DataError, match="already exists"):
        refuse_existing(p)
    refuse_existing(str(p), overwrite=True)


# ------------------------------------------------------------------ DICOM


SPACING = (0.7, 0.8, 1.5)
ORIGIN_LPS = (10.0, -20.0, 30.0)
DIRECTION_LPS = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # sagittal, flipped, det +1
DICOM_ARRAY = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 50 + 1).astype(np.int16)


def _expected_dicom_affine_ras() -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = DIRECTION_LPS @ np.diag(SPACING)
    aff[:3, 3] = ORIGIN_LPS
    return LPS @ aff


def _write_dicom_series(out_dir: Path, name: str = "slice_{k:03d}.dcm", jitter_mm: float = 0.0,
                        uid: str = "1.2.826.0.1.3680043.2.1125.1.777", array: np.ndarray = DICOM_ARRAY) -> None:
    """A CT series of ``array`` (int16, ``(X, Y, Z)``), one file per slice (after SimpleITK's DicomSeriesFromArray
    example); ``jitter_mm`` moves every other slice along the normal (the rounding of real ImagePositionPatient
    values); ``uid``: its SeriesInstanceUID (two series may share a folder)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.T))  # SimpleITK numpy order is (z, y, x)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN_LPS)
    img.SetDirection(DIRECTION_LPS.ravel().tolist())
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # also for names without ".dcm"
    d = img.GetDirection()
    tags = [
        ("0020|000d", uid + ".1"),
        ("0020|000e", uid),
        ("0020|0037", "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7])))),
        ("0018|0050", str(SPACING[2])),
        ("0008|0060", "CT"),
    ]
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        for tag, value in tags:
            s.SetMetaData(tag, value)
        position = np.asarray(img.TransformIndexToPhysicalPoint((0, 0, k))) + (k % 2) * jitter_mm * DIRECTION_LPS[:, 2]
        s.SetMetaData("0020|0032", "\\".join(map(str, position.tolist())))
        s.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(out_dir / name.format(k=k)))
        writer.Execute(s)


def test_dicom_series_load_and_save(tmp_path):
    series = tmp_path / "dicom"
    _write_dicom_series(series)
    vol = load_volume(series)
    assert vol.ndim == 4 and vol.shape[0] == 1
    assert sorted(vol.shape[1:]) == sorted(SHAPE)
    assert nib.aff2axcodes(np.asarray(vol.affine)) == ("R", "A", "S")
    np.testing.assert_allclose(np.asarray(vol.meta["original_affine"]), _expected_dicom_affine_ras(), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(vol.meta["spatial_shape"]), SHAPE)
    # same world grid as a NIfTI of the same data: identical RAS arrays
    ref = load_volume(_write(tmp_path / "ref.nii.gz", DICOM_ARRAY, _expected_dicom_affine_ras()))
    np.testing.assert_array_equal(vol.numpy(), ref.numpy())
    np.testing.assert_allclose(np.asarray(vol.affine), np.asarray(ref.affine), atol=1e-4)

    labels = (vol[0] % 4).to(torch.uint8)  # labels computed on the RAS grid
    written = nib.load(str(save_label_volume(labels, vol, tmp_path / "seg.nii.gz")))
    assert written.shape == SHAPE
    np.testing.assert_allclose(written.affine, _expected_dicom_affine_ras(), atol=1e-4)
    assert int(written.header["sform_code"]) == int(written.header["qform_code"]) == 1  # scanner coordinates
    np.testing.assert_array_equal(np.asarray(written.dataobj), DICOM_ARRAY % 4)


def test_dicom_series_with_rounded_positions_and_no_file_suffix(tmp_path):
    # scanners and PACS exports name slices IM0001 (or *.IMA); positions carry rounding, which ITK flags as uneven
    series = tmp_path / "exam" / "t1"
    _write_dicom_series(series, name="IM{k:04d}", jitter_mm=1e-5)
    assert [it["image"] for it in list_volume_inputs(tmp_path / "exam")] == [str(series)]
    assert list_volume_inputs(series)[0]["image"] == str(series)
    vol = load_volume(series)
    np.testing.assert_allclose(np.asarray(vol.meta["original_affine"]), _expected_dicom_affine_ras(), atol=1e-3)
    # a slice 10 % out of place is still refused (its geometry would be wrong)
    bad = tmp_path / "bad"
    _write_dicom_series(bad, jitter_mm=0.1 * SPACING[2])
    with pytest.raises(DataError, match="not evenly spaced"):
        load_volume(bad)


def test_big_endian_nifti(tmp_path):
    header = nib.Nifti1Header().as_byteswapped(">")
    header.set_data_dtype(">i2")
    path = tmp_path / "big_endian.nii.gz"
    nib.save(nib.Nifti1Image(_image().astype(">i2"), np.eye(4), header), str(path))
    assert nib.load(str(path)).header.endianness == ">"
    np.testing.assert_array_equal(load_volume(path)[0].numpy(), _image())


def test_inconsistent_nifti_header_follows_the_sform(tmp_path):
    sform = np.diag([2.0, 2.0, 2.0, 1.0])
    sform[:3, 3] = (-10.0, -20.0, -30.0)
    img = nib.Nifti1Image(_image(), sform)
    img.set_qform(np.diag([1.8, 1.8, 1.8, 1.0]), code=0)  # a stale qform and pixdim, marked unused
    path = tmp_path / "stale_qform.nii.gz"
    nib.save(img, str(path))
    assert nib.load(str(path)).header.get_zooms() == (1.8, 1.8, 1.8)
    vol = load_volume(path)
    np.testing.assert_allclose(np.asarray(vol.meta["original_affine"]), sform)  # as nibabel, FSL, FreeSurfer
    written = nib.load(str(save_label_volume((vol[0] > 100).to(torch.uint8), vol, tmp_path / "seg.nii.gz")))
    np.testing.assert_allclose(written.affine, sform)


def test_labels_stored_with_rounding_are_integers(pair, tmp_path):
    image, _ = pair
    noisy = _label().astype(np.float32) + np.float32(1e-6)  # float storage, or int16 with scl_slope
    out = load_labelled_volume(image, _write(tmp_path / "noisy.nii.gz", noisy))
    assert set(np.unique(out["label"].numpy()).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    half = _label().astype(np.float32)
    half[0, 0, 0] = 2.5
    with pytest.raises(DataError, match=r"label values \{2.5\}"):
        load_labelled_volume(image, _write(tmp_path / "half.nii.gz", half))
    # the tolerance is 0.001: 2.9991 is label 3; 2.0012 (even beside values within it) is refused, naming the file
    near = _label().astype(np.float32)
    near[near == 3] -= np.float32(9e-4)
    out = load_labelled_volume(image, _write(tmp_path / "near.nii.gz", near))
    np.testing.assert_array_equal(out["label"][0].numpy(), _label())
    near[1, 0, 0] = 2.0012
    with pytest.raises(DataError) as err:
        load_labelled_volume(image, path := _write(tmp_path / "beyond.nii.gz", near))
    _assert_data_error(err, path, "label values {2.0012, 2.9991} are not in the allowed set [0, 1, 2, 3]")


def test_probability_map_mask_is_thresholded_and_never_takes_over_the_geometry(pair, tmp_path):
    image, _ = pair
    brain = np.zeros(SHAPE, bool)
    brain[2:10, 2:8, 1:7] = True
    prob = np.where(brain, 0.9, 0.0).astype(np.float32)
    prob[0] = 0.1  # a halo of small probabilities outside the brain
    out = load_labelled_volume(image, mask=_write(tmp_path / "prob.nii.gz", prob))
    np.testing.assert_array_equal(out["mask"][0].numpy(), brain)
    # a 0/255 mask stored in another axis order (same world grid): the image keeps its own file and geometry
    flipped = _write(tmp_path / "mask_las.nii.gz", (brain[::-1] * 255).astype(np.uint8),
                     np.array([[-1.0, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    d = LoadLabelledVolumed(bias_correction="none")({"image": str(image), "mask": str(flipped)})
    np.testing.assert_array_equal(d["mask"][0].numpy(), brain)
    assert d["image"].meta["filename_or_obj"] == str(image)
    np.testing.assert_allclose(np.asarray(d["image"].meta["original_affine"]), np.eye(4))


# ------------------------------------------------------------------ pre-flight header check


def test_header_check_reads_dicom_series_folders(tmp_path):
    """A folder of inputs with a good NIfTI, then a DICOM series that cannot be read: the pre-flight skipped
    folders, so the NIfTI's output was written, the run failed on the series, and the re-run was refused on that
    output. Now the series' headers are checked as the reader checks them, and a mask is compared with the series'
    grid."""
    good = _write(tmp_path / "a_good.nii.gz", _image())
    series = tmp_path / "b_series"
    _write_dicom_series(series)
    mask = _write(tmp_path / "mask.nii.gz", np.ones(SHAPE, np.uint8), _expected_dicom_affine_ras())
    items = [{"image": str(good)}, {"image": str(series), "mask": str(mask)}]
    assert check_volume_headers(items) == items
    two = tmp_path / "two_series"
    _write_dicom_series(two)
    _write_dicom_series(two, name="second_{k:03d}.dcm", uid="1.2.826.0.1.3680043.2.1125.1.778")
    cut = tmp_path / "cut_series"
    _write_dicom_series(cut)
    last = cut / f"slice_{SHAPE[2] - 1:03d}.dcm"
    last.write_bytes(last.read_bytes()[:-200])
    off = _write(tmp_path / "off_mask.nii.gz", np.ones(SHAPE, np.uint8))  # identity affine: not the series' grid
    for bad, item, words in [
        (two, {"image": str(two)}, ("holds 2 DICOM series", f"file(s) (1.2.826.0.1.3680043.2.1125.1.778)",
                                    "one series per folder", "dcm2niix")),
        (cut, {"image": str(cut)}, ("not part of the series", last.name)),
        (off, {"image": str(series), "mask": str(off)}, ("mask does not match its image", str(series))),
    ]:
        with pytest.raises(DataError) as err:
            check_volume_headers([{"image": str(good)}, item])
        _assert_data_error(err, bad, *words)


def test_header_check_compares_mask_and_label_grids_with_the_image(tmp_path):
    """``check_volume_headers`` passed a 98x117x95 mask for a 99x117x95 image (found only after earlier outputs were
    written); the grids are compared as loading compares them: after reorientation to RAS."""
    image = _write(tmp_path / "img.nii.gz", _image(), LPS)
    small = _write(tmp_path / "small_mask.nii.gz", np.ones((11, 10, 8), np.uint8), LPS)
    moved_affine = LPS.copy()
    moved_affine[2, 3] = 1.0
    moved = _write(tmp_path / "moved_label.nii.gz", _label(), moved_affine)
    for bad, key, words in [(small, "mask", ("shape (11, 10, 8) vs (12, 10, 8)",)),
                            (moved, "label", ("affine differs by up to 1 mm",))]:
        with pytest.raises(DataError) as err:
            check_volume_headers([{"image": str(image), key: str(bad)}])
        _assert_data_error(err, bad, f"{key} does not match its image {image}", *words)
    # the same world grid stored in another voxel order is the same grid (as load_labelled_volume accepts it)
    ras_shift = np.eye(4)
    ras_shift[:2, 3] = [-(SHAPE[0] - 1), -(SHAPE[1] - 1)]
    same = _write(tmp_path / "ras_label.nii.gz", _label()[::-1, ::-1, :].copy(), ras_shift)
    check_volume_headers([{"image": str(image), "label": str(same)}])
    load_labelled_volume(image, same)


def test_2d_colour_image_is_refused_as_such(tmp_path):
    """A 2D RGB picture passed the pre-flight (the colour axis counted as a third dimension), then failed with
    "expected a 3D image volume, got shape (3, 80, 64) (3D)"."""
    photo = tmp_path / "photo.png"
    sitk.WriteImage(sitk.Compose(*[sitk.GetImageFromArray(np.full((80, 64), 50 * c, np.uint8)) for c in range(3)]),
                    str(photo))
    with pytest.raises(DataError) as err:
        check_volume_headers([{"image": str(photo)}])
    _assert_data_error(err, photo, "2D colour image", "3 values per pixel", "(64, 80)")
    with pytest.raises(DataError) as err:
        load_volume(photo)
    _assert_data_error(err, photo, "2D colour image", "3 values per pixel")
    assert "(3D)" not in str(err.value)


def test_header_check_error_keeps_the_reason(tmp_path):
    """SimpleITK's reason (its ERROR line) is kept; its C++ source location is not the reason."""
    bad = tmp_path / "scan.nrrd"
    bad.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4\nencoding: raw\n\n")
    with pytest.raises(DataError) as err:
        check_volume_headers([{"image": str(bad)}])
    _assert_data_error(err, bad, "cannot read the image's header", "NrrdImageIO", "dimension is 3")
    assert ".cxx" not in str(err.value) and "Exception thrown in SimpleITK" not in str(err.value)


def test_freesurfer_mgz_is_read_with_nibabel(tmp_path):
    """FreeSurfer's .mgz/.mgh (nibabel reads them, SimpleITK has no reader) were called corrupt."""
    angle = np.radians(15.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine[:3, :3] = affine[:3, :3] @ np.diag([1.0, 1.2, 1.5])
    affine[:3, 3] = [-10.0, 20.0, -30.0]
    (tmp_path / "fs").mkdir()
    mgz = tmp_path / "fs" / "brain.mgz"
    nib.save(nib.MGHImage(_image(), affine), str(mgz))
    nifti = _write(tmp_path / "brain.nii.gz", _image(), affine)
    assert check_volume_headers([{"image": str(mgz), "mask": str(nifti)}])
    assert [(it["image"], it["name"]) for it in list_volume_inputs(tmp_path / "fs")] == [(str(mgz), "brain")]
    vol, ref = load_volume(mgz), load_volume(nifti)
    np.testing.assert_array_equal(vol.numpy(), ref.numpy())
    np.testing.assert_allclose(np.asarray(vol.affine), np.asarray(ref.affine), atol=1e-4)
    written = nib.load(str(save_label_volume((vol[0] > 100).to(torch.uint8), vol, tmp_path / "seg.nii.gz")))
    np.testing.assert_allclose(written.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(written.dataobj), (_image() > 100).astype(np.uint8))


@pytest.mark.parametrize("where", ["series", "below"])
def test_input_dot_is_named_after_the_folder(tmp_path, monkeypatch, where):
    """``--input .`` run inside a DICOM series folder named the output ``_seg.nii.gz``."""
    series = tmp_path / "t1_mprage"
    _write_dicom_series(series)
    (series / "notes").mkdir()
    monkeypatch.chdir(series if where == "series" else series / "notes")
    given = "." if where == "series" else ".."
    (item,) = list_volume_inputs(given)
    assert item["name"] == "t1_mprage"
    assert output_name(given) == "t1_mprage_seg.nii.gz"


def test_a_series_is_chosen_from_a_folder_holding_several(tmp_path):
    """A PACS export puts the localizer and the scan in one folder: --series_id (inference) or a datalist entry's
    "series_id" picks the series, through the pre-flight header check and the loader alike."""
    import json

    folder = tmp_path / "export"
    second = (DICOM_ARRAY[::-1] + 60).astype(np.int16)  # other pixels: loading the other series would show
    _write_dicom_series(folder)
    _write_dicom_series(folder, name="second_{k:03d}.dcm", uid="1.2.826.0.1.3680043.2.1125.1.778", array=second)
    (tmp_path / "ref").mkdir()
    expected = {uid: load_volume(_write(tmp_path / "ref" / f"{uid[-3:]}.nii.gz", array, _expected_dicom_affine_ras()))
                for uid, array in (("1.2.826.0.1.3680043.2.1125.1.777", DICOM_ARRAY),
                                   ("1.2.826.0.1.3680043.2.1125.1.778", second))}
    raw = LoadLabelledVolumed(bias_correction="none", check_skull_stripped=False, intensity_normalization=None,
                              clip_percentiles=None)  # the stored values, unprocessed
    with pytest.raises(DataError, match=r"holds 2 DICOM series .*choose one with --series_id UID"):
        check_volume_headers([{"image": str(folder)}])
    (item,) = list_volume_inputs(folder, series_id="1.2.826.0.1.3680043.2.1125.1.778")
    assert item["series_id"] == "1.2.826.0.1.3680043.2.1125.1.778"
    assert check_volume_headers([item]) == [item]
    direct = load_volume(folder, "image", series_id="1.2.826.0.1.3680043.2.1125.1.778")
    np.testing.assert_array_equal(direct.numpy(), expected["1.2.826.0.1.3680043.2.1125.1.778"].numpy())
    np.testing.assert_array_equal(raw(item)["image"].numpy(), direct.numpy())
    with pytest.raises(DataError, match="series '1.2.3' not found"):
        check_volume_headers([{"image": str(folder), "series_id": "1.2.3"}])
    for wrong in (folder / "slice_000.dcm", tmp_path):  # a file, a folder of volumes
        with pytest.raises(DataError, match="--series_id applies to one DICOM folder holding several series"):
            list_volume_inputs(wrong, series_id="1.2.826.0.1.3680043.2.1125.1.777")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"image": "export", "series_id": "1.2.826.0.1.3680043.2.1125.1.777"}]}),
                        encoding="utf-8")
    (entry,) = list_volume_inputs(datalist)
    assert entry["series_id"] == "1.2.826.0.1.3680043.2.1125.1.777" and check_volume_headers([entry]) == [entry]
    np.testing.assert_array_equal(raw(entry)["image"].numpy(), expected["1.2.826.0.1.3680043.2.1125.1.777"].numpy())
