"""Tests for :class:`mednet.data.readers.SimpleITKReader`.

One small volume (12 x 10 x 8 voxels, spacing 0.7/0.8/1.5 mm, non-zero origin, a sagittal direction with
flipped axes) is written as MHA, MHD, NRRD, NHDR, a DICOM series (SimpleITK) and NIfTI (nibabel, from a
hand-computed RAS affine). Every format must load through ``LoadImage`` with the same ``(X, Y, Z)`` array and the
same RAS affine, before and after ``Orientation("RAS")``, and NIfTI must agree with MONAI's ``NibabelReader``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom  # a core dependency: never skipped
import pytest
import SimpleITK as sitk
from monai.data import NibabelReader
from monai.transforms import LoadImage, LoadImaged, Orientation
from monai.utils import MetaKeys, SpaceKeys

from mednet.errors import DataError
from mednet.data.readers import SimpleITKReader, dicom_series_info

# LoadImage instantiates all of MONAI's default readers; the GPU DICOM one warns on CPU-only machines
pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

SIZE_XYZ = (12, 10, 8)
SPACING = (0.7, 0.8, 1.5)
ORIGIN_LPS = (10.0, -20.0, 30.0)
# LPS direction (columns = world direction of the i, j, k axes): a sagittal slab with flipped axes, det +1,
# so the third column is the cross product of the first two, as a DICOM slice normal is.
DIRECTION_LPS = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
SERIES_UID = "1.2.826.0.1.3680043.2.1125.1.424242"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _expected_affine_lps() -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = DIRECTION_LPS @ np.diag(SPACING)
    aff[:3, 3] = ORIGIN_LPS
    return aff


EXPECTED_AFFINE_RAS = LPS_TO_RAS @ _expected_affine_lps()
# voxel values unique per voxel, signed, fit int16: array indexed [x, y, z] (MONAI order)
ARRAY_XYZ = (np.arange(np.prod(SIZE_XYZ)).reshape(SIZE_XYZ) - 400).astype(np.int16)


def _sitk_volume(array_xyz: np.ndarray = ARRAY_XYZ) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.T))  # SimpleITK numpy order is (z, y, x)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN_LPS)
    img.SetDirection(DIRECTION_LPS.ravel().tolist())
    return img


def _write_dicom_series(img: sitk.Image, out_dir: Path, series_uid: str = SERIES_UID) -> list[Path]:
    """Write ``img`` slice by slice as a CT DICOM series (after SimpleITK's DicomSeriesFromArray example)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    series_tags = [
        ("0008|0021", "20240101"),  # series date
        ("0008|0031", "120000"),  # series time
        ("0008|0008", "DERIVED\\SECONDARY"),  # image type
        ("0020|000d", series_uid + ".1"),  # study instance UID
        ("0020|000e", series_uid),  # series instance UID
        ("0020|0037", "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7])))),  # image orientation patient
        ("0008|103e", "mednet reader test"),  # series description
        ("0018|0050", str(img.GetSpacing()[2])),  # slice thickness
    ]
    paths = []
    for k in range(img.GetDepth()):
        slice_k = img[:, :, k]
        for tag, value in series_tags:
            slice_k.SetMetaData(tag, value)
        slice_k.SetMetaData("0008|0060", "CT")  # modality: keeps position and thickness
        slice_k.SetMetaData("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))))
        slice_k.SetMetaData("0020|0013", str(k + 1))  # instance number
        path = out_dir / f"slice_{k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_k)
        paths.append(path)
    return paths


def _write_nifti(path: Path, array_xyz: np.ndarray, affine_ras: np.ndarray) -> Path:
    nii = nib.Nifti1Image(array_xyz, affine_ras)
    nii.set_qform(affine_ras, code=1)
    nii.set_sform(affine_ras, code=1)
    nib.save(nii, str(path))
    return path


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The same volume in every format, plus broken files for the error tests."""
    root = tmp_path_factory.mktemp("readers")
    img = _sitk_volume()
    out: dict[str, Path] = {}
    for name in ("mha", "mhd", "nrrd", "nhdr"):
        out[name] = root / f"vol.{name}"
        sitk.WriteImage(img, str(out[name]))
    out["nii"] = _write_nifti(root / "vol.nii", ARRAY_XYZ, EXPECTED_AFFINE_RAS)
    out["nii.gz"] = _write_nifti(root / "vol.nii.gz", ARRAY_XYZ, EXPECTED_AFFINE_RAS)
    out["dicom"] = root / "dicom_series"
    slices = _write_dicom_series(img, out["dicom"])
    out["dcm_slice"] = slices[0]

    # broken inputs
    out["missing"] = root / "does_not_exist.mha"
    out["empty_dir"] = root / "empty_dir"
    out["empty_dir"].mkdir()
    for name in ("mha", "nrrd", "nii", "nii.gz"):
        out[f"truncated.{name}"] = _truncate(out[name], root / f"truncated.{name}")
    out["text.dcm"] = root / "notes.dcm"
    out["text.dcm"].write_text("this is not a DICOM file\n" * 20)
    out["gap_series"] = root / "gap_series"  # a middle slice unreadable -> uneven slice positions
    shutil.copytree(out["dicom"], out["gap_series"])
    _truncate(out["gap_series"] / "slice_003.dcm", out["gap_series"] / "slice_003.dcm")
    out["two_series"] = root / "two_series"
    shutil.copytree(out["dicom"], out["two_series"])
    _write_dicom_series(_sitk_volume(-ARRAY_XYZ), out["two_series"] / "second", series_uid=SERIES_UID + ".2")
    for p in (out["two_series"] / "second").iterdir():
        p.rename(out["two_series"] / f"second_{p.name}")
    (out["two_series"] / "second").rmdir()
    return out


FORMATS = ["mha", "mhd", "nrrd", "nhdr", "nii", "nii.gz", "dicom"]


# ------------------------------------------------------------------ suffixes


def test_verify_suffix(files):
    reader = SimpleITKReader()
    for name in FORMATS + ["dcm_slice"]:
        assert reader.verify_suffix(files[name]), name
    assert reader.verify_suffix([files["mha"], files["nrrd"]])
    assert reader.verify_suffix("UPPER.NII.GZ")
    assert not reader.verify_suffix("photo.png")
    assert not reader.verify_suffix([files["mha"], "table.csv"])


# ------------------------------------------------------------------ geometry and arrays


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_gives_same_array_and_ras_affine(files, fmt):
    img = LoadImage(reader=SimpleITKReader(), image_only=True, dtype=None)(files[fmt])
    assert tuple(img.shape) == SIZE_XYZ  # (X, Y, Z), not SimpleITK's (Z, Y, X)
    np.testing.assert_array_equal(np.asarray(img), ARRAY_XYZ)
    np.testing.assert_allclose(np.asarray(img.affine), EXPECTED_AFFINE_RAS, atol=1e-4)
    np.testing.assert_allclose(np.asarray(img.meta[MetaKeys.ORIGINAL_AFFINE]), EXPECTED_AFFINE_RAS, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.meta[MetaKeys.SPATIAL_SHAPE]), SIZE_XYZ)


def test_formats_agree_after_orientation_ras(files):
    """Same world geometry in any format -> same RAS array and affine, using nibabel's NIfTI as the reference."""
    orient = Orientation(axcodes="RAS")
    ref = orient(LoadImage(reader=NibabelReader(), ensure_channel_first=True)(files["nii.gz"]))
    assert tuple(ref.shape) == (1, 8, 12, 10)  # sagittal slab re-ordered: R = k, A = i, S = j
    assert np.all(np.diag(np.asarray(ref.affine))[:3] > 0)
    for fmt in FORMATS:
        img = orient(LoadImage(reader=SimpleITKReader(), ensure_channel_first=True)(files[fmt]))
        assert img.shape == ref.shape, fmt
        np.testing.assert_array_equal(np.asarray(img), np.asarray(ref), err_msg=fmt)
        np.testing.assert_allclose(np.asarray(img.affine), np.asarray(ref.affine), atol=1e-4, err_msg=fmt)


@pytest.mark.parametrize("suffix", ["nii", "nii.gz"])
def test_nifti_matches_nibabel_reader_oblique(tmp_path, suffix):
    """An oblique (rotated) NIfTI: SimpleITKReader and MONAI's NibabelReader give the same array and affine."""
    angle = math.radians(20.0)
    rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.1, -0.9, 2.0])
    affine[:3, 3] = [-30.0, 12.5, 7.0]
    data = np.random.default_rng(0).normal(size=(9, 7, 5)).astype(np.float32)
    path = _write_nifti(tmp_path / f"oblique.{suffix}", data, affine)

    nib_reader, sitk_reader = NibabelReader(), SimpleITKReader()
    a_nib, m_nib = nib_reader.get_data(nib_reader.read(path))
    a_sitk, m_sitk = sitk_reader.get_data(sitk_reader.read(path))
    np.testing.assert_array_equal(np.asarray(a_sitk), np.asarray(a_nib))
    np.testing.assert_allclose(m_sitk["affine"], m_nib["affine"], atol=1e-4)
    np.testing.assert_allclose(m_sitk["original_affine"], m_nib["original_affine"], atol=1e-4)
    np.testing.assert_array_equal(m_sitk["spatial_shape"], m_nib["spatial_shape"])
    assert m_sitk["space"] == m_nib["space"] == SpaceKeys.RAS

    via_nib = LoadImage(reader=NibabelReader())(path)
    via_sitk = LoadImage(reader=SimpleITKReader())(path)
    np.testing.assert_array_equal(np.asarray(via_sitk), np.asarray(via_nib))
    np.testing.assert_allclose(np.asarray(via_sitk.affine), np.asarray(via_nib.affine), atol=1e-4)


