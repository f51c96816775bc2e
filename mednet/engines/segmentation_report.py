"""The brain bundle's evaluation report: per-volume tissue scores, confusion matrix, slice figures, summary."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events

from mednet.data.naming import NAME_KEY, volume_stem
from mednet.data.tissue_labels import LABEL_NAMES, TISSUE_NAMES
from mednet.data.volumes import describe_volume
from mednet.errors import DataError
from mednet.metrics.segmentation import scores_from_confusion, tissue_confusion_matrix
from mednet.reports.plots import plot_confusion_matrix
from mednet.reports.slice_figures import plot_tissue_slices
from mednet.reports.tables import write_csv, write_json, write_table

__all__ = ["SegmentationReport", "write_evaluation_summary", "REPORT_FILES", "SUMMARY_FILES"]

logger = logging.getLogger(__name__)

#: the files :class:`SegmentationReport` writes to its folder (besides ``slices_<volume>.png``)
REPORT_FILES = ("metrics.json", "per_volume.csv", "confusion.csv", "confusion.png", "summary.csv", "summary.md")
#: the files :func:`write_evaluation_summary` writes to the evaluation folder
SUMMARY_FILES = ("summary.md", "summary.csv", "summary.json")


def _refuse_earlier_report(paths: list[Path]) -> None:
    """:class:`DataError` naming the first of ``paths`` that exists: a report never replaces an earlier one
    (``evaluate.json`` writes to a new folder; an ``--output_dir`` override may point at an old report)."""
    for path in paths:
        if path.exists():
            raise DataError(path, "an earlier evaluation report is here and reports are never overwritten; "
                                  "choose another --output_dir (or move the earlier report away)")


class SegmentationReport:
    """Evaluation report of a tissue-segmentation evaluator, written when it completes.

    Per item (volume) it accumulates the label confusion matrix of ``pred`` (labels 0–3, already masked) vs
    ``label`` and draws input / prediction / ground truth for three slices along ``axis`` (at 80 / 50 / 20 % of
    the brain's extent: :func:`~mednet.reports.slice_figures.plot_tissue_slices`). At the end it
    writes to ``output_dir``: ``metrics.json`` (overall and per-volume scores, protocol, background rule),
    ``per_volume.csv``, ``confusion.csv`` and ``confusion.png``, and ``slices_<volume>.png``.

    ``<volume>`` (figure names, the ``volume`` column) is the item's ``"name"`` (set per list of items by
    :func:`mednet.data.naming.with_names`: ``subA_T1`` / ``subB_T1`` for two ``T1.nii.gz``), looked up in the
    engine's output and then in its batch (MONAI keeps input keys there). Items without one use the file stem,
    numbered ``-2``, ``-3``… if it repeats, so two volumes never share a figure or a row name.

    An earlier report is never replaced: if ``output_dir`` already holds one of the files above (any
    ``slices_*.png`` included), :class:`~mednet.errors.DataError` names it when the handler is attached (the
    evaluator's construction) and again when the evaluator starts, before the first volume is evaluated and
    before anything is written. An engine with this handler therefore runs once.

    Args:
        output_dir: where to write (created).
        protocol: name of the evaluation protocol (e.g. ``"whole volume"``, ``"grid patches 16x16"``).
        axis: slicing axis, for the qualitative figures.
        qualitative: draw the slice figures.
    """

    def __init__(self, output_dir: str | os.PathLike, protocol: str = "whole volume", axis: int = -1,
                 qualitative: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.protocol = protocol
        self.axis = axis
        self.qualitative = qualitative
        self.rows: list[dict] = []
        self.cm = torch.zeros(len(LABEL_NAMES), len(LABEL_NAMES), dtype=torch.int64)
        self.mask_rules: set[str] = set()

    def _refuse_existing(self) -> None:
        _refuse_earlier_report([self.output_dir / name for name in REPORT_FILES]
                               + sorted(self.output_dir.glob("slices_*.png")))

    def attach(self, engine: Engine) -> None:
        self._refuse_existing()
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._refuse_existing()  # again: a report may have appeared since the evaluator was built
        self.rows, self.mask_rules = [], set()
        self.cm.zero_()
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def _name(self, value: object, src: str) -> str:
        """The item's name, or its file stem made unique among the names used so far."""
        if isinstance(value, str) and value:
            return value
        used = {r["volume"].casefold() for r in self.rows}
        base = volume_stem(src)
        name, k = base, 2
        while name.casefold() in used:
            name, k = f"{base}-{k}", k + 1
        return name

    def _update(self, engine: Engine) -> None:
        output, batch = engine.state.output, engine.state.batch
        items = output if isinstance(output, list) else [output]
        batches = batch if isinstance(batch, list) else [batch] * len(items)
        for item, extra in zip(items, batches):
            extra = extra if isinstance(extra, dict) else {}

            def get(key: str, default: object = None) -> object:
                return item.get(key, extra.get(key, default))

            pred, label = item["pred"], item["label"]
            cm = tissue_confusion_matrix(pred, label)
            self.cm += cm
            image = item["image"]
            src = str(getattr(image, "meta", {}).get("filename_or_obj", f"volume{len(self.rows)}"))
            name = self._name(get(NAME_KEY), src)
            rule = get("mask_rule", "intensity 0 is background")
            self.mask_rules.add(rule if isinstance(rule, str) else str(rule))
            row = {"volume": name, "file": src, "grid (RAS)": describe_volume(image), **scores_from_confusion(cm)}
            mask = get("mask")
            if isinstance(mask, torch.Tensor) and mask.shape == label.shape:
                # labelled tissue outside the brain mask is predicted background and counts as missed: say how much
                outside = int(((label > 0) & (mask <= 0)).sum())
                row["tissue_voxels_outside_mask"] = outside
                if outside:
                    logger.warning("%s: %d labelled tissue voxel(s) lie outside the brain mask; they are predicted "
                                   "background and count as missed", name, outside)
            self.rows.append(row)
            if self.qualitative:
                plot_tissue_slices(
                    np.asarray(image.detach().cpu())[0], np.asarray(pred.detach().cpu())[0].astype(np.uint8),
                    np.asarray(label.detach().cpu())[0].astype(np.uint8), self.output_dir / f"slices_{name}.png",
                    axis=self.axis, title=f"{name} — {self.protocol}",
                )

    def _mean_over_volumes(self) -> dict[str, float]:
        """Each score's mean over the volumes (NaN-aware: a class absent from a volume is left out of its mean),
        beside ``overall``, which pools the voxels of every volume (a volume weighs by its tissue voxels, so a
        finer grid weighs more)."""
        keys = [k for k in (self.rows[0] if self.rows else {})
                if isinstance(self.rows[0][k], (int, float)) and k != "tissue_voxels_outside_mask"]
        out = {}
        for k in keys:
            values = np.array([float(r[k]) for r in self.rows], dtype=np.float64)
            out[k] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        return out

    def _write(self, engine: Engine) -> None:
        overall = scores_from_confusion(self.cm)
        per_volume_mean = self._mean_over_volumes()
        names = [LABEL_NAMES[i] for i in range(len(LABEL_NAMES))]
        write_csv(pd.DataFrame(self.cm.numpy(), index=names, columns=names).rename_axis("true \\ predicted"),
                  self.output_dir / "confusion.csv", index=True)
        plot_confusion_matrix(self.cm.numpy(), names, self.output_dir / "confusion.png", title=f"{self.protocol} (rows: truth)")
        write_csv(pd.DataFrame(self.rows), self.output_dir / "per_volume.csv")
        write_json(
            {
                "protocol": self.protocol,
                "background_rule": sorted(self.mask_rules),
                "overall": overall,
                "overall_is": "pooled: one confusion matrix over every voxel of every volume",
                "mean_over_volumes": per_volume_mean,
                "per_volume": self.rows,
                "confusion_matrix": {"labels": names, "rows_true_cols_pred": self.cm.tolist()},
            },
            self.output_dir / "metrics.json",
        )
        summary = pd.DataFrame([{"class": n, "dice": overall[f"dice_{n}"], "accuracy": overall[f"acc_{n}"]} for n in TISSUE_NAMES]
                               + [{"class": "average", "dice": overall["mean_dice"], "accuracy": overall["mean_acc"]}])
        write_table(summary, self.output_dir / "summary", title=f"{self.protocol}: Dice and pixel accuracy per class")
        msg = " ".join(f"{n} {overall[f'dice_{n}']:.3f}" for n in TISSUE_NAMES)
        logger.info("%s: Dice %s (mean %.3f), pixel accuracy %.3f%s -> %s", self.protocol, msg, overall["mean_dice"],
                    overall["pixel_accuracy"],
                    f"; mean over {len(self.rows)} volumes: Dice {per_volume_mean.get('mean_dice', math.nan):.3f}"
                    if len(self.rows) > 1 else "", self.output_dir)
        engine.state.report = {"overall": overall, "mean_over_volumes": per_volume_mean,
                               "output_dir": str(self.output_dir)}
        if math.isnan(overall["mean_dice"]):
            logger.warning("no tissue voxel in the evaluated volumes: Dice undefined")


def write_evaluation_summary(output_dir: str | os.PathLike, reports: dict[str, dict], **info: object) -> Path:
    """``summary.md`` + ``summary.json``: Dice and pixel accuracy per class and average for each protocol.

    Args:
        output_dir: the evaluation directory.
        reports: protocol name → ``engine.state.report`` set by :class:`SegmentationReport`.
        info: extra facts for the header (checkpoint, split, variant, …).

    Raises:
        DataError: naming an existing ``summary.md``, ``summary.csv`` or ``summary.json`` (checked before any
            is written: an earlier evaluation's summary is never replaced).
    """
    output_dir = Path(output_dir)
    _refuse_earlier_report([output_dir / name for name in SUMMARY_FILES])
    rows = []
    for protocol, rep in reports.items():
        o = rep["overall"]
        rows.append({"protocol": protocol, **{f"Dice {n}": o[f"dice_{n}"] for n in TISSUE_NAMES}, "Dice avg": o["mean_dice"],
                     **{f"Acc {n}": o[f"acc_{n}"] for n in TISSUE_NAMES}, "Acc avg": o["mean_acc"],
                     "pixel accuracy": o["pixel_accuracy"],
                     "Dice avg, mean of volumes": rep.get("mean_over_volumes", {}).get("mean_dice", math.nan)})
    df = pd.DataFrame(rows)
    header = "\n".join(f"- {k}: {v}" for k, v in info.items())
    csv_path, md_path = write_table(df, output_dir / "summary", title="Evaluation", footer=(
        "\n" + header + "\n\nScores pool the voxels of every evaluated volume (one confusion matrix: a volume "
        "weighs by its tissue voxels); \"Dice avg, mean of volumes\" averages each volume's mean Dice instead "
        "(per_volume.csv). Accuracy = per-class pixel accuracy (true-class recall); pixel accuracy over all "
        "tissue pixels. Details per protocol in its sub-folder.\n"))
    write_json({"info": info, "protocols": {p: r["overall"] for p, r in reports.items()}}, output_dir / "summary.json")
    return md_path
