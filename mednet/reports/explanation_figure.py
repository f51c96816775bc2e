"""Figures of attribution maps: heat-map overlays per image, and the sanity checks' summary.

:func:`overlay_heatmap` blends a map (any resolution, resized to the image) in matplotlib's ``jet`` colour map over
the image; :func:`plot_explanation` puts the image and one overlay per method in a row (method and the map's own
resolution in each subtitle: a 4×4 Grad-CAM upsampled to 64 px is still 16 numbers); :func:`plot_sanity` shows
the model randomisation correlations per method and the deletion/insertion curves against random order
(:mod:`mednet.explain.sanity`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mednet.reports.plots import save_figure  # noqa: E402

__all__ = ["overlay_heatmap", "plot_explanation", "plot_explanation_grid", "plot_sanity"]


def _title(method: str) -> str:
    from mednet.explain.attribution import METHOD_TITLES

    return METHOD_TITLES.get(method, method)


def _resize(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``(h, w)`` map to ``shape`` (torch ``interpolate``, as MONAI's CAM upsampler)."""
    import torch
    import torch.nn.functional as F

    if heatmap.shape == shape:
        return heatmap
    t = torch.as_tensor(np.ascontiguousarray(heatmap), dtype=torch.float32)[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 with ``heatmap`` ``(h, w)`` in [0, 1] (resized to ``H × W``) blended over it
    in the ``jet`` colour map: ``(1 − alpha) · image + alpha · jet(heatmap)``, ``(H, W, 3)`` uint8."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    heat = np.clip(np.nan_to_num(_resize(np.asarray(heatmap, dtype=np.float32), image.shape[:2])), 0.0, 1.0)
    colour = matplotlib.colormaps["jet"](heat)[..., :3] * 255.0
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def plot_explanation(image: np.ndarray, maps: Mapping[str, np.ndarray], png: str | os.PathLike, title: str = "",
                     resolutions: Mapping[str, tuple[int, int] | str] | None = None, alpha: float = 0.45) -> Path:
    """The image and one overlay per method in a row, saved atomically to ``png``.

    Args:
        image: ``(H, W, 3)`` uint8.
        maps: ``{method: (h, w) map in [0, 1]}``, in display order.
        title: the figure title (prediction, calibrated probability, true class…).
        resolutions: ``{method: (h, w)}`` of each map *before* upsampling, shown in the subtitles (default: the
            array's shape).
    """
    n = 1 + len(maps)
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.95), squeeze=False)
    axes = axes[0]
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    for ax, (method, heat) in zip(axes[1:], maps.items()):
        heat = np.asarray(heat)
        res = (resolutions or {}).get(method, heat.shape)
        res_text = res if isinstance(res, str) else f"{res[0]}×{res[1]}"
        ax.imshow(overlay_heatmap(image, heat, alpha))
        ax.set_title(f"{_title(method)}\n({res_text} map)", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.88) if title else None)  # leave the title its own line
    return save_figure(fig, png, dpi=100)


def plot_explanation_grid(images: np.ndarray, maps: Mapping[str, np.ndarray], png: str | os.PathLike,
                          row_titles: list[str] | None = None, title: str = "",
                          resolutions: Mapping[str, tuple[int, int] | str] | None = None, alpha: float = 0.45) -> Path:
    """:func:`plot_explanation` for several images, one row each: ``images`` ``(N, H, W, 3)`` uint8, ``maps``
    ``{method: (N, h, w)}``; ``row_titles`` label the rows (prediction, probability, true class)."""
    n_rows, n_cols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.1 * n_cols, 2.25 * n_rows + 0.5), squeeze=False)
    for r in range(n_rows):
        axes[r, 0].imshow(images[r])
        axes[r, 0].set_title((row_titles or [""] * n_rows)[r] or "image", fontsize=7.5)
        for c, (method, heat) in enumerate(maps.items(), start=1):
            axes[r, c].imshow(overlay_heatmap(images[r], np.asarray(heat[r]), alpha))
            if r == 0:
                res = (resolutions or {}).get(method, np.asarray(heat[r]).shape)
                res_text = res if isinstance(res, str) else f"{res[0]}×{res[1]}"
                axes[r, c].set_title(f"{_title(method)}\n({res_text} map)", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, png, dpi=100)


def plot_sanity(randomisation: Mapping[str, Mapping], deletion: Mapping[str, Mapping], png: str | os.PathLike,
                title: str = "", threshold: float | None = None) -> Path:
    """Sanity checks in one figure: (1) Spearman correlation between the trained and the randomised network's
    maps, per method (one dot per image whose maps are not constant, their mean as a bar, the threshold dashed); (2)
    deletion and (3) insertion curves (mean target probability over images) of each method's order against random
    order, AUCs in the legend.

    Args:
        randomisation: ``{method: model_randomisation_test(...) result}``.
        deletion: ``{method: deletion_insertion(...) result}``.
        threshold: drawn as a dashed line (default: each result's ``"threshold"``).
    """
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0))
    ax = axes[0]
    methods = list(randomisation)
    for i, m in enumerate(methods):
        corr = np.asarray(randomisation[m]["correlations"], dtype=float)
        informative = np.asarray(randomisation[m].get("informative", np.ones(len(corr), bool)), dtype=bool)
        kept = corr[informative]
        if len(kept):
            ax.bar(i, kept.mean(), color="C0", alpha=0.35, width=0.6)
            jitter = np.random.default_rng(i).uniform(-0.18, 0.18, len(kept))
            ax.plot(i + jitter, kept, "o", ms=3, color="C0")
        ax.text(i, 1.02, f"{kept.mean():.2f} (n={len(kept)})" if len(kept) else "n=0", ha="center", fontsize=7)
    thr = threshold if threshold is not None else next((r.get("threshold") for r in randomisation.values()), None)
    if thr is not None:
        ax.axhline(thr, ls="--", color="C3", lw=1, label=f"threshold {thr:g}")
        ax.legend(fontsize=7, loc="lower right")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xticks(range(len(methods)), [_title(m) for m in methods], fontsize=8, rotation=15)
    ax.set_ylim(-1, 1.1)
    ax.set_ylabel("Spearman ρ (trained vs randomised map)")
    ax.set_title("model randomisation (Adebayo et al. 2018)", fontsize=9)
    for ax, kind in zip(axes[1:], ("deletion", "insertion")):
        for i, (m, res) in enumerate(deletion.items()):
            f = res["fractions"]
            ax.plot(f, np.mean(res[kind], 0), color=f"C{i}", lw=1.6,
                    label=f"{_title(m)} (AUC {res[kind + '_auc']:.3f})")
            ax.plot(f, np.mean(res[kind + "_random"], 0), color=f"C{i}", lw=1, ls=":",
                    label=f"random order (AUC {res[kind + '_auc_random']:.3f})")
        ax.set_xlabel(f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("target class probability")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
        better = "lower" if kind == "deletion" else "higher"
        ax.set_title(f"{kind}: most-attributed pixels first ({better} AUC = better)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, png, dpi=110)
