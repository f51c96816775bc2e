"""Segmentation losses by name: plain cross-entropy (the course exercise) or MONAI's Dice + CE."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss

__all__ = ["SEGMENTATION_LOSSES", "tissue_loss"]

SEGMENTATION_LOSSES = ("ce", "dice_ce")


def tissue_loss(name: str = "ce") -> torch.nn.Module:
    """Loss for ``(B, C, H, W)`` logits against ``(B, 1, H, W)`` class-index targets.

    ``"ce"`` is cross-entropy (MONAI's ``DiceCELoss`` with the Dice term weighted 0, so both losses take the
    same target layout); ``"dice_ce"`` is Dice + cross-entropy with equal weights.
    """
    if name not in SEGMENTATION_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {SEGMENTATION_LOSSES}")
    return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0 if name == "ce" else 1.0, lambda_ce=1.0)
