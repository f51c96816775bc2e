"""Ignite handlers shared by the bundles: per-epoch metrics CSV + convergence plot, evaluation reports.

Both are plain Ignite handlers with an ``attach(engine)`` method, so MONAI workflows take them in their
``train_handlers`` / ``val_handlers`` lists like MONAI's own. Every file they write goes through
:func:`mednet.io.atomic_path` (complete old or complete new version, never half-written).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar as _IgniteProgressBar

from mednet.data.labels import LABEL_NAMES, TISSUE_NAMES
from mednet.data.naming import NAME_KEY, volume_stem
from mednet.data.volumes import describe_volume
from mednet.metrics.segmentation import scores_from_confusion, tissue_confusion_matrix
from mednet.reports.plots import plot_confusion_matrix, plot_convergence, plot_slices
from mednet.reports.tables import write_csv, write_json, write_table

__all__ = ["EpochMetricsWriter", "ProgressBar", "SegmentationReport", "write_evaluation_summary"]

logger = logging.getLogger(__name__)


def _scalar(v: object) -> float | None:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v)
    if isinstance(v, (int, float, np.floating, np.integer)):
        return float(v)
    return None


class ProgressBar(_IgniteProgressBar):
    """Ignite's tqdm progress bar, advanced every ``every`` iterations.

    Ignite's bar calls ``set_description`` (a forced redraw) at every iteration, which ignores tqdm's
    ``mininterval``: with 16-patch batches that is hundreds of redraws a second, flooding logs written to a
    file and costing training throughput. ``attach(engine)`` (as MONAI calls it) uses
    ``ITERATION_COMPLETED(every=every)`` instead.
    """

    def __init__(self, every: int = 25, **kwargs) -> None:
        super().__init__(**kwargs)
        self.every = every

    def attach(self, engine: Engine, metric_names=None, output_transform=None, event_name=None,  # type: ignore[override]
               closing_event_name=Events.EPOCH_COMPLETED, state_attributes=None) -> None:
        event = event_name if event_name is not None else Events.ITERATION_COMPLETED(every=self.every)
        super().attach(engine, metric_names, output_transform, event, closing_event_name, state_attributes)


class EpochMetricsWriter:
    """After every epoch add the trainer's and evaluator's scalar metrics to ``metrics.csv`` and redraw
    ``convergence.png`` (loss, training accuracy, validation accuracy and Dice per epoch).

    Attach it *after* MONAI's ``ValidationHandler`` so the row holds this epoch's validation metrics. The CSV
    is rewritten whole from the rows kept in memory (a few hundred bytes per epoch) and atomically, rather
    than appended to: an append interrupted by a crash would leave a truncated last row.

    Args:
        output_dir: the run directory.
        evaluator: the validation engine whose ``state.metrics`` are added (optional).
    """

    def __init__(self, output_dir: str | os.PathLike, evaluator: Engine | None = None, plot: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.evaluator = evaluator
        self.plot = plot
        self.csv_path = self.output_dir / "metrics.csv"
        self.png_path = self.output_dir / "convergence.png"
        self._start = time.perf_counter()
        self._columns: list[str] | None = None
        self.rows: list[dict[str, float | int]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self.rows, self._columns = [], None

    def __call__(self, engine: Engine) -> None:
        row: dict[str, float | int] = {"epoch": engine.state.epoch}
        for source in (engine, self.evaluator):
            if source is None:
                continue
            for k, v in source.state.metrics.items():
                s = _scalar(v)
                if s is not None:
                    row[k] = s
        row["elapsed_s"] = round(time.perf_counter() - self._start, 2)
        if self._columns is None:  # the first epoch fixes the columns (metrics are the same every epoch)
            self._columns = list(row)
        self.rows.append(row)
        write_csv(pd.DataFrame(self.rows).reindex(columns=self._columns), self.csv_path)
        if self.plot:
            plot_convergence(self.csv_path, self.png_path)


class SegmentationReport:
    """Evaluation report of a tissue-segmentation evaluator, written when it completes.

    Per item (volume) it accumulates the label confusion matrix of ``pred`` (labels 0–3, already masked) vs
    ``label`` and draws input / prediction / ground truth for a top, middle and bottom slice. At the end it
    writes to ``output_dir``: ``metrics.json`` (overall and per-volume scores, protocol, background rule),
    ``per_volume.csv``, ``confusion.csv`` and ``confusion.png``, and ``slices_<volume>.png``.

    ``<volume>`` (figure names, the ``volume`` column) is the item's ``"name"`` (set per list of items by
    :func:`mednet.data.naming.with_names`: ``subA_T1`` / ``subB_T1`` for two ``T1.nii.gz``), looked up in the
    engine's output and then in its batch (MONAI keeps input keys there). Items without one use the file stem,
    numbered ``-2``, ``-3``… if it repeats, so two volumes never share a figure or a row name.

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

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
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
            self.rows.append({"volume": name, "file": src, "grid (RAS)": describe_volume(image),
                              **scores_from_confusion(cm)})
            if self.qualitative:
                plot_slices(
                    np.asarray(image.detach().cpu())[0], np.asarray(pred.detach().cpu())[0].astype(np.uint8),
                    np.asarray(label.detach().cpu())[0].astype(np.uint8), self.output_dir / f"slices_{name}.png",
                    axis=self.axis, title=f"{name} — {self.protocol}",
                )

    def _write(self, engine: Engine) -> None:
        overall = scores_from_confusion(self.cm)
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
                "per_volume": self.rows,
                "confusion_matrix": {"labels": names, "rows_true_cols_pred": self.cm.tolist()},
            },
            self.output_dir / "metrics.json",
        )
        summary = pd.DataFrame([{"class": n, "dice": overall[f"dice_{n}"], "accuracy": overall[f"acc_{n}"]} for n in TISSUE_NAMES]
                               + [{"class": "average", "dice": overall["mean_dice"], "accuracy": overall["mean_acc"]}])
        write_table(summary, self.output_dir / "summary", title=f"{self.protocol}: Dice and pixel accuracy per class")
        msg = " ".join(f"{n} {overall[f'dice_{n}']:.3f}" for n in TISSUE_NAMES)
        logger.info("%s: Dice %s (mean %.3f), pixel accuracy %.3f -> %s", self.protocol, msg, overall["mean_dice"],
                    overall["pixel_accuracy"], self.output_dir)
        engine.state.report = {"overall": overall, "output_dir": str(self.output_dir)}
        if math.isnan(overall["mean_dice"]):
            logger.warning("no tissue voxel in the evaluated volumes: Dice undefined")


