"""The confusion matrix of any number of classes, and an Ignite metric accumulating it.

One matrix ``cm[true, pred]`` serves every task: per-tissue Dice and accuracy for brain segmentation
(:mod:`mednet.metrics.segmentation`, over all pixels pooled) and per-class precision / recall / F1 /
balanced accuracy for lesion classification (:mod:`mednet.metrics.classification`, over images). Ignite's own
``ConfusionMatrix`` needs one-hot or probability outputs of shape ``(B, K, ...)``; for whole 3D volumes that is
~K× the memory of the label maps counted here with one ``bincount``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

__all__ = ["confusion_matrix", "ConfusionMatrix"]


def confusion_matrix(pred: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor:
    """``(K, K)`` int64 confusion matrix ``cm[true, pred]`` of two label arrays of the same size (values 0..K−1).

    Args:
        pred: predicted labels, any shape (floats are rounded: label maps resampled by MONAI come back as floats).
        true: true labels, same number of elements.
        num_classes: ``K``.

    Raises:
        ValueError: sizes differ, or a value is outside ``0..K−1``.
    """
    pred_t, true_t = (torch.as_tensor(x).reshape(-1) for x in (pred, true))
    pred_t, true_t = (t.round().long() if t.is_floating_point() else t.long() for t in (pred_t, true_t))
    true_t = true_t.to(pred_t.device)
    if pred_t.shape != true_t.shape:
        raise ValueError(f"prediction ({pred_t.numel()} values) and label ({true_t.numel()} values) differ in size")
    for name, t in (("prediction", pred_t), ("label", true_t)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{name} values must be labels 0..{num_classes - 1}, got range [{int(t.min())}, {int(t.max())}]")
    return torch.bincount(true_t * num_classes + pred_t, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


class ConfusionMatrix(Metric):
    """Ignite metric: the ``(K, K)`` confusion matrix accumulated over an epoch (summed across processes).

    Args:
        num_classes: ``K``.
        output_transform: engine output → ``(pred labels, true labels)``.
    """

    def __init__(self, num_classes: int, output_transform: Callable, device: str | torch.device = "cpu") -> None:
        self.num_classes = int(num_classes)
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=self._device)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        pred, true = output
        self._cm += confusion_matrix(pred, true, self.num_classes).to(self._device)

    @sync_all_reduce("_cm")
    def compute(self) -> torch.Tensor:
        return self._cm.clone()
