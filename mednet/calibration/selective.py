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

:func:`referral_threshold` picks the threshold on the validation split and :func:`selective_summary` applies it to
the test split. An operating point counts only if the **one-sided Clopper–Pearson lower confidence bound** of its
accepted cases' accuracy reaches the target (Clopper & Pearson 1934; ``k`` correct of ``n`` accepted, level
``1 − α``: ``L = Beta⁻¹(α; k, n − k + 1)``, ``L = 0`` for ``k = 0``), and the largest such coverage is kept. The
point estimate ``k / n`` is not enough: the threshold with the largest coverage whose validation accuracy happens
to reach the target is, by that very choice, one whose validation accuracy came out high, so on new data it falls
short — with perfectly calibrated confidences, 300 validation cases and a 95 % target, the accepted cases' accuracy
on new data averaged 0.946 and was below target in 58 % of repeats. With the bound at the default level 0.9
(:data:`DEFAULT_REFERRAL_CONFIDENCE`, ``--referral_confidence``) the target was kept in ≈ 91 % of repeats
(tests/test_calibration.py simulates it; a run whose target is not reachable refers every case, which keeps it).
The level holds for each operating point; the largest passing coverage is picked among many, so it is a guide, not
a simultaneous guarantee. A target of 1.0 is never reachable (no finite sample bounds the accuracy at 1).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from mednet.errors import OptionError

__all__ = ["risk_coverage_curve", "aurc", "aurc_from_curve", "optimal_aurc", "referral_threshold",
           "selective_summary", "check_target_accuracy", "check_min_accepted", "check_referral_confidence",
           "accuracy_lower_bound", "MIN_ACCEPTED", "DEFAULT_REFERRAL_CONFIDENCE"]

ArrayLike = np.ndarray | torch.Tensor | Sequence

#: ``accuracy ≥ target − ACCURACY_TOLERANCE`` counts as reaching the target (float round-off of e.g. 19/20)
ACCURACY_TOLERANCE = 1e-12
#: the fewest validation cases a referral threshold may accept: below 20, one error moves the accepted cases'
#: accuracy by more than 5 points, so a 95 % target "reached" there (e.g. 6 of 6 correct) is no evidence — the
#: synthetic demo's threshold was chosen on 6 of 305 validation cases and accepted 4 of 303 test cases
MIN_ACCEPTED = 20
#: the one-sided confidence level of the accuracy lower bound a referral threshold must reach the target with
#: (``--referral_confidence``): 0.9 kept a 95 % target on new data in ≈ 91 % of simulated repeats (module docstring)
DEFAULT_REFERRAL_CONFIDENCE = 0.9


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


def check_referral_confidence(confidence_level: object, option: str = "--referral_confidence") -> float:
    """``confidence_level`` as a float in ``[0.5, 1)``; :class:`OptionError` naming ``option`` otherwise.

    Below 0.5 the "lower" bound lies above the point estimate; at 1 it is 0 for every operating point."""
    ok = isinstance(confidence_level, (numbers.Real, np.floating, np.integer)) and not isinstance(
        confidence_level, (bool, np.bool_))
    value = float(confidence_level) if ok else math.nan
    if not (0.5 <= value < 1):
        raise OptionError({option: f"must be a number in [0.5, 1), got {confidence_level!r}"})
    return value


def accuracy_lower_bound(hits: ArrayLike, accepted: ArrayLike,
                         confidence_level: float = DEFAULT_REFERRAL_CONFIDENCE) -> np.ndarray:
    """One-sided Clopper–Pearson lower confidence bound of an accuracy, ``hits`` correct of ``accepted`` cases
    (arrays of the same shape, ``0 ≤ hits ≤ accepted``, ``accepted ≥ 1``): ``Beta⁻¹(1 − level; hits, accepted −
    hits + 1)``, and 0 for ``hits = 0`` (where that Beta quantile is undefined).

    With probability at least ``confidence_level`` the true accuracy is ≥ the bound (exact, from the binomial; no
    normal approximation, which fails at the accuracies near 1 a referral target asks for). E.g. 20 of 20 at 0.9:
    ``0.1^(1/20)`` = 0.891. Returns float64 of the inputs' shape.
    """
    level = check_referral_confidence(confidence_level)
    k = np.asarray(_numpy(hits), dtype=np.float64)
    n = np.asarray(_numpy(accepted), dtype=np.float64)
    if k.shape != n.shape or np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"hits must be within [0, accepted] and accepted >= 1, got {k.tolist()} of {n.tolist()}")
    bound = stats.beta.ppf(1.0 - level, np.maximum(k, 1.0), n - k + 1.0)
    return np.where(k > 0, bound, 0.0)


