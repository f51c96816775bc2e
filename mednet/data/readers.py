"""A MONAI image reader built on SimpleITK: DICOM series, MHA/MHD, NRRD (and NIfTI) without the ``itk`` package.

Why this exists: MONAI's own :class:`monai.data.ITKReader` requires the separate ``itk`` Python package (large,
not a mednet dependency), and MONAI's other readers cover NIfTI (nibabel), single DICOM files/series (pydicom)
and NRRD (pynrrd) only piecemeal. SimpleITK is lighter, already a declared dependency of mednet, and reads all of
these formats through the same ITK I/O code, so :class:`SimpleITKReader` mirrors ``ITKReader`` on top of it.

Use it as any MONAI reader::

    from monai.transforms import LoadImage, Orientation
    img = LoadImage(reader=SimpleITKReader(), ensure_channel_first=True)("ct_series_dir/")  # (1, X, Y, Z)
    img = Orientation(axcodes="RAS")(img)

Conventions (identical to ``ITKReader`` with its defaults and to ``NibabelReader``):

- Array axis order is MONAI's ``(X, Y, Z)`` (first index = fastest-varying file axis, i.e. the DICOM column
  / NIfTI ``i`` axis), the transpose of SimpleITK's ``GetArrayFromImage`` order ``(Z, Y, X)``. Vector pixels
  (e.g. RGB) are channel-last: ``(X, Y, Z, C)`` with ``original_channel_dim == -1``; scalar images have
  ``original_channel_dim == nan`` (no channel).
- ``affine``/``original_affine`` map voxel indices ``(i, j, k, 1)`` to world coordinates in **RAS** (NIfTI)
  convention: SimpleITK geometry is LPS, so the first two rows are negated
  (:func:`monai.data.utils.orientation_ras_lps`), exactly like ``ITKReader(affine_lps_to_ras=True)``.

- Greyscale DICOM (series and single files) is read as float32, each slice with its own RescaleSlope/Intercept
  (ITK would otherwise cast every slice to the first slice's pixel type); a series folder's headers are checked
  first (:func:`dicom_series_info`: one series, parallel slices at distinct, evenly spaced positions).

Errors (missing file, empty directory, unreadable/corrupt/truncated file, ambiguous DICOM directory) are raised
as :class:`mednet.errors.DataError` naming the path, never as a bare SimpleITK ``RuntimeError``. Note that
``LoadImage(reader=SimpleITKReader())`` catches reader exceptions, tries MONAI's other readers and then raises
its own ``RuntimeError`` (whose message contains the ``DataError`` text); call
``LoadImage(...)(path, reader=SimpleITKReader())`` or ``SimpleITKReader().read(path)`` to get the
``DataError`` itself.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from monai.config import PathLike
from monai.data.image_reader import ImageReader, _copy_compatible_dict, _stack_images
from monai.data.utils import is_supported_format, orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from mednet.errors import DataError

__all__ = ["SimpleITKReader", "holds_dicom_files", "dicom_series_info", "DicomSeriesInfo"]

#: file suffixes accepted by :meth:`SimpleITKReader.verify_suffix` (directories are accepted as DICOM series)
SUFFIXES: tuple[str, ...] = ("dcm", "mha", "mhd", "nrrd", "nhdr", "nii", "nii.gz")

# SimpleITK returns this string for metadata values it cannot print (ITK-internal matrices, doubles, ...)
_UNPRINTABLE = "[UNKNOWN_PRINT_CHARACTERISTICS]"
# Media Storage Directory Storage: a DICOMDIR, which may share a folder with the series it indexes
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def sitk_problem(err: Exception) -> str:
    """The useful part of a SimpleITK exception: its ``ERROR`` line(s), without C++ source locations."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK")]
    # ITK's "Reason: <strerror>" after a failed read reports a stale errno (e.g. "No such file or directory"
    # for a truncated file that exists), and object addresses are noise
    lines = [re.sub(r"\(0x[0-9a-fA-F]+\)", "", ln) for ln in lines if not ln.startswith("Reason:")]
    text = " ".join(lines) if lines else type(err).__name__
    return text[:500]


