"""Loss factories selected by name from bundle configs."""

from mednet.losses.segmentation import SEGMENTATION_LOSSES, tissue_loss

__all__ = ["SEGMENTATION_LOSSES", "tissue_loss"]
