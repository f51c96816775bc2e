"""Reliability diagram with its confidence histogram (Guo et al. 2017, Fig. 1 layout).

Top panel: per-bin accuracy of the top-1 prediction against the diagonal (perfect calibration), the gap to
each bin's mean confidence shaded, ECE and OE in the legend. Bottom panel: how many samples fall into each
confidence bin, with vertical lines at the mean confidence and the accuracy. Bins, ECE and OE come from
:mod:`mednet.metrics.classification` (equal-width bins ``((m-1)/M, m/M]``, confidence 1.0 in the top bin),
so the figure and the report agree. :func:`plot_reliability_comparison` draws several such diagrams side by
side (before/after temperature scaling, or one per model) with the same drawing code. Matplotlib ``Agg``; written atomically like every figure
(:func:`mednet.reports.plots.save_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mednet.metrics.classification import (  # noqa: E402
    ArrayLike,
    expected_calibration_error,
    overconfidence_error,
    reliability_bins,
)
from mednet.reports.plots import save_figure  # noqa: E402

__all__ = ["plot_reliability_diagram", "plot_reliability_comparison"]


def _draw_reliability(top: plt.Axes, bottom: plt.Axes, probs: ArrayLike, labels: ArrayLike, n_bins: int,
                      title: str) -> None:
    """Draw one reliability diagram: bars, gaps, diagonal and legend on ``top``, confidence histogram on
    ``bottom`` (shared by :func:`plot_reliability_diagram` and :func:`plot_reliability_comparison`)."""
    bins = reliability_bins(probs, labels, n_bins)
    ece, oe = expected_calibration_error(probs, labels, n_bins), overconfidence_error(probs, labels, n_bins)
    edges, count = bins["edges"], bins["count"]
    left, width = edges[:-1], np.diff(edges)
    full = count > 0
    n = int(count.sum())
    mean_conf = float((bins["confidence"][full] * count[full]).sum() / n)
    accuracy = float((bins["accuracy"][full] * count[full]).sum() / n)

    top.bar(left[full], bins["accuracy"][full], width=width[full], align="edge", color="#3b82f6",
            edgecolor="#1e3a8a", linewidth=0.6, label="accuracy")
    gap_low = np.minimum(bins["accuracy"][full], bins["confidence"][full])
    gap = np.abs(bins["accuracy"][full] - bins["confidence"][full])
    top.bar(left[full], gap, bottom=gap_low, width=width[full], align="edge", color="#ef4444", alpha=0.35,
            edgecolor="#b91c1c", hatch="//", linewidth=0.6, label="gap to confidence")
    top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    top.plot([], [], " ", label=f"ECE = {ece:.3f}, OE = {oe:.3f}  ({n_bins} bins)")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=7)
    top.grid(alpha=0.3)
    top.set_title(title or f"reliability diagram (n = {n:,})", fontsize=9)

    bottom.bar(left, count, width=width, align="edge", color="#9ca3af", edgecolor="#374151", linewidth=0.6)
    bottom.axvline(mean_conf, color="#b91c1c", linestyle="--", linewidth=1.2, label=f"mean confidence {mean_conf:.3f}")
    bottom.axvline(accuracy, color="#1e3a8a", linestyle="-", linewidth=1.2, label=f"accuracy {accuracy:.3f}")
    bottom.set_xlabel("top-1 confidence")
    bottom.set_ylabel("samples")
    bottom.legend(loc="upper left", fontsize=7)
    bottom.grid(alpha=0.3)


def plot_reliability_diagram(probs: ArrayLike, labels: ArrayLike, png: str | os.PathLike, n_bins: int = 15,
                             title: str = "") -> Path:
    """Write the reliability diagram of ``probs`` ``(N, K)`` (softmax) against ``labels`` ``(N,)`` to ``png``.

    Returns ``Path(png)``. Empty bins draw no bar.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.6, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    try:
        _draw_reliability(top, bottom, probs, labels, n_bins, title)
    except BaseException:
        plt.close(fig)
        raise
    fig.tight_layout()
    return save_figure(fig, png, dpi=110)


def plot_reliability_comparison(panels: Sequence[tuple[str, ArrayLike]], labels: ArrayLike,
                                png: str | os.PathLike, n_bins: int = 15, title: str = "") -> Path:
    """Reliability diagrams side by side, one column per ``(panel title, probs (N, K))`` in ``panels``.

    E.g. ``[("before (T = 1)", p0), ("after (T = 1.84)", p1)]`` for temperature scaling, or one panel per model
    of an ensemble; every ``probs`` is scored against the same ``labels`` ``(N,)``. Each column is drawn like
    :func:`plot_reliability_diagram` (bars, gaps, diagonal, ECE and OE in the legend, confidence histogram under
    it), so the panels are directly comparable; ``title`` goes above all of them. Returns ``Path(png)``.
    """
    panels = list(panels)
    if not panels:
        raise ValueError("plot_reliability_comparison needs at least one (title, probabilities) panel")
    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 6.0 + (0.3 if title else 0.0)),
                             sharex="col", squeeze=False, gridspec_kw={"height_ratios": [3, 1.3]})
    n = len(labels)
    try:
        for col, (name, probs) in enumerate(panels):
            _draw_reliability(axes[0, col], axes[1, col], probs, labels, n_bins, f"{name} (n = {n:,})")
    except BaseException:
        plt.close(fig)
        raise
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, png, dpi=110)