def test_meta_keys_match_itkreader_convention(files):
    reader = SimpleITKReader()
    arr, meta = reader.get_data(reader.read(files["mha"]))
    for key in ("affine", "original_affine", "spatial_shape", "original_channel_dim", "space", "spacing"):
        assert key in meta, key
    assert math.isnan(meta[MetaKeys.ORIGINAL_CHANNEL_DIM])
    assert meta[MetaKeys.SPACE] == SpaceKeys.RAS
    assert meta["affine"].shape == (4, 4) and meta["affine"] is not meta["original_affine"]
    np.testing.assert_allclose(meta["spacing"], SPACING)
    assert not any(k.startswith("ITK_") for k in meta)
    assert arr.dtype == np.int16 and arr.shape == SIZE_XYZ

    lps = SimpleITKReader(affine_lps_to_ras=False)
    _, meta_lps = lps.get_data(lps.read(files["mha"]))
    assert meta_lps[MetaKeys.SPACE] == SpaceKeys.LPS
    np.testing.assert_allclose(meta_lps["affine"], _expected_affine_lps(), atol=1e-6)


def test_reverse_indexing_gives_simpleitk_order(files):
    reader = SimpleITKReader(reverse_indexing=True)
    arr, meta = reader.get_data(reader.read(files["nrrd"]))
    np.testing.assert_array_equal(arr, ARRAY_XYZ.T)
    np.testing.assert_array_equal(meta["spatial_shape"], SIZE_XYZ)  # metadata unaffected


