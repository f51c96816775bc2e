"""Metrics: tissue segmentation scores from a confusion matrix (Ignite-compatible); naive baselines."""

from mednet.metrics.baselines import gmm_tissue_segmentation
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
    "gmm_tissue_segmentation",
    "label_output",
    "patch_accuracy_output",
    "scores_from_confusion",
    "tissue_confusion_matrix",
    "tissue_metrics",
]
