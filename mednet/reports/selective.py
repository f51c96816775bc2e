"""Risk–coverage figure of selective prediction (Geifman & El-Yaniv 2017): risk against coverage, one line per
named curve (before/after temperature scaling, or one per model), AURC in the legend, and optionally the referral
operating point chosen on validation.

Curves come from :func:`mednet.calibration.selective.risk_coverage_curve`; each is drawn as the step function
whose area is its AURC (:func:`mednet.calibration.selective.aurc_from_curve`: a tie block of equal confidence
holds its end risk over its whole coverage step), so the legend and the drawing agree. Matplotlib ``Agg``;
written atomically through :func:`mednet.reports.plots.save_figure`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mednet.calibration.selective import aurc_from_curve  # noqa: E402
from mednet.reports.plots import save_figure  # noqa: E402

__all__ = ["plot_risk_coverage"]


def plot_risk_coverage(curves: Mapping[str, pd.DataFrame], png: str | os.PathLike,
                       threshold_points: Mapping[str, tuple[float, float]] | None = None, title: str = "",
                       aurcs: Mapping[str, float] | None = None) -> Path:
    """Write risk (y) against coverage (x) of every named risk–coverage curve to ``png``; returns ``Path(png)``.

    Args:
        curves: name → :func:`~mednet.calibration.selective.risk_coverage_curve` frame (columns ``coverage``,
            ``risk``, ``accepted``, …).
        png: output file.
        threshold_points: name → ``(coverage, risk)`` of the chosen referral operating point, marked on the
            curve of the same name (names without a curve get a black marker).
        title: figure title (default: "risk–coverage").
        aurcs: name → AURC to show in the legend; by default computed from each curve with
            :func:`~mednet.calibration.selective.aurc_from_curve` (the same number as ``aurc``).
    """
    curves = dict(curves)
    if not curves:
        raise ValueError("plot_risk_coverage needs at least one risk-coverage curve")
    points = dict(threshold_points or {})
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    colors = {}
    top = 0.0
    try:
        for name, curve in curves.items():
            coverage = np.concatenate([[0.0], curve["coverage"].to_numpy(np.float64)])
            risk = curve["risk"].to_numpy(np.float64)
            risk = np.concatenate([risk[:1], risk])  # (0, c_1] carries the first block's risk
            value = float(aurcs[name]) if aurcs is not None and name in aurcs else aurc_from_curve(curve)
            (line,) = ax.step(coverage, risk, where="pre", linewidth=1.5, label=f"{name}  (AURC = {value:.4f})")
            colors[name] = line.get_color()
            top = max(top, float(risk.max()))
        for name, (cov, rsk) in points.items():
            ax.plot([cov], [rsk], marker="o", markersize=7, color=colors.get(name, "black"),
                    markeredgecolor="black", linestyle="none",
                    label=f"{name}: referral point (coverage {cov:.2f}, risk {rsk:.3f})")
            top = max(top, float(rsk))
    except BaseException:
        plt.close(fig)
        raise
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(top * 1.08, 0.01))
    ax.set_xlabel("coverage (fraction of cases accepted)")
    ax.set_ylabel("risk (error rate of accepted cases)")
    ax.set_title(title or "risk–coverage", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, png, dpi=110)
