"""Loading, checking and writing back 3D brain volumes.

Every volume goes through MONAI's :class:`~monai.transforms.LoadImage` (NIfTI and FreeSurfer MGH with nibabel,
DICOM series, MHA/MHD and NRRD with :class:`mednet.data.readers.SimpleITKReader`) and is put in canonical RAS
orientation with :class:`~monai.transforms.Orientation`. The returned :class:`~monai.data.MetaTensor` keeps the file's
original affine and the orientation step in its ``applied_operations``, so any output computed in RAS can be
written back in the input's own space (same shape, same affine) by :func:`save_label_volume`.

Shapes: volumes are channel-first ``(1, X, Y, Z)`` MetaTensors; label volumes hold the integer values of
:data:`mednet.data.tissue_labels.LABEL_NAMES` (0 background, 1 CSF, 2 GM, 3 WM).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor, NibabelReader
from monai.data.utils import orientation_ras_lps
from monai.transforms import HistogramNormalize, LoadImage, NormalizeIntensity, Orientation
from monai.utils import TraceKeys, ensure_tuple

from mednet.data.naming import NIBABEL_SUFFIXES
from mednet.errors import DataError
from mednet.data.tissue_labels import LABEL_NAMES
from mednet.data.scan_checks import BACKGROUND_RESIDUE, zero_background_residue
from mednet.data.readers import SimpleITKReader, lps_affine, sitk_problem, dicom_series_info
from mednet.io import atomic_path, refuse_existing

logger = logging.getLogger(__name__)

__all__ = [
    "load_volume",
    "check_volume_headers",
    "load_labelled_volume",
    "check_label_values",
    "round_label_values",
    "binarize_brain_mask",
    "check_affine",
    "check_brain_signal",
    "normalize_brain_intensity",
    "clip_brain_intensity",
    "INTENSITY_NORMALIZATIONS",
    "save_label_volume",
]

# One instance for the forward and the inverse step: MONAI matches an inverse to the instance that traced it.
_TO_RAS = Orientation(axcodes="RAS", labels=None)


_LOAD = LoadImage(image_only=True, ensure_channel_first=True, dtype=None)


class _NiftiReader(NibabelReader):
    """MONAI's ``NibabelReader`` with two changes.

    * The data in native byte order: a big-endian NIfTI (valid, written by some older converters and by tools
      on big-endian machines) otherwise fails in ``torch.as_tensor``.
    * The NIfTI standard's geometry: the sform when its code is set, else the qform (nibabel's ``img.affine``,
      what FSL, FreeSurfer and nibabel-based viewers show). MONAI's ``correct_nifti_header_if_necessary``
      instead replaces a set sform by the qform, even one whose code is 0 (unused), whenever the sform's voxel
      sizes differ from ``pixdim`` — and the segmentation was then written at the qform's position, silently.
      Here such a header is logged as inconsistent and ``pixdim`` is made to follow the affine.
    """

    def read(self, data, **kwargs):  # noqa: ANN001, ANN201 (MONAI's signature)
        images = [self._read_one(name, **kwargs) for name in ensure_tuple(data)]
        self.filenames = ensure_tuple(data)
        return images if len(images) > 1 else images[0]

    def _read_one(self, name, **kwargs):  # noqa: ANN001, ANN202
        img = nib.load(name, **{**self.kwargs, **kwargs})
        header = img.header
        dim = int(header["dim"][0]) if header.get("dim") is not None else 0
        if 0 < dim < 5:
            pixdim = np.asarray(header.get_zooms())[: min(dim, 3)]
            from_affine = np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))[: len(pixdim)]
            if not np.allclose(pixdim, from_affine, rtol=1e-4, atol=1e-4):
                logger.warning("%s: NIfTI header is inconsistent: voxel sizes %s mm from the %s, pixdim %s; using the "
                               "%s (the NIfTI standard's choice)", name, np.round(from_affine, 4).tolist(),
                               "sform" if header["sform_code"] > 0 else "qform", np.round(pixdim, 4).tolist(),
                               "sform" if header["sform_code"] > 0 else "qform")
                header.set_zooms(tuple(from_affine) + tuple(header.get_zooms()[len(from_affine):]))
        return img

    def _get_array_data(self, img, filename):  # noqa: ANN001 (MONAI's signature)
        data = super()._get_array_data(img, filename)
        if isinstance(data, np.ndarray) and not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        return data


def _reader_for(path: Path, series_id: str = "") -> NibabelReader | SimpleITKReader:
    # The reader is passed per call, not registered: registered readers' errors are swallowed by LoadImage's
    # fallback to other readers, and the user would lose the actual problem (e.g. a truncated file).
    # squeeze_non_spatial_dims: a 3D volume stored as (X, Y, Z, 1) or (X, Y, Z, 1, 1) (FSL, ITK vector writers) is
    # 3D; without it the 5D form became (1, X, Y, Z, 1) and was refused as "4D".
    if path.name.lower().endswith(NIBABEL_SUFFIXES):  # NIfTI, and FreeSurfer MGH (ITK has no reader for it)
        return _NiftiReader(squeeze_non_spatial_dims=True)
    return SimpleITKReader(series_id=series_id or "")


def load_volume(path: str | os.PathLike, kind: str = "image", series_id: str = "") -> MetaTensor:
    """Load one 3D volume in canonical RAS orientation.

    Args:
        path: NIfTI or FreeSurfer MGH file, DICOM file or series directory, MHA/MHD or NRRD file.
        kind: what the volume is (``"image"``, ``"label"``, ``"mask"``), used in error messages only.
        series_id: the SeriesInstanceUID to read from a DICOM folder holding several series.

    Returns:
        ``(1, X, Y, Z)`` float32 MetaTensor (labels/masks keep their values) with ``meta["original_affine"]``
        the file's affine and ``meta["affine"]`` the RAS affine.

    Raises:
        DataError: missing or unreadable file, 2D or 4D data, NaN/Inf values, a singular or non-finite affine.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, f"{kind} file does not exist")
    try:
        img = _LOAD(str(path), reader=_reader_for(path, series_id))
    except DataError:
        raise
    except Exception as e:  # MONAI/nibabel/gzip raise many types; the user needs the file name
        raise DataError(path, f"cannot read {kind} ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from e
    if img.ndim < 4 and img.shape[0] > 1:  # channels of a 2D image: RGB(A) pixels
        raise DataError(path, f"expected a 3D {kind} volume, got a 2D colour image (a photograph?): "
                              f"{img.shape[0]} values per pixel on a {tuple(img.shape[1:])} grid")
    if img.ndim != 4 or img.shape[0] != 1:
        spatial = tuple(img.shape[1:]) if img.shape[0] == 1 else tuple(img.shape)
        raise DataError(path, f"expected a 3D {kind} volume, got shape {spatial} ({len(spatial)}D)")
    if any(s < 2 for s in img.shape[1:]):
        raise DataError(path, f"expected a 3D {kind} volume, got shape {tuple(img.shape[1:])} (a 2D image?)")
    img = img.float()
    if not torch.isfinite(img).all():
        n_bad = int((~torch.isfinite(img)).sum())
        raise DataError(path, f"{kind} contains {n_bad} NaN/Inf voxel(s)")
    check_affine(img.affine, path, kind)
    return _TO_RAS(img)


def _header_geometry(path: Path, series_id: str = "") -> tuple[tuple[int, ...], int, np.ndarray | None]:
    """Voxel grid of ``path`` from its header(s) alone, no pixel data read: ``(shape, components, RAS affine)``.

    ``shape`` is the spatial grid (``(X, Y, Z)`` for a volume; trailing singleton axes dropped, as
    :func:`load_volume` does), ``components`` the values per voxel (3 for RGB), the affine ``(4, 4)`` as the
    reader will give it (None when the grid is not 3D). A DICOM series folder is checked as
    :class:`~mednet.data.readers.SimpleITKReader` reads it (:func:`~mednet.data.readers.dicom_series_info`).
    """
    if path.is_dir():
        info = dicom_series_info(path, series_id=series_id)
        return info.size, info.components, orientation_ras_lps(info.affine_lps)
    if path.name.lower().endswith(NIBABEL_SUFFIXES):
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.header.get_data_shape())
        components, affine = 1, np.asarray(img.affine, dtype=np.float64)
    else:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        shape, components = tuple(int(s) for s in reader.GetSize()), int(reader.GetNumberOfComponents())
        affine = orientation_ras_lps(lps_affine(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin()))
    while len(shape) > 3 and shape[-1] == 1:  # as load_volume: (X, Y, Z, 1[, 1]) is 3D
        shape = shape[:-1]
    return shape, components, (affine if affine.shape == (4, 4) else None)


