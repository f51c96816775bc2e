"""Per-class tissue segmentation metrics from one confusion matrix.

Everything is derived from the ``(4, 4)`` label confusion matrix ``cm[true, pred]`` (0 background, 1 CSF,
2 GM, 3 WM) summed over the pixels of a volume, a dataset or an epoch:

* Dice of tissue ``c``: ``2 cm[c, c] / (cm[c, :].sum() + cm[:, c].sum())`` — equal to MONAI's
  ``DiceMetric`` on one-hot maps (all pixels pooled) wherever the tissue is present in the truth; a tissue
  predicted but absent from the truth scores 0 (MONAI's default ``ignore_empty=True`` gives NaN, which would
  hide the false positives), and ``nan`` only when neither has it;
* accuracy of tissue ``c`` (the course exercise's per-class pixel accuracy): ``cm[c, c] / cm[c, :].sum()``,
  the fraction of true ``c`` pixels labelled ``c`` (sensitivity);
* pixel accuracy: correctly labelled tissue pixels / all true tissue pixels (background pixels excluded, so a
  large empty field of view does not inflate it).

:class:`TissueConfusionMatrix` is the generic :class:`mednet.metrics.confusion.ConfusionMatrix` at four labels,
accumulated from label maps directly; the derived scores below are Ignite ``MetricsLambda``s so they plug into
MONAI workflows like any metric.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric, MetricsLambda
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from mednet.data.tissue_labels import LABEL_NAMES, TISSUE_LABELS, TISSUE_NAMES
from mednet.metrics.confusion import ConfusionMatrix, confusion_matrix

__all__ = [
    "tissue_confusion_matrix",
    "scores_from_confusion",
    "TissueConfusionMatrix",
    "tissue_metrics",
    "label_output",
    "patch_accuracy_output",
    "LabelledPixelAccuracy",
    "CONVERGENCE_GROUPS",
]

#: panels of the brain training run's ``convergence.png`` (the course exercise's convergence plots)
CONVERGENCE_GROUPS: dict[str, list[str]] = {
    "training loss": ["train_loss"],
    "training pixel accuracy": ["train_accuracy"],
    "validation accuracy": ["val_pixel_accuracy", "val_acc_CSF", "val_acc_GM", "val_acc_WM"],
    "validation Dice": ["val_mean_dice", "val_dice_CSF", "val_dice_GM", "val_dice_WM"],
}

NUM_LABELS = len(LABEL_NAMES)


def tissue_confusion_matrix(pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``(4, 4)`` int64 confusion matrix ``cm[true, pred]`` of two label maps of the same shape (values 0–3)."""
    return confusion_matrix(pred, label, NUM_LABELS)


def scores_from_confusion(cm: torch.Tensor | np.ndarray) -> dict[str, float]:
    """``{"dice_CSF", "dice_GM", "dice_WM", "mean_dice", "acc_CSF", ..., "mean_acc", "pixel_accuracy"}``.

    A class absent from both truth and prediction has Dice ``nan`` (not 0 or 1), so it never silently
    counts as perfect; means ignore ``nan``.
    """
    cm = torch.as_tensor(cm, dtype=torch.float64)
    tp = cm.diag()
    true_n, pred_n = cm.sum(1), cm.sum(0)
    out: dict[str, float] = {}
    dice, acc = [], []
    for label, name in zip(TISSUE_LABELS, TISSUE_NAMES):
        denom = true_n[label] + pred_n[label]
        dice.append(float(2 * tp[label] / denom) if denom > 0 else float("nan"))
        acc.append(float(tp[label] / true_n[label]) if true_n[label] > 0 else float("nan"))
        out[f"dice_{name}"], out[f"acc_{name}"] = dice[-1], acc[-1]
    out["mean_dice"] = float(np.nanmean(dice)) if not all(np.isnan(dice)) else float("nan")
    out["mean_acc"] = float(np.nanmean(acc)) if not all(np.isnan(acc)) else float("nan")
    tissue = list(TISSUE_LABELS)
    out["pixel_accuracy"] = float(tp[tissue].sum() / true_n[tissue].sum()) if true_n[tissue].sum() > 0 else float("nan")
    return out


