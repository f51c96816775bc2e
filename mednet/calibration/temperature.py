"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", Sec. 4.2).

One scalar ``T > 0`` divides every logit before the softmax: ``q_i = softmax(z_i / T)``. ``T`` is fitted on the
validation split by minimising the mean negative log-likelihood ``−1/N Σ_i log q_{i, y_i}``; ``T > 1`` softens an
over-confident network, ``T < 1`` sharpens an under-confident one. Dividing by a positive scalar never changes the
argmax, so accuracy (and every score of the top-1 prediction) is untouched; only the confidences move.

The fit is always on **logits**, never on probabilities: ``softmax(p / T)`` of softmax outputs ``p`` is a
different (and much weaker) family — all its inputs lie in ``[0, 1]``, so it cannot reproduce ``softmax(z / T)``
and typically *raises* the ECE (the known mistake of gpleiss/temperature_scaling#29, demonstrated in the tests).

Ensembles: pass the averaged log-probabilities ``log Σ_m w_m softmax(z_m)``
(:func:`mednet.calibration.ensemble.ensemble_log_probabilities`) as the "logits"; ``softmax(log p̄ / T)`` is then
the tempered ensemble (``T = 1`` returns the ensemble's own average), and nothing else changes.
"""

from __future__ import annotations

import logging

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mednet.errors import OptionError

logger = logging.getLogger("mednet")

__all__ = ["fit_temperature", "temperature_nll", "scaled_probabilities", "check_temperature"]

ArrayLike = np.ndarray | torch.Tensor | Sequence


def check_temperature(t: object, option: str = "--temperature") -> float:
    """``t`` as a float, or :class:`OptionError` ``{option: "must be a finite number > 0, got …"}``.

    Rejects ``t ≤ 0``, NaN, ±inf and anything that is not a real number (strings, ``None``, booleans).
    """
    value: float | None = None
    if isinstance(t, torch.Tensor) and t.numel() == 1 and not t.dtype.is_complex and t.dtype != torch.bool:
        value = float(t)
    elif isinstance(t, (numbers.Real, np.integer, np.floating)) and not isinstance(t, (bool, np.bool_)):
        value = float(t)
    if value is None or not math.isfinite(value) or value <= 0:
        raise OptionError({option: f"must be a finite number > 0, got {t!r}"})
    return value


def _logits(logits: ArrayLike) -> torch.Tensor:
    """``logits`` as a float64 CPU tensor ``(N, K)``, checked: non-empty, 2-D, finite."""
    z = logits.detach().cpu() if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))
    z = z.as_subclass(torch.Tensor).to(torch.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must have shape (N, K), got {tuple(z.shape)}")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"no logits to calibrate: shape {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise ValueError("logits must be finite (found NaN or ±inf)")
    return z


def _inputs(logits: ArrayLike, labels: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, K) float64, labels (N,) int64)``, checked: label count = N, classes in ``[0, K)``."""
    z = _logits(logits)
    y = labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    y = y.as_subclass(torch.Tensor).reshape(-1)
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"{y.shape[0]} labels for {z.shape[0]} rows of logits")
    if y.is_floating_point():
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise ValueError("labels must be integer classes")
    y = y.to(torch.int64)
    k = z.shape[1]
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"labels must be classes 0..{k - 1}, got range [{int(y.min())}, {int(y.max())}]")
    return z, y


def temperature_nll(logits: ArrayLike, labels: ArrayLike, temperature: float = 1.0) -> float:
    """Mean NLL of ``softmax(logits / T)``: ``logits`` ``(N, K)``, ``labels`` ``(N,)``.

    Computed with ``log_softmax`` in float64 (no clamping: exact even for confident, wrong predictions).
    """
    t = check_temperature(temperature)
    z, y = _inputs(logits, labels)
    return float(F.cross_entropy(z / t, y))


def fit_temperature(logits: ArrayLike, labels: ArrayLike, max_iter: int = 100, max_temperature: float = 100.0) -> float:
    """The temperature ``T > 0`` minimising the mean NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    Args:
        logits: ``(N, K)`` validation logits — logits, **not** probabilities (fitting ``softmax(p / T)`` on
            softmax outputs is the gpleiss/temperature_scaling#29 mistake and raises the ECE). For an ensemble,
            its averaged log-probabilities.
        labels: ``(N,)`` integer classes in ``[0, K)``.
        max_iter: L-BFGS iterations.

    ``torch.optim.LBFGS`` (strong-Wolfe line search) in float64 on ``log T``, starting at ``T = 1``: the log keeps
    ``T`` positive without a constraint, and the NLL is smooth in it. If the result is not finite or its NLL is
    higher than at ``T = 1`` (it should not be), returns ``1.0`` — fitting never makes the validation NLL worse.
    ``T`` is kept within ``[1/max_temperature, max_temperature]`` (default 100): a model no better than chance on
    the validation split has its optimum at ``T → ∞`` (uniform output); the NLL is convex in ``1/T``, so the
    bound still lowers it, and a warning says the model is not informative.

    Raises:
        ValueError: empty input, logits not 2-D or not finite, label count ≠ N, labels outside ``[0, K)``.
    """
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    z, y = _inputs(logits, labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=int(max_iter), line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0:
        return 1.0
    if not 1.0 / max_temperature <= t <= max_temperature:
        logger.warning("temperature %.3g is out of [%.3g, %.3g] (on the validation split the model is %s); "
                       "using the bound", t, 1.0 / max_temperature, max_temperature,
                       "far over-confident: its logits are very large for how often it is right, or it is no "
                       "better than chance" if t > 1 else "almost always right and under-confident")
        t = min(max(t, 1.0 / max_temperature), max_temperature)
    with torch.no_grad():
        if float(F.cross_entropy(z / t, y)) > float(F.cross_entropy(z, y)):
            return 1.0
    return t


def scaled_probabilities(logits: ArrayLike, temperature: float) -> np.ndarray:
    """``softmax(logits / T)``: ``(N, K)`` float64 probabilities of ``logits`` ``(N, K)``.

    Raises:
        OptionError: ``--temperature`` not a finite number > 0 (:func:`check_temperature`).
        ValueError: logits empty, not 2-D or not finite.
    """
    t = check_temperature(temperature)
    return torch.softmax(_logits(logits) / t, dim=1).numpy()