def _ras_grid(shape: Sequence[int], affine: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine after MONAI's ``Orientation("RAS")`` (nibabel's ``io_orientation``, as MONAI uses it): two
    files storing the same grid in different voxel orders are loaded as the same RAS grid."""
    ornt = nib.orientations.io_orientation(affine)
    ras_shape = [0, 0, 0]
    for axis, (to, _) in enumerate(ornt):
        ras_shape[int(to)] = int(shape[axis])
    return tuple(ras_shape), affine @ nib.orientations.inv_ornt_aff(ornt, tuple(shape))


def _header_problem(err: Exception) -> str:
    """The reason a header could not be read: SimpleITK's ERROR line (not its C++ source location), else the
    exception's first line."""
    if isinstance(err, RuntimeError) and "SimpleITK" in str(err):
        return sitk_problem(err)
    text = str(err).splitlines()[0][:200] if str(err) else ""
    return f"{type(err).__name__}: {text}"


def check_volume_headers(items: Sequence[Mapping[str, str]], keys: Sequence[str] = ("image", "mask", "label")
                         ) -> list[dict]:
    """Check every listed volume's header before any volume is processed; return ``items`` unchanged.

    Inference over a folder or datalist loads one volume at a time and writes its segmentation; a file that
    cannot be read, is not 3D, or does not match its image, found only at its turn would stop the run with the
    earlier outputs written, and the re-run (after fixing that file) would then stop on them. Reading the
    headers first (nibabel / SimpleITK ``ReadImageInformation``, milliseconds per file; every slice header of
    a DICOM series folder, as :func:`mednet.data.readers.dicom_series_info` checks it) finds these problems
    before anything is written. A mask or label must have its image's grid: the same shape and affine after
    reorientation to RAS (as :func:`load_labelled_volume` compares them). The pixel data is checked when the
    volume is loaded (:func:`load_volume`: NaN/Inf, truncation, affine).

    Raises:
        DataError: ``"<path>: <problem>"`` for a missing file, an unreadable header or DICOM series, a grid that
            is not 3D or has several values per voxel (colour), or a mask/label whose grid differs from its image.
    """
    for item in items:
        grids: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
        for key in keys:
            value = item.get(key)
            if not value:
                continue
            path = Path(value)
            kind = "image" if key == "image" else key
            if not path.exists():
                raise DataError(path, f"{kind} file does not exist")
            try:
                shape, components, affine = _header_geometry(path, str(item.get("series_id") or "")
                                                             if key == "image" else "")
            except DataError:
                raise
            except Exception as e:  # nibabel and SimpleITK raise many types; the user needs the file name
                raise DataError(path, f"cannot read the {kind}'s header (corrupt, truncated or not an image file: "
                                      f"{_header_problem(e)})") from e
            if components > 1:  # RGB(A) pixels: SimpleITK reports them apart from the grid
                flat = len(shape) < 3 or min(shape) < 2
                what = "2D colour image (a photograph?)" if flat else "colour volume"
                raise DataError(path, f"expected a 3D greyscale {kind} volume, got a {what}: {components} values "
                                      f"per {'pixel' if flat else 'voxel'} on a {shape} grid")
            if len(shape) != 3:
                raise DataError(path, f"expected a 3D {kind} volume, got shape {shape} ({len(shape)}D)")
            if any(s < 2 for s in shape):
                raise DataError(path, f"expected a 3D {kind} volume, got shape {shape} (a 2D image?)")
            if affine is not None and np.isfinite(affine).all() and abs(np.linalg.det(affine[:3, :3])) > 0:
                grids[key] = _ras_grid(shape, affine)  # a broken affine is refused, naming it, at load
        if "image" in grids:
            for key in keys:
                if key == "image" or key not in grids:
                    continue
                (shape, affine), (ref_shape, ref_affine) = grids[key], grids["image"]
                if shape != ref_shape or not np.allclose(affine, ref_affine, atol=_GEOMETRY_ATOL):
                    differs = (f"shape {shape} vs {ref_shape} (RAS)" if shape != ref_shape else
                               f"affine differs by up to {np.abs(affine - ref_affine).max():.4g} mm")
                    raise DataError(item[key], f"{key} does not match its image {item['image']}: {differs}; "
                                               f"the {key} must be on the image's voxel grid")
    return list(items)


