"""Refuse scans the brain model cannot segment when no brain mask is given.

Without a mask, "background" is every voxel of intensity 0 (a skull-stripped scan). A scan that still has its
skull, scalp and neck, or noisy air around the head, or a CT volume, passes every file check but would have
every non-zero voxel labelled as tissue — a silent, plausible-looking wrong answer. These checks detect such
scans from simple, documented signs and raise :class:`~mednet.errors.DataError` naming the file, what was
detected and what to do.

Signs (each measured on the volume as loaded, before any normalisation):

* **CT-like intensities**: at least 1 % of voxels below −200 and a minimum ≤ −500 (Hounsfield units: air is
  −1000). Magnitude MR images are non-negative apart from small interpolation undershoot.
* **Background not zero**: more than 5 % of the voxels on the volume's outer faces are non-zero (float residue
  counted as 0, see below), not counting the two opposite faces with the most brain on them. A skull-stripped
  brain does not reach the edge of the field of view (MNI template: 0.02 %) except where a slab acquisition or a
  crop cuts through it — along one axis, hence the two faces left out; raw MR has noise in the air on every
  face, and a head that is masked but not skull-stripped is caught by its size (below).
* **Too large for a brain**: the non-zero region measures more than ``max_brain_ml`` (3,000 ml by default). An
  adult intracranial volume is 1.2–1.9 l (the MNI152 2009a brain mask: 1.93 l); a whole head is 3.5–5 l.

Background residue: a skull-stripped scan stored as float after resampling or smoothing may hold background values
that are not exactly 0 but float noise (nilearn's 2 mm MNI template saved as float32: 2.8e-16 on 266k voxels).
Where intensity 0 is the background rule, non-zero values at least 6 decades below a brain's worth of voxels
(:func:`background_residue_threshold`) are background (:func:`zero_background_residue` sets them to 0 at load); a
scan whose background is exactly 0 is left unchanged, bit for bit, and a few hot voxels never make the brain
"residue".
"""

from __future__ import annotations

import os

import numpy as np
import torch

from mednet.errors import DataError

__all__ = ["check_skull_stripped", "zero_background_residue", "background_residue_threshold", "BACKGROUND_RESIDUE",
           "SKULL_STRIPPING_TOOLS"]

#: named in the error message: tools that produce the brain mask / skull-stripped scan the model needs
SKULL_STRIPPING_TOOLS = "SynthStrip (FreeSurfer mri_synthstrip), HD-BET, FSL BET or ANTs antsBrainExtraction"


#: background residue lies at least this factor below the brain's intensities (a gap of 6 decades)
BACKGROUND_RESIDUE = 1e-6
#: the intensities above the gap must be a brain, not a few hot voxels: at least this many voxels, and this share
MIN_BRAIN_VOXELS, MIN_BRAIN_SHARE = 1000, 0.01


def background_residue_threshold(image: torch.Tensor | np.ndarray) -> float:
    """The largest |intensity| counted as background residue, 0.0 when there is none (only exact zeros are then
    background).

    Residue (e.g. 1e-16 left by resampling a skull-stripped scan) is a group of non-zero values separated from
    everything above it by a gap of at least a factor ``1 / BACKGROUND_RESIDUE`` (6 decades), where what lies
    above the gap is a brain: at least :data:`MIN_BRAIN_VOXELS` voxels and :data:`MIN_BRAIN_SHARE` of the non-zero
    ones. A few corrupt voxels 10⁹ times brighter than the brain are such a gap too, but with the brain *below* it:
    the count rule keeps them from turning the whole brain into "residue" (the percentile clipping then handles
    them). The lowest such gap is used.
    """
    arr = np.abs(np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)).ravel()
    values = arr[arr != 0]
    if values.size == 0 or values.min() > BACKGROUND_RESIDUE * values.max():  # no 6-decade gap possible: no sort
        return 0.0
    logs = np.sort(np.log10(values.astype(np.float64)))
    gaps = np.flatnonzero(np.diff(logs) >= -np.log10(BACKGROUND_RESIDUE))  # last index below each gap
    above = logs.size - 1 - gaps
    enough = (above >= MIN_BRAIN_VOXELS) & (above >= MIN_BRAIN_SHARE * logs.size)
    if not enough.any():
        return 0.0
    return float(10 ** logs[gaps[np.argmax(enough)]])


