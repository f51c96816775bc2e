"""The MNI ICBM152 2009a template shipped inside ``nilearn``, turned into a labelled brain volume.

nilearn ships the skull-stripped T1 and the grey/white-matter probability maps (197×233×189, 1 mm, values
0–255) in ``nilearn/datasets/data``; nothing is downloaded. Tissue labels are defined as::

    mask  = fill_holes(binary_closing(gm + wm > 0.1, iterations=3))
    label = argmax([1 - mask, mask * clip(1 - gm - wm, 0, 1), gm, wm])   # 0 bg, 1 CSF, 2 GM, 3 WM

with ``gm`` and ``wm`` scaled to [0, 1] (about 10 % CSF, 57 % GM, 33 % WM of brain voxels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["MNI152_FILES", "mni152_paths", "mni152_tissue_labels", "MNI152Template", "load_mni152_template"]

MNI152_FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}


def mni152_paths() -> dict[str, Path]:
    """Paths of the T1, GM and WM template files inside the installed nilearn package."""
    import nilearn

    base = Path(nilearn.__file__).parent / "datasets" / "data"
    paths = {k: base / name for k, name in MNI152_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"nilearn does not ship the MNI152 2009a files here: {missing}")
    return paths


def mni152_tissue_labels(gm: np.ndarray, wm: np.ndarray, threshold: float = 0.1, closing_iterations: int = 3) -> np.ndarray:
    """Tissue labels from GM/WM probability maps in [0, 1].

    Args:
        gm, wm: ``(X, Y, Z)`` probability maps scaled to [0, 1].

    Returns:
        ``(X, Y, Z)`` uint8 labels: 0 background, 1 CSF, 2 GM, 3 WM.
    """
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(gm + wm > threshold, iterations=closing_iterations))
    csf = mask * np.clip(1.0 - gm - wm, 0.0, 1.0)
    stack = np.stack([1.0 - mask, csf, gm * mask, wm * mask])
    return np.argmax(stack, axis=0).astype(np.uint8)


@dataclass
class MNI152Template:
    """``t1`` float32 (X, Y, Z) in 0–255 with background 0, ``label`` uint8 (X, Y, Z), ``affine`` 4×4 (RAS mm)."""

    t1: np.ndarray
    label: np.ndarray
    affine: np.ndarray


def load_mni152_template(zoom: float = 1.0) -> MNI152Template:
    """Load the template and its labels; ``zoom < 1`` shrinks it (for fast tests), updating the affine.

    The T1 is masked by the label's brain mask so that "intensity 0" and "background" are the same voxels,
    as in a skull-stripped scan.
    """
    paths = mni152_paths()
    imgs = {k: nib.load(str(p)) for k, p in paths.items()}
    t1 = imgs["t1"].get_fdata(dtype=np.float32)
    gm = imgs["gm"].get_fdata(dtype=np.float32) / 255.0
    wm = imgs["wm"].get_fdata(dtype=np.float32) / 255.0
    affine = imgs["t1"].affine.copy()
    if zoom != 1.0:
        shape = t1.shape
        t1, gm, wm = (ndimage.zoom(a, zoom, order=1) for a in (t1, gm, wm))
        # ndimage.zoom maps the first and last voxels onto the first and last (grid_mode=False): output voxel j
        # samples input voxel j · (n − 1) / (m − 1), so that is the new voxel size in input voxels, not 1 / zoom
        # (at zoom 0.5 the difference reaches 2 mm at the far end of the volume); voxel 0 stays where it was
        step = np.array([(n - 1) / max(m - 1, 1) for n, m in zip(shape, t1.shape)])
        affine[:3, :3] = affine[:3, :3] * step[None, :]
    label = mni152_tissue_labels(gm, wm)
    brain = label > 0
    # a few brain voxels are 0 in the T1; keep them distinguishable from background
    t1 = np.where(brain, np.maximum(t1, 1.0), 0.0).astype(np.float32)
    return MNI152Template(t1=t1, label=label, affine=affine)