def label_output(output: dict | list) -> tuple[torch.Tensor, torch.Tensor]:
    """Engine output → ``(pred labels, true labels)``, both flattened per item and concatenated.

    Works with MONAI's decollated outputs (a list of dicts) and batched outputs (one dict); ``pred`` must
    already be a label map (see :class:`mednet.data.transforms.TissueLabelsd`).
    """
    items = output if isinstance(output, list) else [output]
    pred = torch.cat([torch.as_tensor(o["pred"]).reshape(-1) for o in items])
    true = torch.cat([torch.as_tensor(o["label"]).reshape(-1) for o in items])
    return pred, true


def patch_accuracy_output(output: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Trainer output (batched, not decollated) → ``(logits (N, 3), targets (N,))`` over the labelled pixels
    (target ≥ 0; background pixels inside patches, −1, are skipped) for Ignite ``Accuracy``."""
    pred, target = output["pred"], output["label"][:, 0].long()
    keep = target >= 0
    return pred.movedim(1, -1)[keep], target[keep]


class LabelledPixelAccuracy(Metric):
    """Ignite metric: pixel accuracy of a patch-training batch over its labelled pixels (target ≥ 0).

    ``output_transform`` returns ``(logits (B, C, H, W), targets (B, 1, H, W))`` (default: the trainer's
    ``pred`` and ``label``); pixels with a negative target (background inside a patch) are left out. Equal to
    Ignite's ``Accuracy`` on :func:`patch_accuracy_output` (the reference it is tested against), written because
    that pair costs a GPU→CPU synchronisation per iteration: boolean indexing must learn the number of kept
    pixels, and ``Accuracy`` moves its counts to its own device. Here correct/total counts stay on ``device``
    (pass the training device) and are read once per epoch (``compute``; summed over processes under DDP).
    """

    def __init__(self, output_transform: Callable = lambda out: (out["pred"], out["label"]),
                 device: str | torch.device = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._correct = torch.zeros((), dtype=torch.long, device=self._device)
        self._total = torch.zeros((), dtype=torch.long, device=self._device)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        logits, target = output[0].detach(), output[1].detach()
        target = target[:, 0] if target.ndim == logits.ndim else target
        keep = target >= 0
        # max(1).indices, not argmax(1): the same (first) index, ≈ 18× faster over the channel dim on CPU
        # (torch 2.14: 8.4 vs 0.46 ms for a batch of 256 patches, 10 % of a training epoch)
        self._correct += ((logits.max(1).indices == target) & keep).sum().to(self._device)
        self._total += keep.sum().to(self._device)

    @sync_all_reduce("_correct", "_total")
    def compute(self) -> float:
        if self._total.item() == 0:
            raise NotComputableError("LabelledPixelAccuracy needs at least one labelled pixel before compute()")
        return self._correct.item() / self._total.item()


class TissueConfusionMatrix(ConfusionMatrix):
    """Ignite metric: the ``(4, 4)`` label confusion matrix accumulated over an epoch.

    ``output_transform`` must return ``(pred labels, true labels)`` (default: :func:`label_output`).
    """

    def __init__(self, output_transform: Callable = label_output, device: str | torch.device = "cpu") -> None:
        super().__init__(NUM_LABELS, output_transform=output_transform, device=device)


def tissue_metrics(prefix: str = "val_", output_transform: Callable = label_output) -> dict[str, Metric]:
    """Scalar Ignite metrics sharing one :class:`TissueConfusionMatrix`.

    Returns ``{f"{prefix}mean_dice", f"{prefix}dice_CSF", …, f"{prefix}acc_WM", f"{prefix}mean_acc",
    f"{prefix}pixel_accuracy"}`` — ready for MONAI's ``key_val_metric`` / ``additional_metrics``.
    """
    cm = TissueConfusionMatrix(output_transform)
    keys = [f"dice_{n}" for n in TISSUE_NAMES] + ["mean_dice"] + [f"acc_{n}" for n in TISSUE_NAMES] + ["mean_acc", "pixel_accuracy"]
    return {f"{prefix}{k}": MetricsLambda(lambda m, k=k: scores_from_confusion(m)[k], cm) for k in keys}
