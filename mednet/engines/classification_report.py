"""The classification bundle's evaluation report and prediction table, written when an evaluator completes.

:class:`ClassificationReport` (``evaluate.json``) collects every image's logits, label and id and writes the full
report: per-class precision / recall (sensitivity) / specificity / F1 from the pooled confusion matrix, macro and
weighted averages, balanced accuracy, macro one-vs-rest AUC, NLL, Brier, ECE / OE / UCE / classwise ECE
(:mod:`mednet.metrics.classification`), the confusion matrix (CSV + PNG), the reliability diagram (PNG) and one row
per image. :class:`PredictionWriter` (``inference.json``) writes only the per-image table. Both apply the run's
``temperature`` to the logits before the softmax and mark cases below its referral threshold as ``refer``
(:mod:`mednet.calibration.run_calibration`). :class:`CalibrationFitter` fits both on the validation split and
writes them into the run (``calibration.json``).

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

from mednet.errors import DataError
from mednet.io import refuse_existing
from mednet.metrics.classification import classification_report, confusion_matrix, report_table
from mednet.reports.calibration import plot_reliability_comparison, plot_reliability_diagram
from mednet.reports.plots import plot_confusion_matrix
from mednet.reports.tables import write_csv, write_json, write_table

__all__ = ["CalibrationFitter", "ClassificationReport", "PredictionWriter", "collect_logits", "collect_member_logits", "prediction_table"]

logger = logging.getLogger("mednet")


def prediction_table(image_ids: Sequence[str], paths: Sequence[str], probs: np.ndarray, class_names: Sequence[str],
                     labels: np.ndarray | None = None, referral_threshold: float | None = None) -> pd.DataFrame:
    """One row per image: ``image_id, path, <class>… (probabilities), prediction, confidence[, refer, decision]
    [, label, correct]``.

    With a ``referral_threshold`` (chosen on validation, :func:`mednet.calibration.referral_threshold`) a case
    whose confidence is below it gets ``refer = True`` and ``decision = "refer"`` (else its predicted class).
    """
    probs = np.asarray(probs, dtype=np.float64)
    df = pd.DataFrame({"image_id": list(image_ids), "path": list(paths)})
    for k, name in enumerate(class_names):
        df[name] = probs[:, k].round(6)
    pred = probs.argmax(1)
    df["prediction"] = [class_names[k] for k in pred]
    df["confidence"] = probs.max(1).round(6)
    if referral_threshold is not None:
        refer = probs.max(1) < referral_threshold
        df["refer"] = refer
        df["decision"] = np.where(refer, "refer", df["prediction"])
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

    def all_logits(self) -> torch.Tensor:
        """``(N, K)`` float64 logits of the whole run."""
        return torch.cat(self.logits).double()

    def probabilities(self, temperature: float | None = None) -> np.ndarray:
        """``softmax(logits / T)``, ``(N, K)`` float64 (``T`` = this handler's temperature by default)."""
        return (self.all_logits() / (self.temperature if temperature is None else temperature)).softmax(1).numpy()

    def _write(self, engine: Engine) -> None:
        raise NotImplementedError


class _LogitCollector(_Collector):
    def _write(self, engine: Engine) -> None:
        pass


def collect_logits(network: torch.nn.Module, dataloader: torch.utils.data.DataLoader, device: str | torch.device,
                   amp: bool = False, desc: str = "collecting logits") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, K)`` float64 and labels ``(N,)`` of ``network`` (eval mode) over a labelled ``dataloader``.

    A MONAI ``SupervisedEvaluator`` does the pass (the project's one loop: Ignite engines), so AMP, devices and
    the progress bar behave as in every bundle; used where a job needs the outputs themselves, e.g. the members'
    validation logits from which an ensemble's weights and temperature are chosen.
    """
    from monai.engines import SupervisedEvaluator

    from mednet.data.lesion_images import MixingPrepareBatch
    from mednet.engines.handlers import ProgressBar

    collector = _LogitCollector()
    evaluator = SupervisedEvaluator(device=device, val_data_loader=dataloader, network=network, amp=amp,
                                    decollate=False, prepare_batch=MixingPrepareBatch(),
                                    val_handlers=[ProgressBar(every=1, persist=False, desc=desc), collector])
    evaluator.run()
    if not collector.labels:
        raise DataError(None, f"{desc}: the data have no labels")
    return collector.all_logits(), torch.cat(collector.labels)


def collect_member_logits(networks: Sequence[torch.nn.Module], dataloader: torch.utils.data.DataLoader,
                          device: str | torch.device, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`collect_logits` of each network: ``(M, N, K)`` logits and the ``(N,)`` labels."""
    outs = [collect_logits(net, dataloader, device, amp, desc=f"member {i + 1}/{len(networks)}")
            for i, net in enumerate(networks)]
    return torch.stack([logits for logits, _ in outs]), outs[0][1]


class PredictionWriter(_Collector):
    """Inference: ``predictions.csv`` with one row per image (:func:`prediction_table`), never overwritten.

    Args:
        output_file: the CSV to write (refused at start if it exists and not ``overwrite``).
        class_names: column names, in the network's output order.
        temperature: logits are divided by it before the softmax.
        referral_threshold: cases with a lower confidence are marked ``refer`` (None: no column).
    """

    def __init__(self, output_file: str | os.PathLike, class_names: Sequence[str], temperature: float = 1.0,
                 overwrite: bool = False, referral_threshold: float | None = None) -> None:
        super().__init__(temperature)
        self.output_file = Path(output_file)
        self.class_names = tuple(class_names)
        self.overwrite = overwrite
        self.referral_threshold = referral_threshold
        refuse_existing(self.output_file, overwrite=overwrite)  # before any image is read

    def _write(self, engine: Engine) -> None:
        table = prediction_table(self.ids, self.paths, self.probabilities(), self.class_names,
                                 referral_threshold=self.referral_threshold)
        if self.referral_threshold is not None:
            logger.info("%d of %d cases below the referral threshold %.3f: decision 'refer'",
                        int(table["refer"].sum()), len(table), self.referral_threshold)
        write_csv(table, self.output_file)
        engine.state.predictions = table
        logger.info("%d predictions written to %s", len(table), self.output_file)


class ClassificationReport(_Collector):
    """Evaluation: the full classification + calibration report of one split.

    Writes to ``output_dir``: ``metrics.json`` (every score, plus ``info``: split, data provenance, seed,
    checkpoint…; with a temperature ≠ 1 also ``uncalibrated``: the scores at T = 1), ``metrics.csv`` (one row;
    ``*_uncalibrated`` columns for ECE/OE/UCE/NLL/Brier/AURC), ``classification_report.csv``/``.md`` (per class +
    macro/weighted averages), ``confusion.csv``/``.png``, ``reliability.png`` (with the confidence histogram;
    before and after temperature scaling side by side when T ≠ 1), ``risk_coverage.csv``/``.png`` (selective
    prediction: AURC, and with a referral threshold the coverage and accuracy it gives on this split) and
    ``predictions.csv`` (one row per image). The report dict is also left in ``engine.state.report``.

    Args:
        output_dir: the evaluation folder.
        class_names: label names in order.
        n_bins: calibration bins (Guo et al. 2017: 15; the calibration study used 100).
        info: provenance written into ``metrics.json`` (split, data source real/synthetic, seed, checkpoint, …).
        temperature: logits are divided by it before the softmax (the run's fitted temperature).
        referral_threshold: the run's threshold chosen on validation (None: no referral).
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str], n_bins: int = 15,
                 info: Mapping[str, object] | None = None, temperature: float = 1.0,
                 referral_threshold: float | None = None) -> None:
        super().__init__(temperature)
        self.output_dir = Path(output_dir)
        self.class_names = tuple(class_names)
        self.n_bins = int(n_bins)
        self.info = dict(info or {})
        self.referral_threshold = referral_threshold

    def _selective(self, probs: np.ndarray, labels: np.ndarray, raw: np.ndarray | None) -> dict:
        """AURC (and at the referral threshold: coverage, accuracy), with ``risk_coverage.csv/.png``."""
        from mednet.calibration.selective import aurc, risk_coverage_curve, selective_summary
        from mednet.reports.selective import plot_risk_coverage

        out, t = self.output_dir, self.temperature
        named = {f"T = {t:.2f}" if raw is not None else "model": probs}
        if raw is not None:
            named = {"T = 1 (uncalibrated)": raw, **named}
        curves = {k: risk_coverage_curve(p.max(1), p.argmax(1) == labels) for k, p in named.items()}
        write_csv(pd.concat([c.assign(calibration=k) for k, c in curves.items()], ignore_index=True),
                  out / "risk_coverage.csv")
        result: dict[str, object] = {"aurc": aurc(probs.max(1), probs.argmax(1) == labels)}
        if raw is not None:
            result["aurc_uncalibrated"] = aurc(raw.max(1), raw.argmax(1) == labels)
        point = None
        if self.referral_threshold is not None:
            summary = selective_summary(probs.max(1), probs.argmax(1) == labels, self.referral_threshold)
            result.update({f"referral_{k}": v for k, v in summary.items()})
            if summary.get("accuracy") is not None:
                point = {list(named)[-1]: (summary["coverage"], 1.0 - summary["accuracy"])}
        plot_risk_coverage(curves, out / "risk_coverage.png", threshold_points=point,
                           title=f"risk–coverage — {self.info.get('split', '')} split")
        return result

    def _write(self, engine: Engine) -> None:
        if not self.labels:
            raise DataError(None, "evaluation needs labelled images (use inference.json for unlabelled ones)")
        probs, labels = self.probabilities(), torch.cat(self.labels).numpy()
        report = classification_report(probs, labels, self.class_names, self.n_bins)
        calibrated = self.temperature != 1.0
        raw = self.probabilities(1.0) if calibrated else None
        uncalibrated = classification_report(raw, labels, self.class_names, self.n_bins) if calibrated else None
        selective = self._selective(probs, labels, raw)
        report.update({k: v for k, v in selective.items() if k != "aurc_uncalibrated"})
        row = dict(report)
        if uncalibrated is not None:
            for k in ("accuracy", "ece", "oe", "uce", "nll", "brier"):
                row[f"{k}_uncalibrated"] = uncalibrated[k]
            row["aurc_uncalibrated"] = selective["aurc_uncalibrated"]
        out = self.output_dir
        write_csv(pd.DataFrame([row]), out / "metrics.csv")
        title = f"{self.info.get('split', '')} split, {self.info.get('data', '')} data, {len(labels)} images".strip(", ")
        write_table(report_table(report, self.class_names).reset_index(), out / "classification_report", digits=3,
                    title=f"Classification report — {title}")
        cm = confusion_matrix(labels, probs.argmax(1), len(self.class_names))
        write_csv(pd.DataFrame(cm, index=pd.Index(self.class_names, name="true"), columns=self.class_names),
                  out / "confusion.csv", index=True)
        plot_confusion_matrix(cm, self.class_names, out / "confusion.png", title=f"confusion matrix — {title}")
        if calibrated:
            plot_reliability_comparison([("before (T = 1)", raw), (f"after (T = {self.temperature:.2f})", probs)],
                                        labels, out / "reliability.png", n_bins=self.n_bins,
                                        title=f"reliability — {title}")
        else:
            plot_reliability_diagram(probs, labels, out / "reliability.png", n_bins=self.n_bins,
                                     title=f"reliability — {title}")
        write_csv(prediction_table(self.ids, self.paths, probs, self.class_names, labels,
                                   referral_threshold=self.referral_threshold), out / "predictions.csv")
        # metrics.json last: its presence means the whole report is there (the calibration study resumes on it)
        write_json({"info": {**self.info, "temperature": self.temperature,
                             "referral_threshold": self.referral_threshold},
                    "metrics": report,
                    "uncalibrated": None if uncalibrated is None else
                    {**uncalibrated, "aurc": selective["aurc_uncalibrated"]}}, out / "metrics.json")
        engine.state.report = report
        logger.info("accuracy %.3f, balanced accuracy %.3f, macro F1 %.3f, ECE %.4f, OE %.4f, NLL %.3f, AURC %.4f "
                    "(%d images, T = %.3f)", report["accuracy"], report["balanced_accuracy"], report["macro_f1"],
                    report["ece"], report["oe"], report["nll"], report["aurc"], len(labels), self.temperature)


class CalibrationFitter(_Collector):
    """Validation split → the run's ``calibration.json``: temperature (NLL, LBFGS on log T) and referral
    threshold (target accuracy of the accepted cases, reached by its Clopper–Pearson lower bound at
    ``confidence_level``), with before/after reliability and risk–coverage figures
    (:func:`mednet.calibration.run_calibration.fit_calibration` / ``write_calibration``).

    Run it on the **validation** split only: the test split is touched once, by evaluation. The result is also
    left in ``engine.state.calibration``.

    Args:
        output_dir: the training run folder (beside ``model.pt``).
        class_names: label names in order.
        n_bins: calibration bins.
        target_accuracy: accuracy the accepted (not referred) cases must reach (default 95 %).
        min_accepted: the fewest validation cases the threshold may accept
            (:data:`mednet.calibration.selective.MIN_ACCEPTED`).
        confidence_level: one-sided level of the lower bound of the accepted cases' accuracy that must reach
            ``target_accuracy`` (:data:`mednet.calibration.selective.DEFAULT_REFERRAL_CONFIDENCE`, 0.9).
        info: where it was fitted (split, data, checkpoint…), stored in the file.
        overwrite: replace an existing ``calibration.json`` (refused otherwise, before any image is read).
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str], n_bins: int = 15,
                 target_accuracy: float = 0.95, info: Mapping[str, object] | None = None,
                 overwrite: bool = True, min_accepted: int | None = None,
                 confidence_level: float | None = None) -> None:
        from mednet.calibration.run_calibration import CALIBRATION_FILE
        from mednet.calibration.selective import (DEFAULT_REFERRAL_CONFIDENCE, MIN_ACCEPTED, check_min_accepted,
                                                  check_referral_confidence, check_target_accuracy)

        super().__init__(1.0)
        self.output_dir = Path(output_dir)
        self.class_names = tuple(class_names)
        self.n_bins = int(n_bins)
        self.target_accuracy = check_target_accuracy(target_accuracy)
        self.min_accepted = check_min_accepted(MIN_ACCEPTED if min_accepted is None else min_accepted)
        self.confidence_level = check_referral_confidence(
            DEFAULT_REFERRAL_CONFIDENCE if confidence_level is None else confidence_level)
        self.info = dict(info or {})
        self.overwrite = overwrite
        refuse_existing(self.output_dir / CALIBRATION_FILE, overwrite=overwrite)

    def _write(self, engine: Engine) -> None:
        from mednet.calibration.run_calibration import fit_calibration, write_calibration

        if not self.labels:
            raise DataError(None, "calibration needs the labelled validation split")
        result = fit_calibration(self.all_logits(), torch.cat(self.labels), self.class_names, self.n_bins,
                                 self.target_accuracy, self.min_accepted, self.confidence_level)
        write_calibration(result, self.output_dir, {**self.info, "n_images": len(result["labels"])},
                          overwrite=self.overwrite)
        engine.state.calibration = result
