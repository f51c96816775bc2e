"""A weighted ensemble of trained classifiers as one network: ``(B, 3, S, S)`` images → ``(B, K)`` "logits".

The output is ``log Σ_m w_m softmax(z_m)`` (:func:`mednet.calibration.ensemble.ensemble_log_probabilities`):
log-probabilities whose softmax is the weighted mean of the members' softmax outputs, so reports, metrics and
temperature scaling — which all apply a softmax to a network's output — use an ensemble exactly like a single
model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mednet.calibration.ensemble import ensemble_log_probabilities, parse_ratio

__all__ = ["EnsembleClassifier"]


class EnsembleClassifier(nn.Module):
    """Weighted probability-space ensemble of ``M`` classifiers with the same classes and input.

    Args:
        members: ``M`` networks, each ``(B, 3, S, S) → (B, K)`` logits.
        weights: ``(M,)`` ratios (any non-negative numbers, not all zero; normalised to sum 1), a ratio string
            such as ``"5:1"`` (:func:`mednet.calibration.ensemble.parse_ratio`), or ``None`` for uniform weights.
            Kept as the buffer ``weights`` (saved in the state dict, moved with ``.to()``).

    The members are always in eval mode: an ensemble of trained models is never trained, and ``.train()`` (as
    called by training/evaluation engines) must not let BatchNorm running statistics move or dropout switch on.
    :meth:`train` therefore only changes the ensemble's own ``training`` flag.

    Raises:
        OptionError: ``--weights`` of the wrong length, negative, not finite, all zero, or no members.
    """

    weights: torch.Tensor

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | np.ndarray | str | None = None) -> None:
        super().__init__()
        members = list(members)
        w = parse_ratio(weights, len(members))
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.as_tensor(w, dtype=torch.get_default_dtype()))
        self.train(False)

    def train(self, mode: bool = True) -> EnsembleClassifier:
        """Set the ensemble's ``training`` flag to ``mode``; the members stay in eval mode whatever ``mode``."""
        super().train(mode)
        for member in self.members:
            member.train(False)
        return self

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, B, K)``: every member's logits for images ``x`` ``(B, 3, S, S)``."""
        return torch.stack([member(x) for member in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` ``log Σ_m w_m softmax(z_m(x))`` for images ``x`` ``(B, 3, S, S)``."""
        return ensemble_log_probabilities(self.member_logits(x), self.weights)
