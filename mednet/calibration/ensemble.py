"""Weighted ensembles of classifiers, averaged in probability space, and the search for their weights.

The ensemble of ``M`` members with logits ``z_m`` and weights ``w_m ≥ 0``, ``Σ w_m = 1``, predicts the weighted
mean of the members' softmax outputs, ``p̄ = Σ_m w_m softmax(z_m)`` (Lakshminarayanan et al. 2017, "Simple and
scalable predictive uncertainty estimation using deep ensembles", with weights). It is returned as
log-probabilities ``log p̄`` (:func:`ensemble_log_probabilities`): "logits" whose softmax is ``p̄``, so every
consumer that applies a softmax (reports, temperature scaling) handles an ensemble unchanged.

Weights are given as a ratio on the command line (``--weights 5:1:5:1:1``, in the order the models are given;
:func:`parse_ratio`, :func:`format_ratio`) or searched on the validation split (:func:`search_ensemble_weights`)
for the lowest NLL or ECE; the search never returns weights worse than the uniform ensemble on its objective.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mednet.errors import OptionError
from mednet.metrics.classification import expected_calibration_error

__all__ = ["choose_ensemble_weights", "parse_ratio", "format_ratio", "ensemble_log_probabilities",
           "search_ensemble_weights", "WEIGHT_OBJECTIVES"]

logger = logging.getLogger("mednet")

ArrayLike = np.ndarray | torch.Tensor | Sequence

#: objectives :func:`search_ensemble_weights` can minimise
WEIGHT_OBJECTIVES = ("nll", "ece")
#: Dirichlet(1) samples the ECE search evaluates besides the uniform weights and the single members
ECE_SEARCH_SAMPLES = 2000
#: NLL-searched weights below this are set to 0 (and the rest renormalised)
SNAP_TO_ZERO = 1e-6
#: ECE values closer than this count as a tie (broken by the lower NLL)
ECE_TIE = 1e-12


def _number_text(x: object) -> str:
    return x if isinstance(x, str) else repr(x) if not isinstance(x, (int, float)) else f"{x:g}"


def parse_ratio(ratio: str | Sequence[float] | np.ndarray | torch.Tensor | None, n_models: int,
                option: str = "--weights") -> np.ndarray:
    """Ensemble weights ``(n_models,)`` float64 summing to 1 from a ratio.

    Args:
        ratio: ``"5:1:5:1:1"`` (one number per model, in the order the models are given), a sequence of
            numbers, or ``None`` for uniform weights. Only the ratio matters: ``"2:2"`` = ``"1:1"``.
        n_models: how many models the weights are for.
        option: the option named in errors.

    Raises:
        OptionError: ``{option: problem}`` for no models, a part that is not a number (``'5:1:x': 'x' is not
            a number``), the wrong count (``'5:1' has 2 weights for 5 models``), a negative, NaN or infinite
            weight, or all weights zero.
    """
    if int(n_models) < 1:
        raise OptionError({option: "no models given"})
    n_models = int(n_models)
    if ratio is None:
        return np.full(n_models, 1.0 / n_models)
    if isinstance(ratio, str):
        text, parts = ratio, [p.strip() for p in ratio.strip().split(":")]
    else:
        if isinstance(ratio, torch.Tensor):
            ratio = ratio.detach().cpu().reshape(-1).tolist()
        elif isinstance(ratio, np.ndarray):
            ratio = ratio.reshape(-1).tolist()
        parts = list(ratio)
        text = ":".join(_number_text(p) for p in parts)
    values = []
    for part in parts:
        try:
            if isinstance(part, bool):
                raise TypeError
            values.append(float(part))
        except (TypeError, ValueError):
            raise OptionError({option: f"'{text}': '{_number_text(part)}' is not a number"}) from None
    if len(values) != n_models:
        raise OptionError({option: f"'{text}' has {len(values)} weights for {n_models} models"})
    w = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise OptionError({option: f"'{text}': weights must be finite numbers (found NaN or inf)"})
    if np.any(w < 0):
        raise OptionError({option: f"'{text}': weight {_number_text(float(w[w < 0][0]))} is negative "
                                   "(weights are ratios >= 0)"})
    if w.sum() <= 0:
        raise OptionError({option: f"'{text}': all weights are zero"})
    return w / w.sum()


def format_ratio(weights: ArrayLike, digits: int = 2) -> str:
    """Weights as a ratio string, scaled so the smallest non-zero weight is 1: ``[5, 1, 5, 1, 1] / 13`` →
    ``"5:1:5:1:1"``.

    Each number has at most ``digits`` decimals, trailing zeros stripped (``"5.2:1:4.75"``); zero weights print
    ``0``. :func:`parse_ratio` reads it back (up to that rounding).
    """
    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
    w = w.reshape(-1)
    if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"weights must be finite, >= 0 and not all zero, got {w.tolist()}")
    scaled = w / w[w > 0].min()
    out = []
    for v in scaled:
        s = "0" if v == 0 else f"{v:.{int(digits)}f}"
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        out.append(s)
    return ":".join(out)


def _weights_tensor(weights: ArrayLike, m: int, like: torch.Tensor) -> torch.Tensor:
    """``weights`` ``(M,)`` as a tensor of ``like``'s dtype/device, normalised to sum 1 (gradients kept)."""
    if isinstance(weights, torch.Tensor):
        w = weights.to(dtype=like.dtype, device=like.device).reshape(-1)
        if w.shape[0] != m:
            raise ValueError(f"{w.shape[0]} weights for {m} members")
        if not torch.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
            raise ValueError(f"weights must be finite, >= 0 and not all zero, got {w.tolist()}")
    else:
        w = torch.as_tensor(parse_ratio(weights, m), dtype=like.dtype, device=like.device)
    return w / w.sum()


