"""Selective prediction: accept the confident cases, refer the rest (Geifman & El-Yaniv 2017, "Selective
classification for deep neural networks").

A confidence score ``c_i`` (e.g. the top-1 softmax probability) and a threshold ``τ`` split the ``N`` cases into
*accepted* (``c_i ≥ τ``, the model's answer is used) and *referred* (``c_i < τ``, a clinician decides).

* coverage(τ) = accepted / N;
* risk(τ) = errors among the accepted / accepted (selective risk); accuracy(τ) = 1 − risk(τ).

The risk–coverage curve (:func:`risk_coverage_curve`) lists one operating point per distinct confidence value:
cases with equal confidence cannot be separated by a threshold, so they are accepted or referred together.

AURC (Geifman, Uziel & El-Yaniv 2018, "Bias-reduced uncertainty estimation for deep neural classifiers"): sort by
decreasing confidence and average over ``k = 1..N`` the risk of the ``k`` most confident cases. With ties, every
``k`` inside a block of equal confidence gets the block's risk at its end (the only risk a threshold can reach),
so :func:`aurc` is the area under the step function drawn from the grouped curve:
``Σ_i (coverage_i − coverage_{i−1}) · risk_i``. :func:`optimal_aurc` is the AURC of a perfect ranking (all
correct cases first) at the same accuracy; **excess AURC = aurc − optimal_aurc** ≥ 0 measures the ranking
quality alone, free of the model's accuracy.

:func:`referral_threshold` picks the threshold on the validation split (the largest coverage whose accepted
cases reach a target accuracy); :func:`selective_summary` applies that threshold to the test split.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from mednet.errors import OptionError

__all__ = ["risk_coverage_curve", "aurc", "aurc_from_curve", "optimal_aurc", "referral_threshold",
           "selective_summary", "check_target_accuracy", "check_min_accepted", "MIN_ACCEPTED"]

ArrayLike = np.ndarray | torch.Tensor | Sequence

#: ``accuracy ≥ target − ACCURACY_TOLERANCE`` counts as reaching the target (float round-off of e.g. 19/20)
ACCURACY_TOLERANCE = 1e-12
#: the fewest validation cases a referral threshold may accept: below 20, one error moves the accepted cases'
#: accuracy by more than 5 points, so a 95 % target "reached" there (e.g. 6 of 6 correct) is no evidence — the
#: synthetic demo's threshold was chosen on 6 of 305 validation cases and accepted 4 of 303 test cases
MIN_ACCEPTED = 20


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _correct(correct: ArrayLike, n: int | None = None) -> np.ndarray:
    """``correct`` as a bool ``(N,)`` array (bools or 0/1)."""
    ok = _numpy(correct)
    if ok.ndim != 1:
        raise ValueError(f"correct must have shape (N,), got {tuple(ok.shape)}")
    if ok.size == 0:
        raise ValueError("no cases: correct is empty")
    if n is not None and ok.shape[0] != n:
        raise ValueError(f"{ok.shape[0]} correctness flags for {n} confidences")
    if ok.dtype != bool and not np.all((ok == 0) | (ok == 1)):
        raise ValueError("correct must be booleans or 0/1")
    return ok.astype(bool)


def _inputs(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence (N,) float64, correct (N,) bool)``, checked: 1-D, same non-zero length, finite."""
    c = _numpy(confidence).astype(np.float64)
    if c.ndim != 1:
        raise ValueError(f"confidence must have shape (N,), got {tuple(c.shape)}")
    if c.size == 0:
        raise ValueError("no cases: confidence is empty")
    if not np.all(np.isfinite(c)):
        raise ValueError("confidence must be finite (found NaN or ±inf)")
    return c, _correct(correct, c.shape[0])


def risk_coverage_curve(confidence: ArrayLike, correct: ArrayLike) -> pd.DataFrame:
    """Risk–coverage operating points of ``confidence`` ``(N,)`` against ``correct`` ``(N,)`` (bool or 0/1).

    One row per distinct confidence value, sorted by decreasing ``threshold``: accepting every case with
    ``confidence ≥ threshold`` accepts ``accepted`` cases (ties together), i.e. ``coverage = accepted / N``,
    ``risk`` = error rate among them, ``accuracy = 1 − risk`` (computed as hits / accepted, so a target such as
    19/20 = 0.95 compares exactly). The last row is ``coverage = 1`` (everything accepted).

    Columns: ``coverage, risk, accuracy, threshold, accepted``.
    """
    c, ok = _inputs(confidence, correct)
    order = np.argsort(-c, kind="stable")
    c_sorted, ok_sorted = c[order], ok[order]
    hits = np.cumsum(ok_sorted)
    # index of the last case of each block of equal confidence
    ends = np.flatnonzero(np.append(c_sorted[1:] != c_sorted[:-1], True))
    accepted = ends + 1
    hit = hits[ends]
    n = c.shape[0]
    return pd.DataFrame({
        "coverage": accepted / n,
        "risk": (accepted - hit) / accepted,
        "accuracy": hit / accepted,
        "threshold": c_sorted[ends],
        "accepted": accepted.astype(np.int64),
    })


def aurc_from_curve(curve: pd.DataFrame) -> float:
    """AURC of a :func:`risk_coverage_curve`: ``Σ_i (accepted_i − accepted_{i−1}) / N · risk_i``.

    Every ``k`` of a tie block gets the block's risk at its end, as :func:`aurc` defines it.
    """
    accepted = curve["accepted"].to_numpy(np.float64)
    if accepted.size == 0:
        raise ValueError("empty risk-coverage curve")
    n = accepted[-1]
    steps = np.diff(np.concatenate([[0.0], accepted]))
    return float((steps * curve["risk"].to_numpy(np.float64)).sum() / n)


def aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk–coverage curve (Geifman et al. 2018): ``1/N Σ_{k=1..N} risk(k most confident)``.

    Tie-aware: inside a block of equal confidence, every ``k`` gets the block's risk at its end, so the value
    does not depend on how ties happen to be ordered. Lower is better; compare with :func:`optimal_aurc`
    (excess AURC = ``aurc − optimal_aurc``).
    """
    return aurc_from_curve(risk_coverage_curve(confidence, correct))


def optimal_aurc(correct: ArrayLike) -> float:
    """AURC of a perfect ranking of ``correct`` ``(N,)``: all correct cases first, then the errors.

    With ``C`` correct cases the ``k`` most confident have ``max(0, k − C)`` errors; this is the lowest AURC any
    confidence can reach at this accuracy. **Excess AURC = aurc − optimal_aurc.**
    """
    ok = _correct(correct)
    n, n_correct = ok.shape[0], int(ok.sum())
    k = np.arange(1, n + 1, dtype=np.float64)
    return float((np.maximum(k - n_correct, 0) / k).mean())


def check_target_accuracy(target_accuracy: object, option: str = "--target_accuracy") -> float:
    """``target_accuracy`` as a float in ``(0, 1]``; :class:`OptionError` naming ``option`` otherwise."""
    ok = isinstance(target_accuracy, (numbers.Real, np.floating, np.integer)) and not isinstance(
        target_accuracy, (bool, np.bool_))
    value = float(target_accuracy) if ok else math.nan
    if not (0 < value <= 1):
        raise OptionError({option: f"must be a number in (0, 1], got {target_accuracy!r}"})
    return value


def check_min_accepted(min_accepted: object, option: str = "--referral_min_accepted") -> int:
    """``min_accepted`` as an int ≥ 1; :class:`OptionError` naming ``option`` otherwise."""
    ok = isinstance(min_accepted, (numbers.Integral, np.integer)) and not isinstance(min_accepted, (bool, np.bool_))
    if not ok or int(min_accepted) < 1:
        raise OptionError({option: f"must be a whole number ≥ 1, got {min_accepted!r}"})
    return int(min_accepted)


def referral_threshold(confidence: ArrayLike, correct: ArrayLike, target_accuracy: float = 0.95,
                       min_accepted: int = MIN_ACCEPTED) -> dict:
    """The confidence threshold with the largest coverage whose accepted cases reach ``target_accuracy``, among
    those that accept at least ``min_accepted`` cases.

    Chosen on the validation split; cases with ``confidence < threshold`` are referred. The accuracy of the
    accepted cases is not monotone in the threshold, so every operating point of :func:`risk_coverage_curve` is
    checked and the one with the largest coverage kept (not the first one to fall below the target). An operating
    point with fewer than ``min_accepted`` accepted cases does not count (:data:`MIN_ACCEPTED`: a target met by a
    handful of very confident cases says little about the next ones).

    Returns ``{"threshold", "coverage", "accuracy", "target_accuracy", "min_accepted", "achievable", "n"}``. If no
    threshold reaches the target: ``achievable = False``, ``threshold`` = the next float above 1, above every
    probability, so that every case is referred on the test split and at inference too (just above the largest
    *validation* confidence would still accept a more confident later case), ``coverage = 0`` and ``accuracy =
    None`` (undefined; ``None`` keeps the dict JSON-ready).

    Raises:
        OptionError: ``--target_accuracy`` not in ``(0, 1]``, ``--referral_min_accepted`` not a whole number ≥ 1.
    """
    target = check_target_accuracy(target_accuracy)
    floor = check_min_accepted(min_accepted)
    curve = risk_coverage_curve(confidence, correct)
    n = int(curve["accepted"].iloc[-1])
    good = curve[(curve["accuracy"] >= target - ACCURACY_TOLERANCE) & (curve["accepted"] >= floor)]
    if good.empty:
        return {"threshold": float(np.nextafter(1.0, np.inf)), "coverage": 0.0, "accuracy": None,
                "target_accuracy": target, "min_accepted": floor, "achievable": False, "n": n}
    best = good.iloc[-1]  # rows are sorted by increasing coverage
    return {"threshold": float(best["threshold"]), "coverage": float(best["coverage"]),
            "accuracy": float(best["accuracy"]), "target_accuracy": target, "min_accepted": floor,
            "achievable": True, "n": n}


def selective_summary(confidence: ArrayLike, correct: ArrayLike, threshold: float) -> dict:
    """Accept ``confidence ≥ threshold`` (a threshold chosen on validation, applied to e.g. the test split).

    Returns ``{"threshold", "n", "accepted", "referred", "coverage", "accuracy", "risk"}``; ``accuracy`` and
    ``risk`` of the accepted cases are ``None`` when nothing is accepted.
    """
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (numbers.Real, np.floating, np.integer)) \
            or math.isnan(float(threshold)):
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    c, ok = _inputs(confidence, correct)
    accept = c >= float(threshold)
    n, n_acc = c.shape[0], int(accept.sum())
    accuracy = float(ok[accept].mean()) if n_acc else None
    return {"threshold": float(threshold), "n": n, "accepted": n_acc, "referred": n - n_acc,
            "coverage": n_acc / n, "accuracy": accuracy, "risk": None if accuracy is None else 1.0 - accuracy}
