"""PNG figures a person would rather see than read: convergence curves, confusion matrices, slices.

Matplotlib with the non-interactive ``Agg`` backend (works on headless workstations and CI). Figures are saved
atomically (:func:`mednet.io.atomic_path`; the temporary name keeps ``.png``, from which matplotlib picks the
format): ``convergence.png``, redrawn every epoch, is never seen half-written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from mednet.io import atomic_path  # noqa: E402

__all__ = ["plot_convergence", "plot_confusion_matrix", "plot_slices", "LABEL_CMAP"]

#: background black, CSF blue, GM grey-green, WM yellow
LABEL_CMAP = ListedColormap(["#000000", "#3b82f6", "#22a06b", "#facc15"])


def plot_convergence(metrics_csv: str | os.PathLike, png: str | os.PathLike, groups: dict[str, Sequence[str]] | None = None) -> Path:
    """One panel per group of per-epoch columns of ``metrics_csv`` (x axis: ``epoch``).

    Default groups: loss, train accuracy, validation accuracy, validation Dice — the course exercise's
    convergence plots. Missing columns are skipped.
    """
    df = pd.read_csv(metrics_csv)
    groups = groups or {
        "training loss": ["train_loss"],
        "training pixel accuracy": ["train_accuracy"],
        "validation accuracy": ["val_pixel_accuracy", "val_acc_CSF", "val_acc_GM", "val_acc_WM"],
        "validation Dice": ["val_mean_dice", "val_dice_CSF", "val_dice_GM", "val_dice_WM"],
    }
    groups = {t: [c for c in cols if c in df] for t, cols in groups.items()}
    groups = {t: cols for t, cols in groups.items() if cols}
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4.2 * max(len(groups), 1), 3.4), squeeze=False)
    for ax, (title, cols) in zip(axes[0], groups.items()):
        for c in cols:
            ax.plot(df["epoch"], df[c], marker="o", ms=3, label=c)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(cols) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, png, dpi=110)


def _save(fig: plt.Figure, png: str | os.PathLike, dpi: int) -> Path:
    try:
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(png)


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str], png: str | os.PathLike, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = truth) with raw counts in each cell."""
    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.1 * len(names) + 1.4))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n{int(cm[i, j]):,}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)", fontsize=9)
    fig.tight_layout()
    return _save(fig, png, dpi=110)


def plot_slices(image: np.ndarray, pred: np.ndarray, label: np.ndarray | None, png: str | os.PathLike,
                axis: int = -1, title: str = "") -> Path:
    """Input / prediction / ground truth for a top, middle and bottom slice of a volume along ``axis``.

    ``image``, ``pred``, ``label``: ``(X, Y, Z)`` arrays on the same grid. The top/bottom slices are taken at
    20 % / 80 % of the brain's extent along the axis so they show tissue.
    """
    axis = axis % 3
    fg = np.moveaxis(pred > 0 if label is None else label > 0, axis, 0).reshape(pred.shape[axis], -1).any(1)
    idx = np.flatnonzero(fg) if fg.any() else np.arange(pred.shape[axis])
    picks = [int(idx[int(round(q * (len(idx) - 1)))]) for q in (0.8, 0.5, 0.2)]
    rows = [("input", image, "gray"), ("prediction", pred, LABEL_CMAP)] + ([("ground truth", label, LABEL_CMAP)] if label is not None else [])
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (name, vol, cmap) in enumerate(rows):
        for c, (pos, s) in enumerate(zip(("top", "middle", "bottom"), picks)):
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
                ax.set_title(f"{pos} (slice {s})", fontsize=9)
            if c == 0:
                ax.set_ylabel(name)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, png, dpi=90)
