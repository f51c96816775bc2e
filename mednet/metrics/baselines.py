"""Naive reference segmentations a trained model is compared with (benchmarks, reports).

* :func:`gmm_tissue_segmentation` — a 3-class Gaussian mixture on the brain intensities of one T1 volume,
  classes ordered by mean intensity (CSF < GM < WM on T1). No training data, no spatial context: what
  intensity clustering alone gets. Used by ``benchmarks/bench_brain_dice.py`` and
  ``benchmarks/bench_brain_robustness.py``.

scikit-learn's ``GaussianMixture`` does the fitting; scikit-learn comes with nilearn (a mednet dependency)
and is imported only when the function is called.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["gmm_tissue_segmentation"]


def gmm_tissue_segmentation(
    image: np.ndarray | torch.Tensor,
    brain_mask: np.ndarray | torch.Tensor | None = None,
    max_fit_voxels: int = 200_000,
    random_state: int = 0,
) -> np.ndarray:
    """Tissue labels of a T1 volume from a 3-class Gaussian mixture on its brain intensities.

    Args:
        image: intensities, any shape (e.g. ``(X, Y, Z)`` or ``(1, X, Y, Z)``); any positive scaling (the
            mixture is fitted to the values as given, so a linear rescaling gives the same labels).
        brain_mask: bool array of the same shape (or broadcastable squeeze of it); default ``image != 0``
            (the intensity-0 background rule of skull-stripped scans).
        max_fit_voxels: the mixture is fitted on every k-th brain voxel so that at most about this many
            are used (then every brain voxel is assigned); keeps a 1 mm volume under a few seconds.
        random_state: seed of scikit-learn's k-means initialisation (same inputs → same labels).

    Returns:
        uint8 labels with the shape of ``image``: 0 outside the mask, 1 CSF, 2 GM, 3 WM — the mixture
        component with the lowest mean is CSF, the highest WM (T1 contrast).
    """
    from sklearn.mixture import GaussianMixture

    img = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    if not np.issubdtype(img.dtype, np.floating):
        img = img.astype(np.float64)  # float32 stays float32 (scikit-learn fits it as given)
    if brain_mask is None:
        brain = img != 0
    else:
        brain = np.asarray(brain_mask.detach().cpu() if isinstance(brain_mask, torch.Tensor) else brain_mask).astype(bool)
        brain = brain.reshape(img.shape)
    x = img[brain].reshape(-1, 1)
    if len(x) < 3:
        raise ValueError(f"a 3-class mixture needs at least 3 brain voxels, got {len(x)}")
    step = max(1, len(x) // int(max_fit_voxels))
    gmm = GaussianMixture(3, random_state=random_state).fit(x[::step])
    rank = np.empty(3, dtype=np.uint8)
    rank[np.argsort(gmm.means_[:, 0])] = np.arange(3)  # darkest = CSF, brightest = WM on T1
    labels = np.zeros(img.shape, dtype=np.uint8)
    labels[brain] = rank[gmm.predict(x)] + 1
    return labels
