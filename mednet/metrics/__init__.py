"""Metrics: tissue segmentation scores from a confusion matrix (Ignite-compatible)."""

from mednet.metrics.segmentation import (
    TissueConfusionMatrix,
    label_output,
    patch_accuracy_output,
    scores_from_confusion,
    tissue_confusion_matrix,
    tissue_metrics,
)

__all__ = [
    "TissueConfusionMatrix",
    "label_output",
    "patch_accuracy_output",
    "scores_from_confusion",
    "tissue_confusion_matrix",
    "tissue_metrics",
]
