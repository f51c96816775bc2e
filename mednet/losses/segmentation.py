"""Segmentation losses by name: cross-entropy (the course exercise) or MONAI's Dice + CE."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss

__all__ = ["SEGMENTATION_LOSSES", "IGNORE_INDEX", "TissueCrossEntropyLoss", "tissue_loss"]

SEGMENTATION_LOSSES = ("ce", "dice_ce")
#: target value of pixels that carry no tissue label (background inside a training patch)
IGNORE_INDEX = -1


class TissueCrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """Cross-entropy of ``(B, C, H, W)`` logits against ``(B, 1, H, W)`` class indices, ignoring −1 targets.

    ``torch.nn.CrossEntropyLoss`` with MONAI's channel-first target layout; averaged over labelled pixels.
    """

    def __init__(self) -> None:
        super().__init__(ignore_index=IGNORE_INDEX)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(input, target[:, 0].long())


class _DiceCEWithoutIgnore(DiceCELoss):
    """MONAI's Dice + CE; refuses ignored (−1) pixels, which its one-hot Dice term cannot skip."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if bool((target < 0).any()):
            raise ValueError("loss 'dice_ce' cannot ignore background pixels in patches: use --loss ce or --max_background 0")
        return super().forward(input, target)


def tissue_loss(name: str = "ce") -> torch.nn.Module:
    """Loss for ``(B, C, H, W)`` logits against ``(B, 1, H, W)`` class-index targets.

    ``"ce"``: :class:`TissueCrossEntropyLoss` (pixels with target −1 ignored); ``"dice_ce"``: MONAI's
    ``DiceCELoss`` (Dice + cross-entropy, equal weights), for patches without background.
    """
    if name not in SEGMENTATION_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {SEGMENTATION_LOSSES}")
    if name == "ce":
        return TissueCrossEntropyLoss()
    return _DiceCEWithoutIgnore(to_onehot_y=True, softmax=True, lambda_dice=1.0, lambda_ce=1.0)
