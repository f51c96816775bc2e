"""Brain slice figures: input / predicted tissues / ground truth for a few slices of a volume."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from mednet.reports.plots import save_figure  # noqa: E402

__all__ = ["plot_tissue_slices", "TISSUE_CMAP"]

#: background black, CSF blue, GM grey-green, WM yellow
TISSUE_CMAP = ListedColormap(["#000000", "#3b82f6", "#22a06b", "#facc15"])
#: label values 0–3
TISSUE_NAMES = ("background", "CSF", "grey matter", "white matter")


def plot_tissue_slices(image: np.ndarray, pred: np.ndarray, label: np.ndarray | None, png: str | os.PathLike,
                axis: int = -1, title: str = "") -> Path:
    """Input / prediction / ground truth for three slices of a volume along ``axis``.

    ``image``, ``pred``, ``label``: ``(X, Y, Z)`` arrays on the same grid. The slices are taken at 80 %, 50 % and
    20 % of the brain's extent along the axis (of the labelled slices, else of the predicted ones) so they show
    tissue. Columns are titled by axis, slice index and that fraction (``"axis 2, slice 150 (80% of brain)"``),
    not "top / bottom": those words fit axial slices (axis 2 of a RAS volume) only, and the arrays need not be
    RAS-oriented.
    """
    axis = axis % 3
    fg = np.moveaxis(pred > 0 if label is None else label > 0, axis, 0).reshape(pred.shape[axis], -1).any(1)
    idx = np.flatnonzero(fg) if fg.any() else np.arange(pred.shape[axis])
    fractions = (0.8, 0.5, 0.2)
    picks = [int(idx[int(round(q * (len(idx) - 1)))]) for q in fractions]
    rows = [("input", image, "gray"), ("prediction", pred, TISSUE_CMAP)] + ([("ground truth", label, TISSUE_CMAP)] if label is not None else [])
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (name, vol, cmap) in enumerate(rows):
        for c, (q, s) in enumerate(zip(fractions, picks)):
            sl = np.take(vol, s, axis=axis)
            ax = axes[r, c]
            if cmap == "gray":  # background (exactly 0) drawn black, whatever the intensity scale
                ax.set_facecolor("black")
                ax.imshow(np.ma.masked_equal(np.rot90(sl), 0), cmap=cmap, interpolation="nearest")
            else:
                ax.imshow(np.rot90(sl), cmap=cmap, interpolation="nearest", vmin=0, vmax=3)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"axis {axis}, slice {s} ({q:.0%} of brain)", fontsize=9)
            if c == 0:
                ax.set_ylabel(name)
    if title:
        fig.suptitle(title, fontsize=9)
    # which colour is which tissue (the label maps have no other key)
    handles = [Patch(facecolor=TISSUE_CMAP(k), edgecolor="white", label=name)
               for k, name in enumerate(TISSUE_NAMES) if k > 0]
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    return save_figure(fig, png, dpi=90)