def check_affine(affine: torch.Tensor | np.ndarray, path: str | os.PathLike | None, kind: str = "image") -> None:
    """Raise :class:`DataError` unless the voxel-to-world ``affine`` (4×4) is finite and invertible.

    A broken orientation header (e.g. an sform with a zero column) otherwise fails deep inside the reorientation
    with a message that names neither the file nor the header.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise DataError(path, f"{kind} has an invalid voxel-to-world affine (not a finite 4x4 matrix): its header is broken")
    columns = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    # |det| relative to the product of the column lengths: 0 when two axes are parallel or one has length 0
    if columns.min() <= 0 or abs(np.linalg.det(a[:3, :3])) < 1e-6 * float(np.prod(columns)):
        raise DataError(path, f"{kind} has a singular voxel-to-world affine (voxel sizes {np.round(columns, 4).tolist()} mm, "
                              f"columns not independent): its orientation header (NIfTI sform/qform) is broken; "
                              "rewrite it with the scanner's geometry")


def check_label_values(
    label: torch.Tensor | np.ndarray, path: str | os.PathLike | None, allowed: Sequence[int] = tuple(LABEL_NAMES)
) -> None:
    """Raise :class:`DataError` unless ``label`` holds only integer values from ``allowed`` and some foreground."""
    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    values = np.unique(arr)
    bad = [v for v in values.tolist() if v not in allowed]
    if bad:
        shown = ", ".join(f"{v:.7g}" for v in bad[:10]) + (f", … ({len(bad)} values)" if len(bad) > 10 else "")
        raise DataError(path, f"label values {{{shown}}} are not in the allowed set {sorted(allowed)}")
    if values.max(initial=0) == 0:
        raise DataError(path, "label volume is all background (no tissue voxel)")


def round_label_values(label: MetaTensor, atol: float = 1e-3) -> MetaTensor:
    """Round a label volume whose values are all within ``atol`` of an integer (float storage, ``scl_slope``
    scaling: 2.9999998 is label 3); otherwise return it unchanged, for :func:`check_label_values` to refuse."""
    rounded = torch.round(label)
    return rounded if float((label - rounded).abs().max()) <= atol else label


def binarize_brain_mask(mask: MetaTensor, path: str | os.PathLike | None, threshold: float = 0.5) -> MetaTensor:
    """Brain mask volume → bool: non-zero voxels for an integer-valued mask (0/1, 0/255, a label map), ``mask ≥
    threshold × max`` for one with fractional values (a probability map or a smoothed/resampled mask, where the
    many small positive values around the brain are not brain).

    Raises:
        DataError: the mask is empty.
    """
    fractional = bool((mask != torch.round(mask)).any())
    if fractional:
        cut = threshold * float(mask.max())
        logger.warning("%s: brain mask has fractional values (a probability map?): brain = mask >= %.4g", path, cut)
        brain = mask >= cut
    else:
        brain = mask > 0
    if not bool(brain.any()):
        raise DataError(path, "brain mask is empty")
    return brain


#: largest difference between an image's and its mask's/label's affine entries still read as the same grid
_GEOMETRY_ATOL = 1e-3


def _same_geometry(a: MetaTensor, b: MetaTensor, atol: float = _GEOMETRY_ATOL) -> bool:
    return a.shape[1:] == b.shape[1:] and np.allclose(
        np.asarray(a.affine, dtype=float), np.asarray(b.affine, dtype=float), atol=atol
    )


def load_labelled_volume(
    image: str | os.PathLike,
    label: str | os.PathLike | None = None,
    mask: str | os.PathLike | None = None,
    series_id: str = "",
) -> dict[str, MetaTensor]:
    """Load an image with its optional tissue label and brain mask, checked against each other.

    Without a mask, intensity 0 is the background: background values that are float residue rather than exact
    zeros are set to 0 (:func:`mednet.data.scan_checks.zero_background_residue`; exact-zero scans unchanged).

    Returns:
        ``{"image": (1, X, Y, Z), "label": (1, X, Y, Z) | absent, "mask": (1, X, Y, Z) bool | absent}``, all RAS.

    Raises:
        DataError: naming the file when a volume is unreadable, shapes or affines disagree, the label holds
            values other than 0–3 or no tissue, the mask is empty, or the image is all zero.
    """
    out = {"image": load_volume(image, "image", series_id)}  # series_id: which series of a DICOM folder
    if float(out["image"].abs().max()) == 0:
        raise DataError(image, "image is all zero (empty volume)")
    if mask is None:  # intensity 0 is background: float residue there (1e-16 after resampling) is background too
        out["image"], n_residue = zero_background_residue(out["image"])
        if n_residue:
            logger.info("%s: %d background voxel(s) of float residue (at least %g times below the brain's "
                        "intensities) set to 0", image, n_residue, 1 / BACKGROUND_RESIDUE)
    for key, path in (("label", label), ("mask", mask)):
        if path is None:
            continue
        vol = load_volume(path, key)
        if not _same_geometry(out["image"], vol):
            raise DataError(
                path,
                f"{key} does not match its image {image}: shape {tuple(vol.shape[1:])} vs "
                f"{tuple(out['image'].shape[1:])} or affine differs\n{key} affine:\n{np.asarray(vol.affine)}\n"
                f"image affine:\n{np.asarray(out['image'].affine)}",
            )
        if key == "label":
            vol = round_label_values(vol)
            check_label_values(vol, path)
        else:
            vol = binarize_brain_mask(vol, path)
        out[key] = vol
    check_brain_signal(out["image"], out.get("mask"), image, mask)
    return out


def check_brain_signal(image: torch.Tensor, mask: torch.Tensor | None, path: str | os.PathLike | None,
                       mask_path: str | os.PathLike | None = None) -> None:
    """Raise :class:`DataError` when the brain (``mask``, else the non-zero voxels) holds no tissue contrast.

    Normalisation would otherwise divide by zero (NaN everywhere, every voxel labelled CSF) or equalise a flat
    histogram (every voxel 0.5), and the model would segment noise with exit status 0.

    Args:
        image: ``(1, X, Y, Z)`` volume; ``mask``: the same shape, bool, or None (non-zero voxels).
    """
    inside = image[mask] if mask is not None else image[image != 0]
    if mask is not None and not bool((inside != 0).any()):
        raise DataError(path, f"every image voxel inside the brain mask {mask_path} is 0: the mask does not cover "
                              "this image's brain (a mask of another scan, or flipped?)")
    lo, hi = float(inside.min()), float(inside.max())
    if hi - lo <= 1e-6 * max(abs(lo), abs(hi)):
        raise DataError(path, f"intensity is constant ({hi:g}) over the brain's {inside.numel()} voxel(s): no tissue "
                              "contrast to segment (a mask or label file given as the image?)")


#: intensity normalisation modes of :func:`normalize_brain_intensity`
INTENSITY_NORMALIZATIONS = ("histogram", "scale", "zscore")


def _plain_mask(mask: torch.Tensor | np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``mask`` as a plain bool tensor: a MetaTensor mask first in ``torch.where`` (or any op) would give the result
    the *mask's* metadata, and the segmentation would be written in the mask file's layout, named after it."""
    mask = mask.as_tensor() if isinstance(mask, MetaTensor) else torch.as_tensor(mask)
    return mask.to(device).bool()