def write_evaluation_summary(output_dir: str | os.PathLike, reports: dict[str, dict], **info: object) -> Path:
    """``summary.md`` + ``summary.json``: Dice and pixel accuracy per class and average for each protocol.

    Args:
        output_dir: the evaluation directory.
        reports: protocol name → ``engine.state.report`` set by :class:`SegmentationReport`.
        info: extra facts for the header (checkpoint, split, variant, …).
    """
    output_dir = Path(output_dir)
    rows = []
    for protocol, rep in reports.items():
        o = rep["overall"]
        rows.append({"protocol": protocol, **{f"Dice {n}": o[f"dice_{n}"] for n in TISSUE_NAMES}, "Dice avg": o["mean_dice"],
                     **{f"Acc {n}": o[f"acc_{n}"] for n in TISSUE_NAMES}, "Acc avg": o["mean_acc"],
                     "pixel accuracy": o["pixel_accuracy"]})
    df = pd.DataFrame(rows)
    header = "\n".join(f"- {k}: {v}" for k, v in info.items())
    csv_path, md_path = write_table(df, output_dir / "summary", title="Evaluation", footer=(
        "\n" + header + "\n\nAccuracy = per-class pixel accuracy (true-class recall); pixel accuracy over all "
        "tissue pixels. Details per protocol in its sub-folder.\n"))
    write_json({"info": info, "protocols": {p: r["overall"] for p, r in reports.items()}}, output_dir / "summary.json")
    return md_path
