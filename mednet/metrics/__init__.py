"""Metrics: the confusion matrix of any number of classes; tissue segmentation scores from it (Ignite-compatible); naive baselines."""

from mednet.metrics import classification, confusion, segmentation  # noqa: F401
from mednet.metrics.baselines import gmm_tissue_segmentation
from mednet.metrics.confusion import ConfusionMatrix, confusion_matrix
from mednet.metrics.segmentation import (
    LabelledPixelAccuracy,
    TissueConfusionMatrix,
    label_output,
    patch_accuracy_output,
    scores_from_confusion,
    tissue_confusion_matrix,
    tissue_metrics,
)

__all__ = [
    "ConfusionMatrix",
    "confusion_matrix",
    "LabelledPixelAccuracy",
    "TissueConfusionMatrix",
    "gmm_tissue_segmentation",
    "label_output",
    "patch_accuracy_output",
    "scores_from_confusion",
    "tissue_confusion_matrix",
    "tissue_metrics",
]
