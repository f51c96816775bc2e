"""Segmentation losses by name: cross-entropy (the course exercise) or MONAI's Dice + CE."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss

__all__ = ["SEGMENTATION_LOSSES", "IGNORE_INDEX", "TissueCrossEntropyLoss", "TissueDiceCELoss", "tissue_loss"]

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


class TissueDiceCELoss(torch.nn.Module):
    """Dice + cross-entropy (equal weights) of ``(B, C, H, W)`` logits against ``(B, 1, H, W)`` class indices,
    ignoring −1 targets in both terms.

    The sum of MONAI's ``DiceLoss(to_onehot_y=True, softmax=True, ignore_index=-1)`` and
    :class:`TissueCrossEntropyLoss`, i.e. what ``monai.losses.DiceCELoss`` computes, but over labelled pixels only.
    ``DiceCELoss`` itself (MONAI 1.6.1) has no ``ignore_index``: its one-hot Dice term cannot skip the −1 pixels
    that training patches carry wherever ``max_background`` > 0 lets background in, and its CE term would count
    them. ``DiceLoss(ignore_index=-1)`` multiplies softmax and one-hot target by the validity mask, so an ignored
    pixel adds nothing to either Dice sum and gets no gradient. The Dice term is per sample and per class
    (MONAI's defaults, ``smooth_nr = smooth_dr = 1e-5``): a class absent from a sample's labelled pixels costs
    ≈ 1 unless the network predicts it nowhere there, and a sample with no labelled pixel costs 0.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> None:
        super().__init__()
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, ignore_index=IGNORE_INDEX)
        self.cross_entropy = TissueCrossEntropyLoss()

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        return self.lambda_dice * self.dice(input, target) + self.lambda_ce * self.cross_entropy(input, target)


def tissue_loss(name: str = "ce") -> torch.nn.Module:
    """Loss for ``(B, C, H, W)`` logits against ``(B, 1, H, W)`` class-index targets; pixels with target −1
    (background let into training patches by ``max_background``) are ignored by both losses.

    ``"ce"``: :class:`TissueCrossEntropyLoss`; ``"dice_ce"``: :class:`TissueDiceCELoss` (MONAI's Dice +
    cross-entropy, equal weights, over labelled pixels).
    """
    if name not in SEGMENTATION_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {SEGMENTATION_LOSSES}")
    if name == "ce":
        return TissueCrossEntropyLoss()
    return TissueDiceCELoss()