def zero_background_residue(image: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``image`` with its background residue (non-zero ``|v| ≤`` :func:`background_residue_threshold`) set to
    exactly 0, and the number of voxels changed; ``image`` itself (same object, unchanged) when there is none.

    Only for the rule "intensity 0 is background" (no brain mask): the scan checks, the brain mask (non-zero
    voxels) and the normalisation then see a background of exact zeros.

    Args:
        image: ``(1, X, Y, Z)`` (or any shape) intensities; a MetaTensor keeps its metadata.
    """
    cut = background_residue_threshold(image)
    if cut == 0.0:
        return image, 0
    plain = image.as_tensor() if hasattr(image, "as_tensor") else image
    residue = (plain != 0) & (plain.abs() <= cut)
    return image.masked_fill(residue, 0), int(residue.sum())


def _faces(arr: np.ndarray, skip_axis: int | None = None) -> np.ndarray:
    """Voxels on the outer faces of ``arr`` ``(X, Y, Z)``, without the two faces normal to ``skip_axis``."""
    faces = [(arr[0], arr[-1]), (arr[:, 0], arr[:, -1]), (arr[:, :, 0], arr[:, :, -1])]
    return np.concatenate([f.ravel() for axis, pair in enumerate(faces) if axis != skip_axis for f in pair])


def _edge_fraction(nonzero: np.ndarray) -> float:
    """Fraction of non-zero voxels on the outer faces, leaving out the pair of opposite faces that lowers it most
    (the two faces a slab or a crop cuts through the brain)."""
    return min(float(_faces(nonzero, axis).mean()) for axis in range(3))


def check_skull_stripped(
    image: torch.Tensor | np.ndarray,
    path: str | os.PathLike | None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    max_brain_ml: float = 3000.0,
    max_face_fraction: float = 0.05,
) -> dict[str, float]:
    """Raise :class:`DataError` unless ``image`` looks like a skull-stripped MRI (background 0, float residue
    below :func:`background_residue_threshold` counted as 0).

    Args:
        image: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` intensities as loaded.
        path: the file, for the message.
        spacing: voxel size in mm (for the volume of the non-zero region).
        max_brain_ml: largest non-zero volume accepted as a brain.
        max_face_fraction: largest fraction of non-zero voxels on the outer faces.

    Returns:
        The measured signs ``{"nonzero_ml", "face_nonzero_fraction", "negative_fraction", "min"}``.
    """
    arr = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    arr = arr.reshape(arr.shape[-3:])
    fix = (f"pass its brain mask with --mask (a datalist item: a 'mask' entry), or skull-strip it first "
           f"({SKULL_STRIPPING_TOOLS})")
    lo = float(arr.min())
    negative = float((arr < -200).mean())
    if lo <= -500 and negative >= 0.01:
        raise DataError(path, f"intensities from {lo:g} to {float(arr.max()):g} with {negative:.0%} of voxels below -200 "
                              "look like CT (Hounsfield units); this model segments skull-stripped T1-weighted MRI")
    nonzero = np.abs(arr) > background_residue_threshold(arr)  # arr != 0 when there is no float residue
    face = _edge_fraction(nonzero)
    ml = float(nonzero.sum()) * float(np.prod(spacing)) / 1000.0
    if face > max_face_fraction:
        raise DataError(path, f"background is not zero: {face:.0%} of the voxels at the edge of the field of view are "
                              f"non-zero (noise, skull, scalp or neck; faces a slab cuts through not counted), so the "
                              f"scan is not skull-stripped; {fix}")
    if ml > max_brain_ml:
        raise DataError(path, f"the non-zero region measures {ml:,.0f} ml, more than a brain (about 1,200-1,900 ml): "
                              f"skull, scalp or neck are still there; {fix}")
    return {"nonzero_ml": round(ml, 1), "face_nonzero_fraction": round(face, 5), "negative_fraction": negative,
            "min": lo}
