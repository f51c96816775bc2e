"""Loss factories selected by name from bundle configs: tissue segmentation, class-imbalanced classification,
knowledge distillation."""

from mednet.losses import classification, distillation, segmentation  # noqa: F401
from mednet.losses.classification import LOSS_NAMES, classification_loss
from mednet.losses.segmentation import SEGMENTATION_LOSSES, tissue_loss

__all__ = ["LOSS_NAMES", "SEGMENTATION_LOSSES", "classification_loss", "tissue_loss"]