def referral_threshold(confidence: ArrayLike, correct: ArrayLike, target_accuracy: float = 0.95,
                       min_accepted: int = MIN_ACCEPTED,
                       confidence_level: float = DEFAULT_REFERRAL_CONFIDENCE) -> dict:
    """The confidence threshold with the largest coverage whose accepted cases reach ``target_accuracy`` with
    confidence ``confidence_level`` — the one-sided Clopper–Pearson lower bound of their accuracy
    (:func:`accuracy_lower_bound`) is ≥ the target — among those that accept at least ``min_accepted`` cases.

    Chosen on the validation split; cases with ``confidence < threshold`` are referred. Judging an operating point
    by its point-estimate accuracy instead made the threshold optimistic (module docstring: below target on new
    data in 58 % of simulated repeats). The lower bound is not monotone in the threshold, so every operating point of
    :func:`risk_coverage_curve` is checked and the one with the largest coverage kept (not the first one to fall
    below the target). An operating point with fewer than ``min_accepted`` accepted cases does not count
    (:data:`MIN_ACCEPTED`; with the bound, 20 of 20 correct at level 0.9 bound the accuracy at 0.891 only, so a 95 %
    target needs ≥ 45 accepted cases anyway, the floor matters at lower targets or levels).

    Returns ``{"threshold", "coverage", "accuracy", "accuracy_lower_bound", "target_accuracy", "confidence_level",
    "min_accepted", "achievable", "n"}`` (``accuracy`` = the accepted validation cases' accuracy, ``hits / accepted``).
    If no threshold reaches the target: ``achievable = False``, ``threshold`` = the next float above 1, above every
    probability, so that every case is referred on the test split and at inference too (just above the largest
    *validation* confidence would still accept a more confident later case), ``coverage = 0`` and ``accuracy =
    accuracy_lower_bound = None`` (undefined; ``None`` keeps the dict JSON-ready).

    Raises:
        OptionError: ``--target_accuracy`` not in ``(0, 1]``, ``--referral_min_accepted`` not a whole number ≥ 1,
            ``--referral_confidence`` not in ``[0.5, 1)``.
    """
    target = check_target_accuracy(target_accuracy)
    floor = check_min_accepted(min_accepted)
    level = check_referral_confidence(confidence_level)
    curve = risk_coverage_curve(confidence, correct)
    accepted = curve["accepted"].to_numpy(np.int64)
    hits = accepted - np.rint(curve["risk"].to_numpy(np.float64) * accepted).astype(np.int64)
    lower = accuracy_lower_bound(hits, accepted, level)
    n = int(accepted[-1])
    good = np.flatnonzero((lower >= target - ACCURACY_TOLERANCE) & (accepted >= floor))
    settings = {"target_accuracy": target, "confidence_level": level, "min_accepted": floor}
    if good.size == 0:
        return {"threshold": float(np.nextafter(1.0, np.inf)), "coverage": 0.0, "accuracy": None,
                "accuracy_lower_bound": None, **settings, "achievable": False, "n": n}
    best = int(good[-1])  # rows are sorted by increasing coverage
    return {"threshold": float(curve["threshold"].iloc[best]), "coverage": float(curve["coverage"].iloc[best]),
            "accuracy": float(curve["accuracy"].iloc[best]), "accuracy_lower_bound": float(lower[best]),
            **settings, "achievable": True, "n": n}


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