def test_vector_pixels_are_channel_last(tmp_path):
    channels = [_sitk_volume(ARRAY_XYZ + c) for c in range(3)]
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.Compose(*channels), str(path))
    reader = SimpleITKReader()
    arr, meta = reader.get_data(reader.read(path))
    assert arr.shape == (*SIZE_XYZ, 3)
    assert meta[MetaKeys.ORIGINAL_CHANNEL_DIM] == -1
    np.testing.assert_array_equal(meta["spatial_shape"], SIZE_XYZ)
    np.testing.assert_array_equal(arr[..., 2], ARRAY_XYZ + 2)
    img = LoadImage(reader=SimpleITKReader(), ensure_channel_first=True)(path)
    assert tuple(img.shape) == (3, *SIZE_XYZ)


def test_list_of_files_is_stacked_as_channels(files):
    img = LoadImage(reader=SimpleITKReader())([files["mha"], files["nrrd"]])
    assert tuple(img.shape) == (2, *SIZE_XYZ)
    assert img.meta[MetaKeys.ORIGINAL_CHANNEL_DIM] == 0


def test_load_imaged_dictionary_transform(files):
    out = LoadImaged(keys=["image", "label"], reader=SimpleITKReader(), ensure_channel_first=True)(
        {"image": str(files["dicom"]), "label": str(files["mhd"])}
    )
    assert tuple(out["image"].shape) == tuple(out["label"].shape) == (1, *SIZE_XYZ)
    np.testing.assert_allclose(np.asarray(out["image"].affine), np.asarray(out["label"].affine), atol=1e-4)


# ------------------------------------------------------------------ DICOM specifics


