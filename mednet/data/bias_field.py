"""N4 bias-field correction of brain MRI (SimpleITK), fitted inside the brain mask on a shrunken image.

MR images carry a smooth multiplicative intensity non-uniformity (the "bias field") from the receive coils. It
is not removed by intensity normalisation: histogram equalisation maps *global* intensity changes (gain,
gamma) away, but a field that brightens one side of the head by 20 % shifts white matter there into grey-matter
ranks. Measured on the MNI template with a MONAI ``RandBiasField`` field of coefficient 0.4: the coefficient of
variation of white-matter intensities rises from 0.049 to 0.229; after this correction it is 0.042.

N4 (Tustison et al., "N4ITK: Improved N3 Bias Correction", IEEE TMI 2010) is the standard, through SimpleITK's
:class:`SimpleITK.N4BiasFieldCorrectionImageFilter` (ITK's implementation, as in ANTs). MONAI has no bias-field
*correction* (only the ``RandBiasField`` augmentation), hence this module. Choices:

* the field is fitted on the image shrunken to ≈ ``fit_spacing_mm`` voxels (6 mm by default), inside the brain
  mask only — background, skull or neck would otherwise pull the fit. The cost scales with the fitting voxels:
  measured on the biased template above (one CPU thread, busy machine), 4 mm voxels took 27 s and left a WM
  variation of 0.0423, 6 mm 11.6 s and 0.0424, 8 mm 5.9 s and 0.0452 (fitting at 2 mm: > 90 s);
* three fitting levels (N4's B-spline mesh refined twice), not ANTs' four: with four, the finest mesh
  (≈ 25 mm control-point spacing) is fine enough to fit anatomy — on the *unbiased* template with 5 % noise it
  found a "field" of 0.82–1.25 that followed the white-matter core and cut the GM/WM contrast (d′ 2.76 → 1.73;
  a Gaussian-mixture segmentation fell from Dice 0.88 to 0.59). With three levels the contrast survives
  (d′ 2.65, Dice 0.87), a strong field (log-amplitude 0.4) is still removed (mixture Dice 0.70 → 0.91 either
  way), and the fit takes half the time;
* the fitted B-spline log-field is evaluated on the shrunken grid and interpolated trilinearly to full
  resolution (the field is smooth: max difference to ITK's full-resolution evaluation 0.003 in log units,
  10× faster), then divided out of every voxel;
* the field is normalised to mean 0 (log) inside the mask, so the corrected brain keeps its mean intensity.

Shapes: ``image`` and ``mask`` are ``(1, X, Y, Z)`` (or ``(X, Y, Z)``) tensors on an ``(X, Y, Z)`` grid with voxel
``spacing`` in mm.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

__all__ = ["BIAS_CORRECTIONS", "n4_bias_field", "correct_bias_field", "voxel_spacing"]

#: values of the ``bias_correction`` option
BIAS_CORRECTIONS = ("n4", "none")


def voxel_spacing(affine: torch.Tensor | np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes in mm (column norms of the affine's 3×3 part)."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(s) for s in np.sqrt((a**2).sum(axis=0)))  # type: ignore[return-value]


def _to_sitk(arr: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))  # SimpleITK arrays are (Z, Y, X)
    img.SetSpacing(tuple(float(s) for s in spacing))
    return img


def n4_bias_field(
    image: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    fit_spacing_mm: float = 6.0,
    iterations: Sequence[int] = (50, 50, 50),
    convergence_threshold: float = 1e-3,
) -> np.ndarray:
    """Estimate the multiplicative bias field of ``image`` inside ``mask`` with N4.

    Args:
        image: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` intensities (positive inside the mask).
        mask: same shape, True inside the brain; the field is fitted on these voxels only.
        spacing: voxel size in mm along X, Y, Z.
        fit_spacing_mm: the image is shrunken by ``round(fit_spacing_mm / spacing)`` per axis for the fit.
        iterations: N4 iterations per fitting level (its length is the number of levels; see the module doc
            for why three).
        convergence_threshold: N4's stopping threshold.

    Returns:
        ``(X, Y, Z)`` float32 field ``b`` with mean log 0 inside the mask; the corrected image is ``image / b``.
    """
    arr = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
    msk = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    arr, msk = arr.reshape(arr.shape[-3:]), msk.reshape(msk.shape[-3:])
    if not msk.any():
        return np.ones(arr.shape, np.float32)
    # N4 works on log intensities: keep the fitted voxels strictly positive
    floor = max(float(np.percentile(arr[msk], 1)), 1e-3) if (arr[msk] > 0).any() else 1.0
    img = _to_sitk(np.where(msk, np.maximum(arr, floor), 0).astype(np.float32), spacing)
    sitk_mask = _to_sitk(msk.astype(np.uint8), spacing)
    # at least 4 voxels per axis survive the shrinking (small test volumes; SimpleITK fails on empty axes)
    shrink = [max(1, min(int(round(fit_spacing_mm / s)), n // 4)) for s, n in zip(spacing, arr.shape)]
    small, small_mask = sitk.Shrink(img, shrink), sitk.Shrink(sitk_mask, shrink)
    if not sitk.GetArrayViewFromImage(small_mask).any():  # a tiny mask vanished when shrunk: fit at full size
        small, small_mask = img, sitk_mask
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetConvergenceThreshold(float(convergence_threshold))
    n4.Execute(small, small_mask)
    log_small = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(small)).transpose(2, 1, 0).astype(np.float32)
    # The field is a smooth B-spline: trilinear interpolation of its shrunken evaluation is enough (see module doc).
    log_field = F.interpolate(torch.from_numpy(np.ascontiguousarray(log_small))[None, None], size=arr.shape,
                              mode="trilinear", align_corners=True)[0, 0].numpy()
    log_field -= log_field[msk].mean()
    return np.exp(log_field).astype(np.float32)


def correct_bias_field(
    image: torch.Tensor,
    mask: torch.Tensor,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    method: str = "n4",
    **kwargs: object,
) -> tuple[torch.Tensor, dict]:
    """Divide the N4 bias field out of ``image`` (``method="none"`` returns it unchanged).

    Args:
        image: ``(1, X, Y, Z)`` tensor (a MetaTensor keeps its metadata).
        mask: ``(1, X, Y, Z)`` bool brain mask; voxels outside it are returned unchanged.
        spacing: voxel size in mm.
        method: ``"n4"`` or ``"none"``.
        kwargs: passed to :func:`n4_bias_field`.

    Returns:
        ``(corrected image, info)`` with ``info = {"method", "seconds", "field_min", "field_max"}`` (field range
        inside the mask: how strong the removed non-uniformity was).
    """
    if method not in BIAS_CORRECTIONS:
        raise ValueError(f"unknown bias correction {method!r}; choose one of {', '.join(BIAS_CORRECTIONS)}")
    if method == "none":
        return image, {"method": "none"}
    t0 = time.perf_counter()
    field = n4_bias_field(image, mask, spacing, **kwargs)  # type: ignore[arg-type]
    m = np.asarray(mask.detach().cpu()).reshape(field.shape).astype(bool)
    field_t = torch.from_numpy(np.where(m, field, 1.0).astype(np.float32)).reshape(image.shape).to(image.device)
    corrected = image / field_t
    inside = field[m] if m.any() else np.ones(1, np.float32)
    info = {"method": "n4", "seconds": round(time.perf_counter() - t0, 2),
            "field_min": round(float(inside.min()), 4), "field_max": round(float(inside.max()), 4)}
    return corrected, info