def ensemble_log_probabilities(member_logits: ArrayLike, weights: ArrayLike) -> torch.Tensor:
    """``log Σ_m w_m softmax(z_m)``: ``(N, K)`` from ``member_logits`` ``(M, N, K)`` and ``weights`` ``(M,)``.

    Computed as ``logsumexp_m(log_softmax(z_m) + log w_m)`` — never through probabilities, so confident members
    do not underflow to ``log 0``. A zero weight gives ``log w = −inf``, which logsumexp ignores (the result stays
    finite while one weight is positive). Weights are normalised to sum 1; a tensor of weights keeps its
    gradient (the NLL search differentiates through this function).

    Computed in float32 at least: half-precision logits (an :class:`mednet.networks.ensemble.EnsembleClassifier`
    under AMP) are cast up first, so the weights — searched and fitted with the temperature and the referral
    threshold in float64 — are not rounded to float16 (5/13 → 0.38452 instead of 0.38462) and neither is
    ``log_softmax``. Float64 logits stay float64. Returns float32 (float64 for float64 logits).
    """
    z = member_logits if isinstance(member_logits, torch.Tensor) else torch.as_tensor(np.asarray(member_logits))
    if not z.is_floating_point():
        z = z.to(torch.get_default_dtype())
    if z.dtype != torch.float64:
        z = z.float()
    if z.ndim != 3:
        raise ValueError(f"member logits must have shape (M, N, K), got {tuple(z.shape)}")
    w = _weights_tensor(weights, z.shape[0], z)
    return torch.logsumexp(F.log_softmax(z, dim=-1) + w.log()[:, None, None], dim=0)