def test_single_dicom_slice_file(files):
    img = LoadImage(reader=SimpleITKReader(), dtype=None)(files["dcm_slice"])
    assert tuple(img.shape) == (12, 10, 1)
    np.testing.assert_array_equal(np.asarray(img)[..., 0], ARRAY_XYZ[..., 0])
    np.testing.assert_allclose(np.asarray(img.affine)[:3, :2], EXPECTED_AFFINE_RAS[:3, :2], atol=1e-4)
    np.testing.assert_allclose(np.asarray(img.affine)[:3, 3], EXPECTED_AFFINE_RAS[:3, 3], atol=1e-4)


def test_series_meta_copies_first_slice_tags(files):
    reader = SimpleITKReader(series_meta=True)
    _, meta = reader.get_data(reader.read(files["dicom"]))
    assert meta["0020|000e"].strip("\x00 ") == SERIES_UID
    assert meta["0008|0060"].strip() == "CT"
    _, plain = SimpleITKReader().get_data(SimpleITKReader().read(files["dicom"]))
    assert "0020|000e" not in plain


def test_several_series_need_a_series_id(files):
    with pytest.raises(DataError) as err:
        SimpleITKReader().read(files["two_series"])
    msg = str(err.value)
    assert msg.startswith(f"{files['two_series']}:")
    assert SERIES_UID in msg and SERIES_UID + ".2" in msg and "series_id" in msg

    reader = SimpleITKReader(series_id=SERIES_UID + ".2")
    arr, meta = reader.get_data(reader.read(files["two_series"]))
    np.testing.assert_array_equal(arr, -ARRAY_XYZ)
    np.testing.assert_allclose(meta["affine"], EXPECTED_AFFINE_RAS, atol=1e-4)

    with pytest.raises(DataError, match="not found"):
        SimpleITKReader(series_id="1.2.3").read(files["two_series"])


def test_series_with_unreadable_slice(files):
    with pytest.raises(DataError) as err:
        SimpleITKReader().read(files["gap_series"])
    assert str(err.value).startswith(f"{files['gap_series']}:") and "evenly spaced" in str(err.value)
    assert "slice_003.dcm" in str(err.value)  # the file GDCM skipped
    with pytest.warns(UserWarning, match="evenly spaced"):
        img = SimpleITKReader(allow_nonuniform_series=True).read(files["gap_series"])
    assert img.GetSize() == (12, 10, 7)


@pytest.mark.parametrize("which", [0, -1])
def test_series_with_truncated_end_slice_names_the_file(files, tmp_path, which):
    """A truncated first/last slice is left out by GDCM without uneven spacing: refused, naming that file."""
    folder = shutil.copytree(files["dicom"], tmp_path / "series")
    victim = sorted(folder.glob("*.dcm"))[which]
    victim.write_bytes(victim.read_bytes()[:-200])
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))) == SIZE_XYZ[2] - 1  # GDCM drops it
    with pytest.raises(DataError) as err:
        SimpleITKReader().read(folder)
    assert err.value.path == str(folder)
    assert f"1 DICOM file is not part of the series GDCM could read ({victim.name})" in err.value.problem
    assert "truncated or corrupt" in err.value.problem


def test_intact_series_loads_all_slices_beside_other_files(files, tmp_path):
    """Non-DICOM files, a DICOM file without a series (like a DICOMDIR) and a broken file of *another* series
    in the folder are not slices of the chosen series: it loads whole, without error."""
    from pydicom.dataset import FileMetaDataset

    folder = shutil.copytree(files["two_series"], tmp_path / "series")
    other = sorted(folder.glob("second_*.dcm"))[-1]
    other.write_bytes(other.read_bytes()[:-200])
    (folder / "notes.txt").write_text("scanned 2024-01-01\n")
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
    ds.file_meta.MediaStorageSOPInstanceUID = SERIES_UID + ".9"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.FileSetID = "MEDNET"
    ds.save_as(folder / "DICOMDIR", enforce_file_format=True)

    reader = SimpleITKReader(series_id=SERIES_UID)
    arr, meta = reader.get_data(reader.read(folder))
    assert arr.shape == SIZE_XYZ
    np.testing.assert_array_equal(arr, ARRAY_XYZ)
    np.testing.assert_allclose(meta["affine"], EXPECTED_AFFINE_RAS, atol=1e-4)
    img = LoadImage(reader=SimpleITKReader(), image_only=True, dtype=None)(files["dicom"])  # plain series
    assert tuple(img.shape) == SIZE_XYZ


