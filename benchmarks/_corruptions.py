"""Scan corruptions of graded severity for the robustness benchmark (``bench_brain_robustness.py``).

Deliberately **independent of the training data generator** (``data_prep/demo_cohort.py``, MONAI
``Rand3DElasticd`` / ``RandBiasField`` / ``AdjustContrast`` / ``RandRicianNoise``) and kept out of
the ``mednet`` package so that training augmentation can never reuse it: numpy / scipy / SimpleITK only,
different field models and a different noise model.

Applied to a skull-stripped T1 ``image`` and its tissue ``label`` (``(X, Y, Z)`` arrays, RAS ``affine``),
in the order an acquisition would produce them:

1. **elastic** (anatomy): a smooth random displacement field — random vectors on a control grid every
   ``ELASTIC_CONTROL_MM`` mm, cubic-spline interpolated — scaled so that its largest displacement inside the
   brain is ``elastic_mm`` mm; image linear, label nearest (scipy ``map_coordinates``);
2. **anisotropy** (geometry): resampling to ``spacing_mm`` along one random voxel axis with SimpleITK, the
   image first smoothed along that axis by a Gaussian slice profile (FWHM² = spacing² − native²), image
   linear, label nearest — the result stays in that coarse geometry (the returned affine says so), as a real
   thick-slice scan would be evaluated;
3. **gamma** (contrast): ``max · (x / max) ** gamma`` over the brain;
4. **bias field** (coil): ``x · exp(f)`` with ``f`` a smooth random field (cubic-spline interpolated noise on
   a ``BIAS_CONTROL_MM`` grid plus a random linear ramp), zero mean over the brain and ``max |f| = bias``
   (the log-amplitude: 0.4 means intensities vary by up to ×e^0.4 = 1.49 and ÷1.49 around the mean);
5. **Rician noise** (magnitude image): ``sqrt((x + n1)² + n2²)``, ``n1, n2 ~ N(0, σ²)``, ``σ = noise ×``
   the median brain intensity;
6. re-mask: background (label 0) exactly 0, brain voxels at least 1 % of the median brain intensity
   (skull-stripped scan).

A corruption at its neutral value (0, gamma 1, spacing ≤ native) is skipped, so ``Severity()`` returns the
input unchanged. Each random step draws from its own stream, spawned from ``rng`` (``Generator.spawn``): leaving a
corruption out does not change the warp, axis, field or noise the others draw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

__all__ = ["Severity", "corrupt", "displacement_field", "smooth_log_field", "gamma_contrast", "rician_noise",
           "resample_axis", "ELASTIC_CONTROL_MM", "BIAS_CONTROL_MM"]

#: control-point spacing of the random displacement field (mm): local, gyrus-to-lobe scale warps
ELASTIC_CONTROL_MM = 24.0
#: control-point spacing of the random bias field (mm): smooth over the head, like a receive-coil profile
BIAS_CONTROL_MM = 80.0


@dataclass(frozen=True)
class Severity:
    """One subject's corruption parameters (neutral values = no corruption).

    Attributes:
        bias: log-amplitude of the bias field (``max |log field|`` over the brain).
        gamma: contrast exponent on intensities normalised to [0, 1].
        noise: Rician σ as a fraction of the median brain intensity.
        spacing_mm: voxel size along ``axis`` after resampling (mm); ≤ the native spacing: unchanged.
        elastic_mm: largest displacement inside the brain (mm).
        axis: voxel axis resampled to ``spacing_mm`` (None: drawn from ``rng`` by :func:`corrupt`).
    """

    bias: float = 0.0
    gamma: float = 1.0
    noise: float = 0.0
    spacing_mm: float = 0.0
    elastic_mm: float = 0.0
    axis: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _spline_upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Cubic-spline interpolation of a coarse grid spanning the whole volume onto ``shape`` (separable)."""
    out = coarse
    for axis, n in enumerate(shape):
        nc = out.shape[axis]
        out = CubicSpline(np.arange(nc), out, axis=axis)(np.linspace(0, nc - 1, n))
    return out.astype(np.float32)


def _control_shape(shape: tuple[int, ...], spacing: np.ndarray, control_mm: float) -> tuple[int, ...]:
    return tuple(int(max(4, np.ceil(n * s / control_mm) + 1)) for n, s in zip(shape, spacing))


def smooth_log_field(shape: tuple[int, ...], spacing: np.ndarray, amplitude: float, rng: np.random.Generator,
                     brain: np.ndarray) -> np.ndarray:
    """Random smooth log bias field: zero mean over ``brain`` and ``max |f| = amplitude`` there."""
    field = _spline_upsample(rng.normal(size=_control_shape(shape, spacing, BIAS_CONTROL_MM)), shape)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) * d for n, d in zip(shape, direction)]
    field += rng.uniform(0.5, 1.5) * (axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :])
    field -= field[brain].mean()
    return (field * (amplitude / np.abs(field[brain]).max())).astype(np.float32)


