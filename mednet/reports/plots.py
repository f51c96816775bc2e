"""PNG figures of any task: convergence curves and confusion matrices (slice figures: :mod:`mednet.reports.slice_figures`).

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

from mednet.io import atomic_path  # noqa: E402

__all__ = ["plot_convergence", "plot_confusion_matrix", "save_figure"]

def plot_convergence(metrics_csv: str | os.PathLike, png: str | os.PathLike, groups: dict[str, Sequence[str]] | None = None) -> Path:
    """One panel per group of per-epoch columns of ``metrics_csv`` (x axis: ``epoch``).

    ``groups`` (panel title → column names) come from the task (e.g.
    :data:`mednet.metrics.segmentation.CONVERGENCE_GROUPS`); by default one panel for the training loss, one for
    the other training metrics and one for the validation metrics. Missing columns are skipped.
    """
    df = pd.read_csv(metrics_csv)
    groups = groups or {
        "training loss": ["train_loss"],
        "training": [c for c in df if c.startswith("train_") and c != "train_loss"],
        "validation": [c for c in df if c.startswith("val_")],
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
    return save_figure(fig, png, dpi=110)


def save_figure(fig: plt.Figure, png: str | os.PathLike, dpi: int) -> Path:
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
    return save_figure(fig, png, dpi=110)