def test_pydicom_ct_small_file():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = LoadImage(reader=SimpleITKReader(), dtype=None)(path)
    assert tuple(img.shape) == (int(ds.Columns), int(ds.Rows), 1)  # (X, Y, Z) = (columns, rows, 1)
    affine = np.asarray(img.affine, dtype=float)
    # PixelSpacing = [row spacing (between rows, along Y), column spacing (along X)]
    col_spacing, row_spacing = float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])
    np.testing.assert_allclose(np.linalg.norm(affine[:3, 0]), col_spacing, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, 1]), row_spacing, rtol=1e-6)
    # direction and origin: DICOM IOP/IPP are LPS; the affine is RAS
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    flip = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(affine[:3, 0], flip * iop[:3] * col_spacing, atol=1e-5)
    np.testing.assert_allclose(affine[:3, 1], flip * iop[3:] * row_spacing, atol=1e-5)
    np.testing.assert_allclose(affine[:3, 3], flip * np.asarray(ds.ImagePositionPatient, dtype=float), atol=1e-4)
    # pixels: pydicom's (rows, columns) = (Y, X) array, rescaled to Hounsfield units as GDCM does
    expected = ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1))
    expected += float(getattr(ds, "RescaleIntercept", 0))
    np.testing.assert_allclose(np.asarray(img)[..., 0], expected.T)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "name, problem",
    [
        ("missing", "does not exist"),
        ("empty_dir", "no readable DICOM series"),
        ("truncated.mha", "corrupt or truncated"),
        ("truncated.nrrd", "corrupt or truncated"),
        ("truncated.nii", "truncated"),
        ("truncated.nii.gz", "truncated"),
        ("text.dcm", "cannot be read by SimpleITK"),
    ],
)
def test_bad_input_raises_data_error_naming_the_path(files, name, problem):
    path = files[name]
    with pytest.raises(DataError) as err:
        SimpleITKReader().read(path)
    assert err.value.path == str(path)
    assert str(err.value).startswith(f"{path}: ")
    assert problem in err.value.problem
    assert not isinstance(err.value, RuntimeError)
    assert "Exception thrown in SimpleITK" not in str(err.value)


def test_errors_through_load_image(files):
    """MONAI's LoadImage: a reader given at call time propagates the DataError; a registered reader's error is
    caught, MONAI's other readers are tried, and the final RuntimeError still carries the DataError text."""
    path = files["truncated.mha"]
    reader = SimpleITKReader()
    with pytest.raises(DataError) as err:
        LoadImage()(path, reader=reader)
    assert str(err.value).startswith(f"{path}: ")
    with pytest.raises(RuntimeError) as err2:
        LoadImage(reader=reader)(path)
    assert f"DataError: {path}: " in str(err2.value)


# ------------------------------------------------------------------ DICOM series that are not one 3D volume


def _edit_slices(folder: Path, edit) -> list[Path]:  # noqa: ANN001 (edit: (index, pydicom Dataset) -> None)
    """Apply ``edit(k, dataset)`` to every slice of ``folder`` (in slice order) with pydicom and save it back."""
    paths = sorted(folder.glob("*.dcm"))
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        edit(k, ds)
        ds.save_as(path)
    return paths


@pytest.mark.parametrize("slope, intercept", [(40.0, 0.0), (2.5, 0.3)])
def test_series_with_per_slice_rescale_is_read_as_float(tmp_path, slope, intercept):
    """RescaleSlope/Intercept differing between slices: ITK took the first slice's pixel type (slope 1: int16) and cast
    the others into it, so 40 × 900 wrapped to negative values and 2.5 × v + 0.3 lost its fraction."""
    stored = (ARRAY_XYZ + 400).astype(np.int16)  # 0..959: × 40 exceeds int16
    folder = tmp_path / "series"
    _write_dicom_series(_sitk_volume(stored), folder)

    def rescale(k, ds):  # noqa: ANN001, ANN202
        ds.RescaleSlope, ds.RescaleIntercept = ("1", "0") if k == 0 else (f"{slope:g}", f"{intercept:g}")

    slices = _edit_slices(folder, rescale)
    expected = stored.astype(np.float64)
    expected[..., 1:] = expected[..., 1:] * slope + intercept
    arr, _ = SimpleITKReader().get_data(SimpleITKReader().read(folder))
    assert arr.dtype == np.float32
    np.testing.assert_allclose(arr, expected, rtol=1e-6, atol=1e-4)
    one, _ = SimpleITKReader().get_data(SimpleITKReader().read(slices[1]))  # a single file: float32 as well
    assert one.dtype == np.float32
    np.testing.assert_allclose(one[..., 0], expected[..., 1], rtol=1e-6, atol=1e-4)
    # an explicit pixel type still wins
    assert SimpleITKReader(outputPixelType=sitk.sitkFloat64).read(folder).GetPixelID() == sitk.sitkFloat64