def _search_inputs(member_logits: ArrayLike, labels: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    z = member_logits.detach().cpu() if isinstance(member_logits, torch.Tensor) else torch.as_tensor(
        np.asarray(member_logits))
    z = z.as_subclass(torch.Tensor).to(torch.float64)
    if z.ndim != 3 or 0 in z.shape:
        raise ValueError(f"member logits must have shape (M, N, K), non-empty, got {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise ValueError("member logits must be finite (found NaN or ±inf)")
    y = labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    y = y.as_subclass(torch.Tensor).reshape(-1).to(torch.int64)
    if y.shape[0] != z.shape[1]:
        raise ValueError(f"{y.shape[0]} labels for {z.shape[1]} samples")
    if int(y.min()) < 0 or int(y.max()) >= z.shape[2]:
        raise ValueError(f"labels must be classes 0..{z.shape[2] - 1}, got range [{int(y.min())}, {int(y.max())}]")
    return z, y


def search_ensemble_weights(member_logits: ArrayLike, labels: ArrayLike, objective: str = "nll", n_bins: int = 15,
                            seed: int = 0) -> dict:
    """Ensemble weights minimising ``objective`` on ``member_logits`` ``(M, N, K)`` and ``labels`` ``(N,)``.

    These must be VALIDATION data (the caller's duty): the test split is never used for choosing weights, or
    its scores would be optimistic.

    * ``"nll"``: weights ``w = softmax(a)``, ``a ∈ R^M`` starting at 0 (uniform), so they stay on the simplex
      without constraints; L-BFGS (strong Wolfe) in float64 on the mean NLL of the ensemble probabilities,
      ``−1/N Σ_i log p̄_{i, y_i}`` (exact, from :func:`ensemble_log_probabilities`, not clamped).
    * ``"ece"`` (piecewise constant, no gradient): evaluates the uniform weights, every single member (one-hot
      weights) and ``2000`` Dirichlet(1) samples (uniform on the simplex) from ``numpy.random.default_rng(seed)``;
      keeps the lowest top-1 ECE (:func:`mednet.metrics.classification.expected_calibration_error`, ``n_bins``
      equal-width bins), ties broken by the lower NLL.

    Either way, weights worse than uniform on the objective are replaced by uniform: the search never does worse
    than the uniform ensemble on these data.

    Returns ``{"weights": (M,) float64 summing to 1, "ratio": format_ratio(weights), "objective",
    "value": objective of these weights, "uniform_value": objective of the uniform weights}``.

    Raises:
        OptionError: ``--weight_objective`` not ``nll`` or ``ece``.
        ValueError: inputs of the wrong shape, non-finite logits, labels outside ``[0, K)``.
    """
    if objective not in WEIGHT_OBJECTIVES:
        raise OptionError({"--weight_objective": f"unknown objective {objective!r}; choose one of "
                                                 f"{', '.join(WEIGHT_OBJECTIVES)}"})
    z, y = _search_inputs(member_logits, labels)
    m, n, _ = z.shape
    uniform = np.full(m, 1.0 / m)
    log_p = F.log_softmax(z, dim=-1)  # (M, N, K)

    def nll_of(log_w: torch.Tensor) -> torch.Tensor:
        ens = torch.logsumexp(log_p + log_w[:, None, None], dim=0)
        return -ens[torch.arange(n), y].mean()

    if objective == "nll":
        uniform_value = float(nll_of(torch.as_tensor(uniform).log()))
        a = torch.zeros(m, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([a], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = nll_of(torch.log_softmax(a, 0))  # log_softmax: no log(0) when a weight underflows
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            weights = torch.softmax(a.detach(), 0).numpy().astype(np.float64)
            if np.all(np.isfinite(weights)):
                # negligible weights become 0, so the ratio reads "1:0:3" rather than "1e+09:1:3e+09"
                weights = np.where(weights < SNAP_TO_ZERO, 0.0, weights)
                weights /= weights.sum()
                value = float(nll_of(torch.as_tensor(weights).log()))
            else:
                value = math.inf
    else:
        probs = log_p.exp().numpy()  # (M, N, K): the ensemble of weights w is tensordot(w, probs)
        p_true = probs[:, np.arange(n), y.numpy()]  # (M, N)
        rng = np.random.default_rng(seed)
        candidates = np.concatenate([uniform[None], np.eye(m), rng.dirichlet(np.ones(m), ECE_SEARCH_SAMPLES)])
        candidates /= candidates.sum(1, keepdims=True)
        eces = np.array([expected_calibration_error(np.tensordot(w, probs, axes=1), y.numpy(), n_bins)
                         for w in candidates])
        nlls = -np.log(np.maximum(candidates @ p_true, 1e-300)).mean(1)
        tied = np.flatnonzero(eces <= eces.min() + ECE_TIE)
        best = tied[np.argmin(nlls[tied])]
        weights, value, uniform_value = candidates[best], float(eces[best]), float(eces[0])

    if not math.isfinite(value) or value > uniform_value:
        weights, value = uniform, uniform_value
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights / weights.sum()
    return {"weights": weights, "ratio": format_ratio(weights), "objective": objective, "value": value,
            "uniform_value": uniform_value}


def choose_ensemble_weights(weights: str | Sequence[float] | None, member_logits: ArrayLike, labels: ArrayLike,
                            objective: str = "nll", n_bins: int = 15, seed: int = 0) -> dict:
    """The weights of an ensemble job (``ensemble.json``): ``--weights`` as given, or searched when ``"search"``.

    Args:
        weights: a ratio (``"5:1:5:1:1"``, order of the members), numbers, None (uniform) or ``"search"``.
        member_logits: the members' **validation** logits ``(M, N, K)`` (the search never sees the test split).
        labels: validation labels ``(N,)``.
        objective: what the search minimises (``nll`` or ``ece``).

    Returns:
        ``{"weights": (M,) summing to 1, "ratio": "5:1:5:1:1", "how": "given" | "uniform" | "searched",
        "objective": ..., "value": objective at these weights, "uniform_value": at uniform weights}`` (the
        last three describe the validation split).
    """
    z = torch.as_tensor(member_logits)
    if isinstance(weights, str) and weights.strip().lower() == "search":
        found = search_ensemble_weights(z, labels, objective, n_bins=n_bins, seed=seed)
        logger.info("ensemble weights searched on validation (%s): %s (%.4f; uniform %.4f)", objective,
                    found["ratio"], found["value"], found["uniform_value"])
        return {**found, "how": "searched"}
    w = parse_ratio(weights, int(z.shape[0]))
    return {"weights": w, "ratio": format_ratio(w), "how": "uniform" if weights is None else "given",
            "objective": None, "value": None, "uniform_value": None}
