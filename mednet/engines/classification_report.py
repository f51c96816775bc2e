"""The classification bundle's evaluation report and prediction table, written when an evaluator completes.

:class:`ClassificationReport` (``evaluate.json``) collects every image's logits, label and id and writes the full
report: per-class precision / recall (sensitivity) / specificity / F1 from the pooled confusion matrix, macro and
weighted averages, balanced accuracy, macro one-vs-rest AUC, NLL, Brier, ECE / OE / UCE / classwise ECE
(:mod:`mednet.metrics.classification`), the confusion matrix (CSV + PNG), the reliability diagram (PNG) and one row
per image. :class:`PredictionWriter` (``inference.json``) writes only the per-image table. Both apply one
``temperature`` to the logits before the softmax (1 = none; fitted temperatures are a later step and slot in here).

The engine must run with ``decollate=False`` (a batch is one dict: ``"pred"`` ``(B, K)`` logits, ``"label"``
``(B,)``, and the batch's ``"image_id"`` / ``"path"`` lists).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events

from mednet.io import refuse_existing
from mednet.metrics.classification import classification_report, confusion_matrix, report_table
from mednet.reports.calibration import plot_reliability_diagram
from mednet.reports.plots import plot_confusion_matrix
from mednet.reports.tables import write_csv, write_json, write_table

__all__ = ["ClassificationReport", "PredictionWriter", "prediction_table"]

logger = logging.getLogger("mednet")


def prediction_table(image_ids: Sequence[str], paths: Sequence[str], probs: np.ndarray, class_names: Sequence[str],
                     labels: np.ndarray | None = None) -> pd.DataFrame:
    """One row per image: ``image_id, path, <class>… (probabilities), prediction, confidence[, label, correct]``."""
    probs = np.asarray(probs, dtype=np.float64)
    df = pd.DataFrame({"image_id": list(image_ids), "path": list(paths)})
    for k, name in enumerate(class_names):
        df[name] = probs[:, k].round(6)
    pred = probs.argmax(1)
    df["prediction"] = [class_names[k] for k in pred]
    df["confidence"] = probs.max(1).round(6)
    if labels is not None:
        df["label"] = [class_names[k] for k in labels]
        df["correct"] = pred == np.asarray(labels)
    return df


class _Collector:
    """Logits, labels, ids and paths of every batch of an engine run (batched output, ``decollate=False``)."""

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.ids: list[str] = []
        self.paths: list[str] = []

    def _update(self, engine: Engine) -> None:
        out, batch = engine.state.output, engine.state.batch
        if isinstance(out, list):
            raise TypeError("the classification report needs the evaluator's batched output: set decollate=False")
        logits = torch.as_tensor(out["pred"]).as_subclass(torch.Tensor).detach().float().cpu()
        self.logits.append(logits.reshape(logits.shape[0], -1))
        if out.get("label") is not None:
            self.labels.append(torch.as_tensor(out["label"]).as_subclass(torch.Tensor).detach().long().cpu().reshape(-1))
        n = logits.shape[0]
        self.ids += list(batch.get("image_id", [str(len(self.ids) + i) for i in range(n)]))
        self.paths += list(batch.get("path", [""] * n))

    def probabilities(self) -> np.ndarray:
        """``softmax(logits / T)``, ``(N, K)`` float64."""
        return (torch.cat(self.logits).double() / self.temperature).softmax(1).numpy()

    def _write(self, engine: Engine) -> None:
        raise NotImplementedError


class PredictionWriter(_Collector):
    """Inference: ``predictions.csv`` with one row per image (:func:`prediction_table`), never overwritten.

    Args:
        output_file: the CSV to write (refused at start if it exists and not ``overwrite``).
        class_names: column names, in the network's output order.
        temperature: logits are divided by it before the softmax.
    """

    def __init__(self, output_file: str | os.PathLike, class_names: Sequence[str], temperature: float = 1.0,
                 overwrite: bool = False) -> None:
        super().__init__(temperature)
        self.output_file = Path(output_file)
        self.class_names = tuple(class_names)
        self.overwrite = overwrite
        refuse_existing(self.output_file, overwrite=overwrite)  # before any image is read

    def _write(self, engine: Engine) -> None:
        table = prediction_table(self.ids, self.paths, self.probabilities(), self.class_names)
        write_csv(table, self.output_file)
        engine.state.predictions = table
        logger.info("%d predictions written to %s", len(table), self.output_file)


class ClassificationReport(_Collector):
    """Evaluation: the full classification + calibration report of one split.

    Writes to ``output_dir``: ``metrics.json`` (every score, plus ``info``: split, data provenance, seed,
    checkpoint…), ``metrics.csv`` (one row), ``classification_report.csv``/``.md`` (per class + macro/weighted
    averages), ``confusion.csv``/``.png``, ``reliability.png`` (with the confidence histogram) and
    ``predictions.csv`` (one row per image). The report dict is also left in ``engine.state.report``.

    Args:
        output_dir: the evaluation folder.
        class_names: label names in order.
        n_bins: calibration bins (Guo et al. 2017: 15; the calibration study used 100).
        info: provenance written into ``metrics.json`` (split, data source real/synthetic, seed, checkpoint, …).
        temperature: logits are divided by it before the softmax.
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str], n_bins: int = 15,
                 info: Mapping[str, object] | None = None, temperature: float = 1.0) -> None:
        super().__init__(temperature)
        self.output_dir = Path(output_dir)
        self.class_names = tuple(class_names)
        self.n_bins = int(n_bins)
        self.info = dict(info or {})

    def _write(self, engine: Engine) -> None:
        if not self.labels:
            raise ValueError("evaluation needs labelled images (use inference.json for unlabelled ones)")
        probs, labels = self.probabilities(), torch.cat(self.labels).numpy()
        report = classification_report(probs, labels, self.class_names, self.n_bins)
        out = self.output_dir
        write_json({"info": {**self.info, "temperature": self.temperature}, "metrics": report}, out / "metrics.json")
        write_csv(pd.DataFrame([report]), out / "metrics.csv")
        title = f"{self.info.get('split', '')} split, {self.info.get('data', '')} data, {len(labels)} images".strip(", ")
        write_table(report_table(report, self.class_names).reset_index(), out / "classification_report", digits=3,
                    title=f"Classification report — {title}")
        cm = confusion_matrix(labels, probs.argmax(1), len(self.class_names))
        write_csv(pd.DataFrame(cm, index=pd.Index(self.class_names, name="true"), columns=self.class_names),
                  out / "confusion.csv", index=True)
        plot_confusion_matrix(cm, self.class_names, out / "confusion.png", title=f"confusion matrix — {title}")
        plot_reliability_diagram(probs, labels, out / "reliability.png", n_bins=self.n_bins,
                                 title=f"reliability — {title}")
        write_csv(prediction_table(self.ids, self.paths, probs, self.class_names, labels), out / "predictions.csv")
        engine.state.report = report
        logger.info("accuracy %.3f, balanced accuracy %.3f, macro F1 %.3f, ECE %.4f, OE %.4f, NLL %.3f (%d images)",
                    report["accuracy"], report["balanced_accuracy"], report["macro_f1"], report["ece"], report["oe"],
                    report["nll"], len(labels))