def normalize_brain_intensity(image: torch.Tensor, mode: str = "histogram", num_bins: int = 1024,
                              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalise brain (non-zero) intensities; background stays exactly 0 so the intensity-0 rule still works.

    Args:
        image: ``(1, X, Y, Z)`` (or any shape) volume with background 0.
        mode: ``"scale"`` divides by the mean brain intensity: tissue ≈ 0.3–1.3 on T1 and background
            (0) stays the darkest value, as in the scan, so the zero padding around slices and the zeros
            outside the brain look like background to the network. ``"histogram"`` (default) equalises the brain's
            histogram (MONAI :class:`~monai.transforms.HistogramNormalize` over the brain mask, values in
            [0, 1]): each voxel becomes its intensity rank within the brain, which removes differences in
            contrast (gamma), gain and scanner scaling between subjects — any monotonic intensity change —
            while background stays 0 and CSF, the darkest tissue, stays next to it. ``"zscore"`` subtracts the
            brain mean and divides by the std (MONAI ``NormalizeIntensity(nonzero=True)``): background 0 then
            equals the mean brain intensity, i.e. looks like tissue to the network.
        num_bins: histogram bins of the ``"histogram"`` mode.
        mask: ``image``-shaped bool brain mask; by default the non-zero voxels. Every voxel outside it becomes 0.
    """
    if mode not in INTENSITY_NORMALIZATIONS:
        raise ValueError(f"unknown intensity normalisation {mode!r}; choose one of {', '.join(INTENSITY_NORMALIZATIONS)}")
    brain = (image != 0) if mask is None else _plain_mask(mask, image.device)
    if mode == "zscore":
        # MONAI works in place (clone); with a mask, statistics over the mask only, background then set to 0
        if mask is None:
            return NormalizeIntensity(nonzero=True, channel_wise=True)(image.clone())
        inside = image[brain]
        # population std: one voxel gives 0 (clamped), not NaN as the unbiased estimate would
        return ((image - inside.mean()) / inside.std(unbiased=False).clamp_min(1e-8)) * brain
    if not bool(brain.any()):
        return image * brain
    if mode == "histogram":
        equalised = HistogramNormalize(num_bins=num_bins, min=0, max=1, mask=brain, dtype=None)(image)
        return equalised * brain  # MONAI maps the background through the CDF too; keep it exactly 0
    return image * brain / image[brain].abs().mean().clamp_min(1e-8)


def clip_brain_intensity(image: torch.Tensor, mask: torch.Tensor, lower: float = 0.5, upper: float = 99.5
                         ) -> tuple[torch.Tensor, tuple[float, float]]:
    """Clip intensities inside ``mask`` to their ``lower``–``upper`` percentiles (robust to outlier voxels).

    One corrupt voxel at 10⁴× the brain's maximum otherwise squeezes every brain voxel into the first of the
    histogram's bins (the whole brain became "CSF"), and drags the ``scale`` mode's mean. MONAI's
    ``ClipIntensityPercentiles`` takes its percentiles over the whole image, background included; here they are
    taken over the brain only. Voxels outside the mask are unchanged.

    Returns:
        ``(clipped image, (low, high))``.
    """
    brain = _plain_mask(mask, image.device)
    inside = image[brain].float()
    if inside.numel() == 0:
        return image, (0.0, 0.0)
    if inside.numel() > 4_000_000:
        # a large brain (a 0.5 mm scan) on every voxel, as numpy's partition does at any size: a regular subsample
        # (every 2nd voxel) read only the even slices of a scan with interleaved-slice intensity differences
        lo, hi = (float(v) for v in np.percentile(inside.detach().cpu().numpy(), [lower, upper]))
    else:
        q = torch.quantile(inside, torch.tensor([lower / 100.0, upper / 100.0], dtype=inside.dtype, device=inside.device))
        lo, hi = float(q[0]), float(q[1])
    return torch.where(brain, image.clamp(lo, hi), image), (lo, hi)


def save_label_volume(
    labels: torch.Tensor | np.ndarray,
    reference: MetaTensor,
    out_path: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """Write a label volume computed in RAS back in the space of the file ``reference`` was loaded from.

    Args:
        labels: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` integer labels on ``reference``'s RAS grid.
        reference: the image as returned by :func:`load_volume` (its orientation step is undone).
        out_path: ``.nii`` or ``.nii.gz`` file to write (also for DICOM/MHA/NRRD inputs).
        overwrite: replace an existing file; by default an existing output is refused.

    Returns:
        The written path. The file has the input's original shape and affine.
    """
    out_path = Path(out_path)
    refuse_existing(out_path, overwrite=overwrite)
    labels_t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if labels_t.ndim == 3:
        labels_t = labels_t[None]
    if tuple(labels_t.shape[1:]) != tuple(reference.shape[1:]):
        raise DataError(
            out_path, f"label shape {tuple(labels_t.shape[1:])} does not match the image grid {tuple(reference.shape[1:])}"
        )
    ops = [dict(op) for op in reference.applied_operations]
    if ops and ops[-1].get(TraceKeys.CLASS_NAME) == type(_TO_RAS).__name__:
        # MONAI matches an inverse to the transform *instance* (its id). A reference loaded in a DataLoader worker
        # (another process) carries that process's instance id, which MONAI forgives only under "spawn";
        # "forkserver" (Python 3.14's default on Linux) would fail here. The step is ours: claim it.
        ops[-1][TraceKeys.ID] = id(_TO_RAS)
    pred = MetaTensor(labels_t.to(torch.float32).cpu(), meta=dict(reference.meta), applied_operations=ops)
    # Undo Orientation (and only that) with MONAI's own inverse, so the geometry maths is not ours.
    restored = _TO_RAS.inverse(pred)
    affine = np.asarray(reference.meta["original_affine"], dtype=np.float64)
    arr = np.rint(restored.array[0]).astype(np.uint8)
    expected = tuple(int(s) for s in np.asarray(reference.meta["spatial_shape"]).tolist())
    if arr.shape != expected:  # defensive: MONAI's inverse must give back the file's grid
        raise DataError(out_path, f"restored shape {arr.shape} differs from the input's {expected}")
    out = nib.Nifti1Image(arr, affine)
    # sform and qform both set (nibabel's default leaves the qform unset, code 0, which readers preferring the qform
    # handle less well), with the input NIfTI's own sform code (1 scanner, 2 aligned, …; 1 for DICOM/MHA/NRRD)
    code = int(np.asarray(reference.meta.get("sform_code", 0)).item() or 1)
    out.set_sform(affine, code=code)
    out.set_qform(affine, code=code)
    with atomic_path(out_path, overwrite=overwrite) as tmp:  # never a half-written NIfTI; tmp ends in .nii.gz
        nib.save(out, str(tmp))
    return out_path


def describe_volume(vol: Mapping | MetaTensor) -> str:
    """One line: shape, voxel spacing and orientation codes of a loaded volume (for logs and reports)."""
    aff = np.asarray(vol.affine if isinstance(vol, MetaTensor) else vol["affine"], dtype=float)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    codes = "".join(nib.aff2axcodes(aff))
    return f"shape {tuple(int(s) for s in vol.shape[1:])}, spacing {tuple(np.round(spacing, 3).tolist())} mm, {codes}"