def displacement_field(shape: tuple[int, ...], spacing: np.ndarray, magnitude_mm: float, rng: np.random.Generator,
                       brain: np.ndarray) -> np.ndarray:
    """``(3, *shape)`` random smooth displacement (mm along each voxel axis), largest length in ``brain`` = magnitude."""
    cshape = _control_shape(shape, spacing, ELASTIC_CONTROL_MM)
    disp = np.stack([_spline_upsample(rng.normal(size=cshape), shape) for _ in range(3)])
    length = np.sqrt((disp**2).sum(0))
    return disp * np.float32(magnitude_mm / length[brain].max())


def warp(image: np.ndarray, label: np.ndarray, disp_mm: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``out(x) = in(x + d(x))``: image linear, label nearest, outside the volume 0."""
    grid = np.indices(image.shape, dtype=np.float32)
    coords = grid + disp_mm / spacing.astype(np.float32)[:, None, None, None]
    del grid
    img = ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=0.0, prefilter=False)
    lab = ndimage.map_coordinates(label, coords, order=0, mode="constant", cval=0, prefilter=False)
    return img.astype(np.float32), lab.astype(np.uint8)


def resample_axis(image: np.ndarray, label: np.ndarray, affine: np.ndarray, axis: int, spacing_mm: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample voxel ``axis`` to ``spacing_mm`` over the same extent (SimpleITK; image linear after a Gaussian
    slice profile, label nearest). Returns image, label and the new affine."""
    import SimpleITK as sitk

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    s0 = float(spacing[axis])
    n = image.shape[axis]
    sigma_mm = np.sqrt(max(spacing_mm**2 - s0**2, 0.0)) / np.sqrt(8 * np.log(2))  # FWHM → σ
    smoothed = ndimage.gaussian_filter1d(image, sigma_mm / s0, axis=axis, mode="constant") if sigma_mm > 0 else image
    new_n = max(1, int(round(n * s0 / spacing_mm)))
    new_origin = (n * s0 - new_n * spacing_mm) / 2 + spacing_mm / 2 - s0 / 2  # mm from the first voxel centre

    def to_sitk(a: np.ndarray) -> sitk.Image:  # voxel-axis-aligned frame: origin 0, identity direction
        img = sitk.GetImageFromArray(np.ascontiguousarray(a.transpose(2, 1, 0)))
        img.SetSpacing([float(s) for s in spacing])
        return img

    out_spacing = spacing.copy()
    out_spacing[axis] = spacing_mm
    out_size = list(image.shape)
    out_size[axis] = new_n
    origin = np.zeros(3)
    origin[axis] = new_origin
    ref = sitk.Image([int(s) for s in out_size], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in out_spacing])
    ref.SetOrigin([float(o) for o in origin])
    img = sitk.Resample(to_sitk(smoothed.astype(np.float32)), ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    lab = sitk.Resample(to_sitk(label.astype(np.uint8)), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    new_affine = affine.copy()
    new_affine[:3, axis] = affine[:3, axis] * (spacing_mm / s0)
    new_affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * (new_origin / s0)
    return (sitk.GetArrayFromImage(img).transpose(2, 1, 0).copy(), sitk.GetArrayFromImage(lab).transpose(2, 1, 0).copy(),
            new_affine)


def gamma_contrast(image: np.ndarray, brain: np.ndarray, gamma: float) -> np.ndarray:
    """``max · (x / max) ** gamma`` on brain voxels (intensities ≥ 0), background unchanged."""
    out = image.astype(np.float32).copy()
    top = float(out[brain].max())
    out[brain] = top * np.clip(out[brain] / top, 0.0, 1.0) ** gamma
    return out


def rician_noise(image: np.ndarray, brain: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise, σ = ``level`` × median brain intensity."""
    sigma = level * float(np.median(image[brain]))
    n1 = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    n2 = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.sqrt((image + n1) ** 2 + n2**2)


def corrupt(image: np.ndarray, label: np.ndarray, affine: np.ndarray, severity: Severity, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``severity`` (see the module docstring for the order and models) → image, label, affine."""
    image, label, affine = np.asarray(image, np.float32), np.asarray(label, np.uint8), np.asarray(affine, np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    changed = False
    # one independent stream per random step (spawning depends on no earlier draw): a subject with one corruption
    # left out gets the same warp, axis, field and noise as with all of them
    elastic_rng, axis_rng, bias_rng, noise_rng = rng.spawn(4)
    if severity.elastic_mm > 0:
        disp = displacement_field(image.shape, spacing, severity.elastic_mm, elastic_rng, label > 0)
        image, label = warp(image, label, disp, spacing)
        del disp
        changed = True
    axis = severity.axis if severity.axis is not None else int(axis_rng.integers(3))
    if severity.spacing_mm > spacing[axis] + 1e-6:
        image, label, affine = resample_axis(image, label, affine, axis, severity.spacing_mm)
        changed = True
    brain = label > 0
    if severity.gamma != 1.0:
        image = gamma_contrast(image, brain, severity.gamma)
        changed = True
    if severity.bias > 0:
        image = image * np.exp(smooth_log_field(image.shape, np.sqrt((affine[:3, :3] ** 2).sum(0)), severity.bias, bias_rng, brain))
        changed = True
    if severity.noise > 0:
        image = rician_noise(image, brain, severity.noise, noise_rng)
        changed = True
    if changed:
        floor = 0.01 * float(np.median(image[brain]))
        image = np.where(brain, np.maximum(image, floor), 0.0).astype(np.float32)
    return image, label, affine