def test_ordinary_integer_files_keep_their_type(files):
    """Only DICOM is read as float32: MHA, NRRD and NIfTI keep their stored integer type."""
    for fmt in ("mha", "nrrd", "nii.gz"):
        arr, _ = SimpleITKReader().get_data(SimpleITKReader().read(files[fmt]))
        assert arr.dtype == np.int16, fmt
        np.testing.assert_array_equal(arr, ARRAY_XYZ)


def test_series_info_gives_the_read_geometry(files, tmp_path):
    """:func:`dicom_series_info` describes the volume from the headers alone as the series reader builds it,
    also for a gantry-tilted series (positions shifted in-plane: ITK keeps the slice normal, spacing = distance)."""
    info = dicom_series_info(files["dicom"])
    assert info.size == SIZE_XYZ and info.components == 1 and len(info.files) == SIZE_XYZ[2]
    np.testing.assert_allclose(info.affine_lps, _expected_affine_lps(), atol=1e-4)
    tilted = shutil.copytree(files["dicom"], tmp_path / "tilted")
    shift = np.array(DIRECTION_LPS[:, 1]) * 0.4  # along the column direction, per slice

    def tilt(k, ds):  # noqa: ANN001, ANN202
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(ds.ImagePositionPatient, float) + k * shift]

    _edit_slices(tilted, tilt)
    image = SimpleITKReader().read(tilted)
    read_affine = SimpleITKReader._get_affine(image, False)
    assert np.linalg.norm(read_affine[:3, 2]) == pytest.approx(np.hypot(SPACING[2], 0.4))  # tilted: not SPACING[2]
    np.testing.assert_allclose(dicom_series_info(tilted).affine_lps, read_affine, atol=1e-6)


def test_series_with_slices_at_one_position_is_refused(files, tmp_path):
    """Several time points / echoes of the same slice(s) in one series: ITK stacked them as 3D with a made-up 1 mm
    spacing (all at one position) or interleaved them."""
    same = shutil.copytree(files["dicom"], tmp_path / "dynamic")
    first = list(pydicom.dcmread(sorted(same.glob("*.dcm"))[0]).ImagePositionPatient)
    _edit_slices(same, lambda k, ds: setattr(ds, "ImagePositionPatient", first))
    with pytest.raises(DataError) as err:
        SimpleITKReader().read(same)
    assert err.value.path == str(same)
    assert f"{SIZE_XYZ[2]} slices at only 1 position along the slice normal" in err.value.problem

    echoes = shutil.copytree(files["dicom"], tmp_path / "echoes")
    for path in sorted(echoes.glob("*.dcm")):  # a second echo: same positions, new instance UIDs
        shutil.copy(path, echoes / f"echo2_{path.name}")
    _edit_slices(echoes, lambda k, ds: setattr(ds, "SOPInstanceUID", f"{SERIES_UID}.{1000 + k}"))
    with pytest.raises(DataError, match=f"{2 * SIZE_XYZ[2]} slices at only {SIZE_XYZ[2]} positions"):
        SimpleITKReader().read(echoes)


def test_series_with_several_orientations_is_refused(files, tmp_path):
    """A 3-plane localizer (or an axial and a sagittal stack sharing a SeriesInstanceUID) loaded as one volume."""
    folder = shutil.copytree(files["dicom"], tmp_path / "localizer")

    def turn(k, ds):  # noqa: ANN001, ANN202
        if k in (2, 5):
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]  # coronal

    slices = _edit_slices(folder, turn)
    with pytest.raises(DataError) as err:
        SimpleITKReader().read(folder)
    assert err.value.path == str(folder)
    assert "2 of 8 slices have another orientation (ImageOrientationPatient)" in err.value.problem
    assert slices[2].name in err.value.problem and slices[5].name in err.value.problem
