"""A run's calibration: temperature and referral threshold fitted on the validation split, stored in the run.

Training ends by fitting them (``train.json``; ``calibrate.json`` refits an existing run), and evaluation,
inference and the web demo read them back (:func:`read_calibration`) and apply them without being asked:

``calibration.json`` (in the run folder, beside ``model.pt``)::

    {"temperature": 1.84,                          # logits / T before the softmax (Guo et al. 2017)
     "referral": {"threshold": 0.71, "target_accuracy": 0.95, "confidence_level": 0.9, "min_accepted": 20,
                  "coverage": 0.62, "accuracy": 0.978, "accuracy_lower_bound": 0.955, "achievable": true,
                  "n": 300},  # refer a case less confident than this; accepted: ≥ 95 % accurate at 90 % confidence
     "validation": {"before": {...}, "after": {...}},   # accuracy, ECE, OE, UCE, NLL, Brier, AURC at T = 1 and T
     "fitted_on": {"split": "validation", "n_images": 300, "checkpoint": ".../model.pt",
                   "checkpoint_sha256": "9f2c...", ...}}

plus ``calibration_reliability.png`` (before / after, side by side) and ``calibration_risk_coverage.csv/.png``.
Every choice is made on the validation split: the test split is touched once, by evaluation.

``calibration.json`` belongs to the run's ``model.pt`` (the model evaluation, inference, the web demo and gated
retraining serve), and to those very weights: it records their SHA-256, and :func:`read_calibration` applies it to
a checkpoint only if it was fitted on that file — another checkpoint of the run (``model_final.pt``) or a
``model.pt`` replaced since is used uncalibrated (T = 1, no referral), with a warning. ``calibrate.json`` refits
``model.pt`` only (:func:`check_calibration_checkpoint`): a calibration of ``model_final.pt`` written there would be
applied to ``model.pt``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mednet.calibration.selective import (DEFAULT_REFERRAL_CONFIDENCE, MIN_ACCEPTED, aurc, referral_threshold,
                                          risk_coverage_curve)
from mednet.calibration.temperature import check_temperature, fit_temperature, scaled_probabilities
from mednet.errors import DataError
from mednet.io import read_json_object, refuse_existing, write_json_atomic
from mednet.metrics.classification import classification_report

__all__ = ["CALIBRATION_FILE", "CALIBRATION_SCORES", "calibration_scores", "check_calibration_split", "fit_calibration", "write_calibration",
           "read_calibration", "calibrated_referral_settings", "check_calibration_checkpoint"]

logger = logging.getLogger("mednet")

#: written into a run folder (beside model.pt) and read by evaluation, inference and the web demo
CALIBRATION_FILE = "calibration.json"
#: the scores compared before and after temperature scaling
CALIBRATION_SCORES = ("accuracy", "balanced_accuracy", "ece", "oe", "uce", "nll", "brier", "aurc")


def calibration_scores(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], n_bins: int = 15) -> dict:
    """:data:`CALIBRATION_SCORES` of softmax outputs ``probs`` ``(N, K)`` against ``labels`` ``(N,)``."""
    report = classification_report(probs, labels, class_names, n_bins)
    correct = probs.argmax(1) == labels
    return {**{k: float(report[k]) for k in CALIBRATION_SCORES if k != "aurc"},
            "aurc": aurc(probs.max(1), correct)}


def fit_calibration(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, class_names: Sequence[str],
                    n_bins: int = 15, target_accuracy: float = 0.95, min_accepted: int = MIN_ACCEPTED,
                    confidence_level: float = DEFAULT_REFERRAL_CONFIDENCE) -> dict:
    """Fit the temperature and the referral threshold on validation ``logits`` ``(N, K)`` and ``labels`` ``(N,)``.

    ``logits`` are a network's logits, or an ensemble's averaged log-probabilities (their softmax is the
    ensemble's probabilities). The temperature minimises NLL (:func:`fit_temperature`, never raises it); the
    threshold is the one with the largest coverage whose accepted cases (at least ``min_accepted`` of them) reach
    ``target_accuracy`` with confidence ``confidence_level`` (the Clopper–Pearson lower bound of their accuracy,
    :func:`referral_threshold`), on the *calibrated* confidence.

    Returns:
        the content of ``calibration.json`` plus ``"curves"``: the risk–coverage curves before/after
        (DataFrames, written as CSV by :func:`write_calibration`) and ``"probs"`` before/after.
    """
    z = torch.as_tensor(logits).double()
    y = torch.as_tensor(labels).long()
    temperature = fit_temperature(z, y)
    before, after = scaled_probabilities(z, 1.0), scaled_probabilities(z, temperature)
    y_np = y.numpy()
    scores = {"before": calibration_scores(before, y_np, class_names, n_bins),
              "after": calibration_scores(after, y_np, class_names, n_bins)}
    confidence, correct = after.max(1), after.argmax(1) == y_np
    referral = referral_threshold(confidence, correct, target_accuracy, min_accepted, confidence_level)
    curves = {"before": risk_coverage_curve(before.max(1), before.argmax(1) == y_np),
              "after": risk_coverage_curve(confidence, correct)}
    logger.info("temperature %.3f fitted on %d validation images: NLL %.4f -> %.4f, ECE %.4f -> %.4f; referral "
                "threshold %.3f keeps %.0f %% of cases at accuracy %s (lower bound %s at %.2f confidence; target %.2f)",
                temperature, len(y_np), scores["before"]["nll"], scores["after"]["nll"], scores["before"]["ece"],
                scores["after"]["ece"], referral["threshold"], 100 * referral["coverage"],
                "n/a" if referral["accuracy"] is None else f"{referral['accuracy']:.3f}",
                "n/a" if referral["accuracy_lower_bound"] is None else f"{referral['accuracy_lower_bound']:.3f}",
                referral["confidence_level"], referral["target_accuracy"])
    return {"temperature": float(temperature), "referral": referral, "validation": scores, "n_bins": int(n_bins),
            "class_names": list(class_names), "curves": curves, "probs": {"before": before, "after": after},
            "labels": y_np}


def write_calibration(result: Mapping, output_dir: str | os.PathLike, info: Mapping[str, object] | None = None,
                      overwrite: bool = True) -> Path:
    """Write :func:`fit_calibration`'s result into a run folder (atomically): ``calibration.json``,
    ``calibration_reliability.png`` (before / after side by side) and ``calibration_risk_coverage.csv/.png``.

    Args:
        info: where it was fitted (split, data, number of images, checkpoint…), stored as ``fitted_on``; with a
            ``"checkpoint"`` that exists, its SHA-256 is added as ``"checkpoint_sha256"`` (what
            :func:`read_calibration` compares with the checkpoint it is asked for).
        overwrite: refuse an existing ``calibration.json`` when False (``calibrate.json`` without ``--overwrite``).
    """
    from mednet.reports.calibration import plot_reliability_comparison
    from mednet.reports.selective import plot_risk_coverage
    from mednet.reports.tables import write_csv

    out = Path(output_dir)
    path = out / CALIBRATION_FILE
    refuse_existing(path, overwrite=overwrite)
    t = result["temperature"]
    probs, labels, curves = result["probs"], result["labels"], result["curves"]
    plot_reliability_comparison([("before (T = 1)", probs["before"]), (f"after (T = {t:.2f})", probs["after"])],
                                labels, out / "calibration_reliability.png", n_bins=result["n_bins"],
                                title="validation split: temperature scaling")
    table = pd.concat([c.assign(calibration=k) for k, c in curves.items()], ignore_index=True)
    write_csv(table, out / "calibration_risk_coverage.csv")
    referral = result["referral"]
    point = {}
    if referral["achievable"]:
        point = {"after": (referral["coverage"], 1.0 - referral["accuracy"])}
    plot_risk_coverage({"before (T = 1)": curves["before"], f"after (T = {t:.2f})": curves["after"]},
                       out / "calibration_risk_coverage.png",
                       threshold_points={f"after (T = {t:.2f})": point["after"]} if point else None,
                       title="validation split: risk–coverage")
    content = {k: result[k] for k in ("temperature", "referral", "validation", "n_bins", "class_names")}
    fitted_on = dict(info or {})
    checkpoint = fitted_on.get("checkpoint")
    if checkpoint and "checkpoint_sha256" not in fitted_on and Path(str(checkpoint)).is_file():
        from mednet.runs import file_sha256

        fitted_on["checkpoint_sha256"] = file_sha256(str(checkpoint))
    content["fitted_on"] = fitted_on
    return write_json_atomic(_clean(content), path)


def _clean(obj: object) -> object:
    """JSON-safe: NumPy scalars to Python, NaN to None."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def read_calibration(checkpoint: str | os.PathLike | None) -> dict:
    """The calibration of ``checkpoint`` (a checkpoint file, or a run folder: its ``model.pt``), from the run's
    ``calibration.json``.

    Returns ``{"temperature": T, "referral_threshold": t or None, "referral": {...}, "file": path or None}``:
    ``T = 1`` and no threshold when the run has no ``calibration.json`` (trained before calibration existed, or an
    exported model): the output is then the plain softmax, and a warning says how to fit one. ``referral`` is the
    file's whole ``referral`` record (target accuracy, confidence level, validation coverage…, what the web demo
    shows beside the threshold; ``{}`` without one).

    ``calibration.json`` is applied only to the checkpoint it was fitted on: the one whose SHA-256 it records
    (``fitted_on.checkpoint_sha256``), or, for a file written before the hash was recorded, the one with the name of
    its ``fitted_on.checkpoint`` (``model.pt`` when it names none). Any other checkpoint (``model_final.pt``,
    ``checkpoint_last.pt``, a ``model.pt`` replaced after fitting) gets the result of a run without calibration,
    with a warning saying why and how to fit one. A run folder without ``model.pt`` (an ensemble run) has its
    calibration applied as it is.

    Raises:
        DataError: the file exists but is unreadable or holds a temperature that is not a finite number > 0.
    """
    uncalibrated = {"temperature": 1.0, "referral_threshold": None, "referral": {}, "file": None}
    if checkpoint is None:
        return uncalibrated
    from mednet.runs import MODEL_FILE

    given = Path(checkpoint)
    run, model = (given, given / MODEL_FILE) if given.is_dir() else (given.parent, given)
    path = run / CALIBRATION_FILE
    if not path.is_file():
        logger.warning("%s: no %s — probabilities are not temperature-scaled and no case is referred (fit one with "
                       "calibrate.json)", run, CALIBRATION_FILE)
        return uncalibrated
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        temperature = float(content["temperature"])
        referral = content.get("referral") or {}
        threshold = referral.get("threshold")
        fitted_on = content.get("fitted_on") or {}
        if not isinstance(fitted_on, Mapping):
            raise TypeError(f"fitted_on is {type(fitted_on).__name__}, not an object")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(path, f"cannot read the calibration ({type(e).__name__}: {e})") from e
    try:
        check_temperature(temperature)
    except ValueError as e:
        raise DataError(path, f"invalid temperature: {e}") from e
    other = _fitted_on_another_checkpoint(fitted_on, model)
    if other:
        if model.name == MODEL_FILE:
            fix = (f"refit it for this {MODEL_FILE} with calibrate.json --ckpt_path {shlex.quote(str(run))} "
                   "--overwrite True")
        else:
            fix = (f"{CALIBRATION_FILE} belongs to the run's {MODEL_FILE}; to calibrate {model.name}, copy it as "
                   f"{MODEL_FILE}, with settings.json, into a folder of its own and run calibrate.json with "
                   "--ckpt_path on that folder")
        logger.warning("%s: fitted on %s — not applied: probabilities are not temperature-scaled and no case is "
                       "referred; %s", path, other, fix)
        return uncalibrated
    return {"temperature": temperature, "referral_threshold": None if threshold is None else float(threshold),
            "referral": dict(referral), "file": str(path)}


def _fitted_on_another_checkpoint(fitted_on: Mapping, model: Path) -> str | None:
    """``"<what it was fitted on>, not on <model>"`` when a calibration's ``fitted_on`` record is not ``model``'s;
    None when it is (the same SHA-256 when recorded and ``model`` exists; else the same file name, ``model.pt``
    when the record names no checkpoint)."""
    from mednet.runs import MODEL_FILE, file_sha256

    recorded = fitted_on.get("checkpoint")
    name = Path(str(recorded)).name if recorded else MODEL_FILE
    digest = fitted_on.get("checkpoint_sha256")
    if digest and model.is_file():
        actual = file_sha256(model)
        if actual == str(digest):
            return None
        if model.name == name:
            return (f"{name} with SHA-256 {str(digest)[:12]}…, not on {model} as it is now "
                    f"(SHA-256 {actual[:12]}…: replaced after the fit)")
        return f"{name} (SHA-256 {str(digest)[:12]}…), not on {model}"
    return None if model.name == name else f"{name}, not on {model}"


def check_calibration_checkpoint(checkpoint: str | os.PathLike) -> None:
    """``calibrate.json`` refits the run's ``model.pt`` only: its ``calibration.json`` is ``model.pt``'s (what
    evaluation, inference, the web demo and retraining serve), and a temperature and threshold fitted on
    ``model_final.pt`` written there would replace it (the web demo applied them to ``model.pt``).

    Raises:
        OptionError: ``checkpoint`` is not a ``model.pt`` (names ``--ckpt_path`` and what to do instead).
    """
    from mednet.errors import OptionError
    from mednet.runs import MODEL_FILE

    path = Path(checkpoint)
    if path.name != MODEL_FILE:
        raise OptionError({"--ckpt_path": f"calibrate.json fits the run's {MODEL_FILE} only, not {path.name}: "
                                          f"{path.parent / CALIBRATION_FILE} is {MODEL_FILE}'s (evaluation, "
                                          f"inference and the web demo apply it to {MODEL_FILE}); calibrate "
                                          f"{MODEL_FILE} (--ckpt_path {shlex.quote(str(path.parent))}), or evaluate "
                                          f"{path.name} uncalibrated (evaluate.json --ckpt_path "
                                          f"{shlex.quote(str(path))}: T = 1, no referral)"})


def calibrated_referral_settings(run: str | os.PathLike) -> dict:
    """``{"target_accuracy", "referral_min_accepted", "referral_confidence"}`` the referral threshold of ``run`` (a
    run folder) was fitted for (its ``calibration.json``), each only when recorded: none for a run without
    calibration (trained before the dermoscopy bundle's 0.3.0), no ``referral_min_accepted`` for one fitted before
    0.3.3 and no ``referral_confidence`` for one fitted before 0.3.4.

    The calibration, not ``settings.json``, is what the served threshold was fitted for: ``calibrate.json`` may have
    refitted it with another ``--target_accuracy``. A retraining candidate is calibrated for the same target (with
    the bundle's default instead, a run calibrated for 99 % would be replaced by one that refers fewer cases at a
    lower accuracy, which the gate does not see), and a refit without options keeps it.

    Raises:
        DataError: the file is unreadable or records a value out of range.
    """
    path = Path(run) / CALIBRATION_FILE
    referral = (read_json_object(path) or {}).get("referral")
    referral = referral if isinstance(referral, Mapping) else {}
    found = {}
    target = referral.get("target_accuracy")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
            raise DataError(path, f"referral.target_accuracy {target!r} is not a number in (0, 1]")
        found["target_accuracy"] = float(target)
    floor = referral.get("min_accepted")
    if floor is not None:
        if isinstance(floor, bool) or not isinstance(floor, int) or floor < 1:
            raise DataError(path, f"referral.min_accepted {floor!r} is not a whole number ≥ 1")
        found["referral_min_accepted"] = floor
    level = referral.get("confidence_level")
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.5 <= level < 1:
            raise DataError(path, f"referral.confidence_level {level!r} is not a number in [0.5, 1)")
        found["referral_confidence"] = float(level)
    return found


def check_calibration_split(split: str) -> None:
    """Calibration is fitted on the validation split only: fitting on the test split would make every later
    test score optimistic (the calibration study's mistake with its epochs and ratios)."""
    from mednet.errors import OptionError

    if split != "validation":
        raise OptionError({"--split": f"calibration is fitted on the validation split only, not {split!r}; the test "
                                      "split is for evaluation"})