def _looks_like_dicom(path: Path) -> bool:
    """Whether ``path`` is a file named ``*.dcm`` or holding the ``DICM`` magic at byte offset 128."""
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def holds_dicom_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` directly holds DICOM files: named ``*.dcm`` or, whatever their name (``IM0001``,
    ``*.IMA``, no suffix, as scanners and PACS exports write them), with the ``DICM`` magic."""
    folder = Path(folder)
    return folder.is_dir() and any(_looks_like_dicom(p) for p in folder.iterdir())


def _belongs_to_series(path: Path, series_id: str) -> bool:
    """Whether the DICOM file ``path`` may be a slice of series ``series_id`` that GDCM failed to read.

    False only for files known to be elsewhere: another series (legitimately in the same folder) or a DICOMDIR.
    True for ``series_id``'s own files and for headers pydicom cannot read or that lack the SeriesInstanceUID
    every image has (pydicom stops quietly at a truncated header, so a missing UID means a broken file).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except Exception:  # pydicom raises InvalidDicomError, EOFError, ValueError, ... on broken headers
        return True
    sop_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if sop_class == _DICOMDIR_SOP_CLASS:
        return False
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip("\x00 ")
    return not uid or uid == series_id.strip("\x00 ")


def _unread_series_files(folder: Path, series_id: str, files: Sequence[str]) -> list[str]:
    """Names of the DICOM files directly in ``folder`` that belong to ``series_id`` but are not in ``files``.

    GDCM silently leaves out slices it cannot parse (e.g. truncated). A lost middle slice shows as uneven slice
    spacing; a lost first or last slice does not, so the folder's files are compared with the series read.
    """
    read = {Path(f).name for f in files}
    candidates = sorted(p for p in folder.iterdir() if p.name not in read and _looks_like_dicom(p))
    return [p.name for p in candidates if _belongs_to_series(p, series_id)]


#: largest deviation of a DICOM series' slice spacing from its median, as a fraction of it, still read as uniform
_SPACING_TOLERANCE = 0.01
#: largest difference between two slices' direction cosines (ImageOrientationPatient) still read as one orientation
# (scanners write them with ~6 decimals; a localizer's planes differ by 1)
_ORIENTATION_TOLERANCE = 1e-3
#: two slices closer than this along the slice normal (mm) sit at the same position
_SAME_POSITION_MM = 1e-3


def lps_affine(direction: Sequence[float], spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """``(r+1, r+1)`` voxel-to-LPS affine, ``r = min(dimension, 3)``: direction @ diag(spacing), origin."""
    ndim = len(spacing)
    direction_ = np.asarray(direction, dtype=np.float64).reshape(ndim, ndim)
    sr = min(max(ndim, 1), 3)
    affine: np.ndarray = np.eye(sr + 1)
    affine[:sr, :sr] = direction_[:sr, :sr] @ np.diag(np.asarray(spacing, dtype=np.float64)[:sr])
    affine[:sr, -1] = np.asarray(origin, dtype=np.float64)[:sr]
    return affine


def _spacing_deviation(gaps: np.ndarray) -> float:
    """Largest deviation of the gaps between consecutive slice positions (along the slice normal) from their
    median, relative to the median; ``inf`` when the median is 0.

    ITK flags a series as unevenly spaced (``ITK_non_uniform_sampling_deviation``) for any deviation at all, down to
    the rounding of ImagePositionPatient in oblique or non-integer positions (1e-12 mm), and SimpleITK does not
    expose the amount. A missing slice shows as a deviation of 1 (one whole gap); rounding as ~1e-6.
    """
    if gaps.size == 0:
        return 0.0
    median = float(np.median(np.abs(gaps)))
    return float(np.abs(np.abs(gaps) - median).max() / median) if median > 0 else float("inf")


@dataclass(frozen=True)
class DicomSeriesInfo:
    """What the headers of a DICOM series folder say, before any pixel is read (:func:`dicom_series_info`).

    Attributes:
        series_id: the SeriesInstanceUID read.
        files: the series' files in GDCM's order (along the slice normal), as ``ImageSeriesReader`` reads them.
        size: ``(X, Y, Z)`` = (columns, rows, slices) of the volume the series reader builds.
        components: values per pixel (1 for greyscale, 3 for RGB).
        affine_lps: ``(4, 4)`` voxel-to-LPS affine the series reader gives: origin and axes of the first file,
            slice spacing = distance(first, last position) / (files - 1), as ITK computes it.
        spacing_deviation: :func:`_spacing_deviation` of the slice gaps (0 for a single file).
        unread: names of files of this series GDCM left out (truncated, corrupt).
    """

    series_id: str
    files: tuple[str, ...]
    size: tuple[int, ...]
    components: int
    affine_lps: np.ndarray
    spacing_deviation: float
    unread: tuple[str, ...]


def _file_information(path: str) -> sitk.ImageFileReader:
    """A reader holding ``path``'s header (``ReadImageInformation``); :class:`DataError` if unreadable."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise DataError(path, f"DICOM header cannot be read (corrupt or truncated file): {sitk_problem(e)}") from e
    return reader


def _series_summary(folder: Path, series_id: str) -> str:
    """``"<SeriesDescription>: N files (<uid>)"`` of one series in ``folder``, from its first file's header."""
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id))
    description = ""
    if files:
        try:
            import pydicom

            header = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["SeriesDescription"])
            description = str(header.get("SeriesDescription", "") or "").strip()
        except Exception:  # an unreadable header: the count and uid still tell the series apart
            description = ""
    return f"{description or 'no description'}: {len(files)} file(s) ({series_id})"


def dicom_series_info(folder: str | os.PathLike, series_id: str = "", allow_nonuniform: bool = False
                      ) -> DicomSeriesInfo:
    """Check the DICOM series in ``folder`` from its headers alone and describe the volume it reads as.

    Used by :class:`SimpleITKReader` before reading the pixels, and by the pre-flight header check of a folder of
    inputs (:func:`mednet.data.volumes.check_volume_headers`), so a series that cannot be read is refused before
    anything is written. Each file's header is read once (``ReadImageInformation``, ~0.5 ms a slice).

    Refused, as :class:`DataError` naming ``folder``: no series, several series and no ``series_id`` (or one not
    there), a file of the series GDCM left out (truncated, corrupt), slices with different orientations
    (ImageOrientationPatient: a 3-plane localizer, or a sagittal and an axial series sharing a UID), slices at the
    same position along the normal (a 2D dynamic series or several echoes/time points of one slice: ITK would
    stack them as a 3D volume with a made-up 1 mm spacing) and, unless ``allow_nonuniform`` (then a warning),
    unevenly spaced slices (a missing slice: the affine would be wrong).
    """
    path = Path(folder)
    try:
        series_ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
    except RuntimeError as e:
        raise DataError(path, f"cannot list DICOM series: {sitk_problem(e)}") from e
    if not series_ids:
        raise DataError(path, "directory contains no readable DICOM series")
    if series_id:
        if series_id not in series_ids:
            raise DataError(path, f"DICOM series {series_id!r} not found; series in this directory: {series_ids}")
    elif len(series_ids) > 1:
        # a PACS export often puts the localizer and the T1 in one folder: say which is which
        described = "; ".join(_series_summary(path, uid) for uid in series_ids[:6])
        more = f"; and {len(series_ids) - 6} more" if len(series_ids) > 6 else ""
        raise DataError(
            path,
            f"directory holds {len(series_ids)} DICOM series ({described}{more}); choose one with --series_id UID "
            "(a datalist entry's \"series_id\"), or give one series per folder (convert each to NIfTI, e.g. "
            "dcm2niix -o OUT DIR)",
        )
    else:
        series_id = series_ids[0]
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series_id))
    if not files:
        raise DataError(path, f"DICOM series {series_id!r} has no readable files")
    unread = _unread_series_files(path, series_id, files)

    readers = [_file_information(f) for f in files]
    first = readers[0]
    size = list(first.GetSize()) + [1] * (3 - first.GetDimension())
    directions = np.asarray([np.reshape(r.GetDirection(), (r.GetDimension(),) * 2)[:3, :3] for r in readers])
    origins = np.asarray([r.GetOrigin()[:3] for r in readers], dtype=float)
    affine = lps_affine(directions[0].ravel(), (list(first.GetSpacing()) + [1.0] * 3)[:3], origins[0])
    deviation = 0.0
    if len(files) > 1 and all(r.GetSize()[2:3] in ((), (1,)) for r in readers):  # single-frame slices
        turned = [Path(f).name for f, d in zip(files, directions)
                  if np.abs(d[:, :2] - directions[0][:, :2]).max() > _ORIENTATION_TOLERANCE]
        if turned:
            raise DataError(
                path,
                f"DICOM series {series_id!r}: {len(turned)} of {len(files)} slices have another orientation "
                f"(ImageOrientationPatient) than {Path(files[0]).name} ({_names(turned)}): a localizer or several "
                "planes in one series, not one 3D volume",
            )
        normal = directions[0][:, 2]
        along = origins @ normal  # slice positions along the normal, in GDCM's order
        # sorted: GDCM gives up sorting a series with repeated positions and keeps the file names' order
        same = int((np.diff(np.sort(along)) < _SAME_POSITION_MM).sum())
        if same:
            n_positions = len(files) - same
            raise DataError(
                path,
                f"DICOM series {series_id!r}: {len(files)} slices at only {n_positions} position"
                f"{'' if n_positions == 1 else 's'} along the slice normal (several time points, echoes or "
                "repetitions of the same slice(s): a 2D or 4D series, not one 3D volume); export one 3D volume",
            )
        deviation = _spacing_deviation(np.diff(along))
        size[2] = len(files)
        # as ITK's ImageSeriesReader: the first file's axes, slice spacing |last - first| / (files - 1)
        affine[:3, 2] = normal * np.linalg.norm(origins[-1] - origins[0]) / (len(files) - 1)
    if deviation > _SPACING_TOLERANCE:
        problem = (
            f"DICOM series {series_id!r}: slices are not evenly spaced ({len(files)} files read; a slice may "
            "be missing or unreadable), so the voxel geometry is unreliable"
        )
        if unread:
            problem += f"; not read: {_names(unread)}"
        if not allow_nonuniform:
            raise DataError(path, problem + "; pass allow_nonuniform_series=True to load it anyway")
        warnings.warn(f"{path}: {problem}", stacklevel=3)
    elif unread:  # evenly spaced without them: the first or last slice(s) were dropped
        one = len(unread) == 1
        raise DataError(
            path,
            f"{len(unread)} DICOM file{'' if one else 's'} {'is' if one else 'are'} not part of the series GDCM "
            f"could read ({_names(unread)}): truncated or corrupt? remove {'it' if one else 'them'} or "
            "re-export the series",
        )
    return DicomSeriesInfo(series_id, tuple(files), tuple(int(s) for s in size[:3]),
                           int(first.GetNumberOfComponents()), affine, deviation, tuple(unread))


def _names(names: Sequence[str], limit: int = 5) -> str:
    """``"a.dcm, b.dcm"``; more than ``limit`` names end in ``", … (N more)"``."""
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


class SimpleITKReader(ImageReader):
    """Load medical images with SimpleITK: DICOM series/files, MHA/MHD, NRRD/NHDR and NIfTI.

    This exists because MONAI's :class:`~monai.data.ITKReader` requires the separate ``itk`` package, while
    SimpleITK is lighter and already a declared dependency of mednet. It follows ``ITKReader``'s conventions
    (constructor arguments, metadata keys, axis order, RAS affine) so it can replace it one for one.

    The returned array is in MONAI's spatial order ``(X, Y, Z)`` (transposed from SimpleITK's ``(Z, Y, X)``),
    vector-pixel images are ``(X, Y, Z, C)``; a list of files is stacked as channels by :meth:`get_data`
    (``(C, X, Y, Z)``, MONAI's convention), so pass a DICOM series as its **directory**, not as a file list.

    Args:
        channel_dim: the channel dimension of the input image, as in ``ITKReader``. ``None`` (default) sets
            ``original_channel_dim`` to ``nan`` (no channel) for scalar images and ``-1`` for vector pixels;
            ``"no_channel"`` forces ``nan``; an int is stored as is (and removed from ``spatial_shape``).
        series_id: the DICOM SeriesInstanceUID (0020|000e) to read when a directory holds several series. If a
            directory holds several series and this is empty, :meth:`read` raises :class:`DataError` listing
            the ids (``ITKReader`` silently takes the first one instead).
        reverse_indexing: if ``True``, return SimpleITK's numpy order ``(Z, Y, X)`` instead of ``(X, Y, Z)``;
            the metadata is unaffected (as in ``ITKReader``). Default ``False``.
        series_meta: for DICOM series, copy the first slice's DICOM tags (``"gggg|eeee"`` keys) into the
            metadata, as ``ITKReader(series_meta=True)``. Default ``False``.
        affine_lps_to_ras: convert the affine from SimpleITK's LPS to RAS (default ``True``, consistent with
            ``NibabelReader``); if ``False`` the affine stays LPS and ``meta["space"]`` is ``"LPS"``.
        allow_nonuniform_series: a DICOM series whose slices are not evenly spaced (typically a missing or
            unreadable slice) gets a wrong affine; by default this raises :class:`DataError`. Set ``True`` to
            load it anyway with a warning (``ITKReader`` only warns). An unreadable first or last slice leaves
            the spacing even and always raises :class:`DataError` naming the file(s).
        kwargs: extra options of ``sitk.ReadImage`` / the SimpleITK reader objects, given by setter name
            without ``Set``: e.g. ``outputPixelType=sitk.sitkFloat32``, ``imageIO="NrrdImageIO"``.
    """

    def __init__(
        self,
        channel_dim: str | int | None = None,
        series_id: str = "",
        reverse_indexing: bool = False,
        series_meta: bool = False,
        affine_lps_to_ras: bool = True,
        allow_nonuniform_series: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.kwargs = kwargs
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.series_id = series_id
        self.reverse_indexing = reverse_indexing
        self.series_meta = series_meta
        self.affine_lps_to_ras = affine_lps_to_ras
        self.allow_nonuniform_series = allow_nonuniform_series

    # ------------------------------------------------------------------ ImageReader API

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every ``filename`` is a directory (DICOM series) or ends in a supported suffix.

        Supported suffixes: ``.dcm``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``, ``.nii``, ``.nii.gz``
        (case-insensitive).

        Args:
            filename: file name or a list of file names to read; if a list, all must be supported.
        """
        names = ensure_tuple(filename)
        if not names:
            return False
        return all(Path(f"{n}").is_dir() or is_supported_format(n, SUFFIXES) for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> sitk.Image | list[sitk.Image]:
        """Read image(s) from file(s) or DICOM series directories.

        A directory is read as a DICOM series (files sorted by GDCM along the slice normal); a single
        ``.dcm`` file is read on its own (one slice or a multi-frame file), as ``ITKReader`` does.

        Args:
            data: a file or directory name, or a list of them (stacked as channels in :meth:`get_data`).
            kwargs: extra SimpleITK reader options (see the class docstring); override ``self.kwargs``.

        Returns:
            A ``SimpleITK.Image`` (or a list of them for a list input), in SimpleITK's own (LPS) geometry.

        Raises:
            DataError: ``"<path>: <problem>"`` for a missing path, a directory without (or with an ambiguous)
                DICOM series, or a file SimpleITK cannot read or that is corrupt/truncated.
        """
        kwargs_ = self.kwargs.copy()
        kwargs_.update(kwargs)
        filenames = ensure_tuple(data)
        images = [self._read_one(Path(f"{name}"), kwargs_) for name in filenames]
        return images if len(filenames) > 1 else images[0]

    def get_data(self, img: sitk.Image | Sequence[sitk.Image]) -> tuple[np.ndarray, dict]:
        """Extract the array and metadata of image(s) returned by :meth:`read`.

        Args:
            img: a ``SimpleITK.Image`` or a list of them.

        Returns:
            ``(array, meta)``. ``array`` is ``(X, Y, Z)`` for a 3D scalar image (``(X, Y, Z, C)`` for vector
            pixels; ``(Z, Y, X)``-style reversed order if ``reverse_indexing``); a list of images is stacked at
            a new first (channel) axis, or concatenated along ``original_channel_dim`` if set.
            ``meta`` holds, like ``ITKReader``: the file's own metadata (string values; keys starting with
            ``ITK_`` and unprintable values dropped), ``"spacing"`` (SimpleITK order, one per image axis),
            ``"original_affine"`` and ``"affine"`` (``(r+1, r+1)`` float64, r = min(image dimension, 3), RAS
            unless ``affine_lps_to_ras=False``), ``"space"`` (``"RAS"``/``"LPS"``), ``"spatial_shape"``
            (int array, ``(X, Y, Z)``) and ``"original_channel_dim"`` (``nan`` or ``-1``). The metadata of the
            first image describes a stacked list (affines/shapes must agree).
        """
        img_array: list[np.ndarray] = []
        compatible_meta: dict = {}

        # not ensure_tuple(img): a SimpleITK image is itself iterable (over its pixels)
        for i in [img] if isinstance(img, sitk.Image) else list(img):
            data = self._get_array_data(i)
            img_array.append(data)
            header = self._get_meta_dict(i)
            header[MetaKeys.ORIGINAL_AFFINE] = self._get_affine(i, self.affine_lps_to_ras)
            header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPATIAL_SHAPE] = self._get_spatial_shape(i)
            if self.channel_dim is None:  # default to "no_channel" or -1
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = (
                    float("nan") if len(data.shape) == len(header[MetaKeys.SPATIAL_SHAPE]) else -1
                )
            else:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
            _copy_compatible_dict(header, compatible_meta)

        return _stack_images(img_array, compatible_meta), compatible_meta

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _apply_options(reader: sitk.ImageReaderBase, options: dict[str, Any], path: Path) -> None:
        for key, value in options.items():
            setter = getattr(reader, f"Set{key[:1].upper()}{key[1:]}", None)
            if setter is None:
                raise TypeError(f"SimpleITKReader: unknown SimpleITK reader option {key!r} (reading {path})")
            setter(value)

    def _read_one(self, path: Path, options: dict[str, Any]) -> sitk.Image:
        if not path.exists():
            raise DataError(path, "file or directory does not exist")
        if path.is_dir():
            return self._read_series(path, options)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        self._apply_options(reader, options, path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise DataError(
                path, f"cannot be read by SimpleITK (corrupt, truncated or unsupported file): {sitk_problem(e)}"
            ) from e
        if reader.GetImageIO() == "NiftiImageIO" or path.name.lower().endswith((".nii", ".nii.gz")):
            self._check_nifti_complete(path, reader)
        if (reader.GetImageIO() or reader.GetImageIOFromFileName(str(path))) == "GDCMImageIO":
            self._dicom_pixel_type(reader, reader.GetNumberOfComponents())
            self._apply_options(reader, options, path)  # an explicit outputPixelType wins
        try:
            return reader.Execute()
        except RuntimeError as e:
            raise DataError(
                path, f"cannot be read by SimpleITK (corrupt or truncated file): {sitk_problem(e)}"
            ) from e

    def _read_series(self, path: Path, options: dict[str, Any]) -> sitk.Image:
        """Read the DICOM series in directory ``path`` (``self.series_id`` picks one of several).

        The headers are checked first (:func:`dicom_series_info`): files of other series (or a DICOMDIR) in the
        folder are ignored; a file of this series that GDCM left out (truncated, corrupt) is an error: in the
        middle it shows as uneven spacing (see ``allow_nonuniform_series``), at either end the volume would
        silently lose a slice; slices in several orientations or at one position are not a 3D volume.
        Greyscale pixels are read as float32 (see :meth:`_dicom_pixel_type`).
        """
        info = dicom_series_info(path, self.series_id, self.allow_nonuniform_series)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(list(info.files))
        if self.series_meta:
            reader.MetaDataDictionaryArrayUpdateOn()
            reader.LoadPrivateTagsOn()
        self._dicom_pixel_type(reader, info.components)
        self._apply_options(reader, options, path)
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise DataError(
                path, f"DICOM series {info.series_id!r} cannot be read (corrupt slice?): {sitk_problem(e)}"
            ) from e
        if self.series_meta:
            for key in reader.GetMetaDataKeys(0):
                try:
                    image.SetMetaData(key, reader.GetMetaData(0, key))
                except (RuntimeError, UnicodeDecodeError):  # undecodable private tags: skip
                    continue
        return image

    @staticmethod
    def _dicom_pixel_type(reader: sitk.ImageReaderBase, components: int) -> None:
        """Read greyscale DICOM as float32 (an ``outputPixelType`` option still overrides it).

        GDCM applies each file's RescaleSlope/Intercept, but ITK picks the pixel type from the first slice alone
        and casts the others into it: a series with slope 1 on its first slice and 40 on the rest wrapped around
        int16 (half the brain negative), slope 2.5 / intercept 0.3 was truncated to integers. float32 holds the
        rescaled values to float32 precision (integers below 2**24 exactly: every 16-bit value with slope 1).
        Colour (RGB) pixels keep their type: a scalar output type would turn them into one grey channel.
        """
        if components == 1:
            reader.SetOutputPixelType(sitk.sitkFloat32)

    @staticmethod
    def _check_nifti_complete(path: Path, reader: sitk.ImageFileReader) -> None:
        """Raise :class:`DataError` if a NIfTI file holds fewer bytes than its header promises.

        ITK's NIfTI reader fills a truncated ``.nii``/``.nii.gz`` with zeros instead of failing, so check the
        size: ``vox_offset + prod(dim[1..dim[0]]) * bitpix / 8`` against the file size (``.nii``) or the gzip
        trailer's uncompressed size, falling back to decompressing the stream when the trailer disagrees.
        """
        try:
            meta = {k: reader.GetMetaData(k) for k in ("dim[0]", "bitpix", "vox_offset")}
            ndim = int(meta["dim[0]"])
            dims = [int(reader.GetMetaData(f"dim[{d}]")) for d in range(1, ndim + 1)]
            expected = int(float(meta["vox_offset"])) + int(np.prod(dims, dtype=np.int64)) * int(meta["bitpix"]) // 8
        except (RuntimeError, ValueError, KeyError):
            return  # not the NIfTI header layout we know: let SimpleITK decide
        if path.name.lower().endswith(".gz"):
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() >= 4:
                    f.seek(-4, os.SEEK_END)
                    if int.from_bytes(f.read(4), "little") == expected % 2**32:
                        return  # gzip trailer (ISIZE) matches the header: complete
            actual = 0
            try:
                with gzip.open(path, "rb") as g:
                    while chunk := g.read(1 << 22):
                        actual += len(chunk)
            except (EOFError, OSError, zlib.error) as e:
                raise DataError(path, f"compressed NIfTI data is truncated or corrupt ({e})") from e
        else:
            actual = path.stat().st_size
        if actual < expected:
            raise DataError(
                path, f"NIfTI file is truncated: header promises {expected} bytes, file holds {actual}"
            )

    # ------------------------------------------------------------------ metadata and array

    def _get_meta_dict(self, img: sitk.Image) -> dict:
        """The image's metadata as a dict of strings (``ITK_*`` keys and unprintable values dropped) + spacing."""
        meta_dict: dict[str, Any] = {}
        for key in img.GetMetaDataKeys():
            if key.startswith("ITK_"):
                continue
            try:
                val = img.GetMetaData(key)
            except (RuntimeError, UnicodeDecodeError):
                continue
            if val.startswith(_UNPRINTABLE):
                continue
            meta_dict[key] = val
        meta_dict["spacing"] = np.asarray(img.GetSpacing())
        return meta_dict

    @staticmethod
    def _get_affine(img: sitk.Image, lps_to_ras: bool = True) -> np.ndarray:
        """``(r+1, r+1)`` voxel-to-world affine, ``r = min(dimension, 3)``: direction @ diag(spacing), origin.

        Args:
            img: a SimpleITK image.
            lps_to_ras: negate the first two rows (LPS -> RAS), as ``ITKReader`` does by default.
        """
        affine = lps_affine(img.GetDirection(), img.GetSpacing(), img.GetOrigin())
        if lps_to_ras:
            affine = orientation_ras_lps(affine)
        return affine

    def _get_spatial_shape(self, img: sitk.Image) -> np.ndarray:
        """Spatial size in ``(X, Y, Z)`` order (SimpleITK ``GetSize()``, at most 3 axes, channel axis removed)."""
        sr = max(min(img.GetDimension(), 3), 1)
        size = list(img.GetSize())
        if isinstance(self.channel_dim, int):
            size.pop(self.channel_dim)
        return np.asarray(size[:sr])

    def _get_array_data(self, img: sitk.Image) -> np.ndarray:
        """Pixel data: ``(X, Y, Z)`` (scalar) or ``(X, Y, Z, C)`` (vector pixels); reversed if ``reverse_indexing``.

        SimpleITK's ``GetArrayFromImage`` gives ``(Z, Y, X)`` / ``(Z, Y, X, C)``; the spatial axes are
        transposed (a view, no copy), the component axis stays last.
        """
        arr = sitk.GetArrayFromImage(img)
        if self.reverse_indexing:
            return arr
        if arr.ndim == img.GetDimension():  # scalar pixels
            return arr.T
        return np.moveaxis(arr.T, 0, -1)
