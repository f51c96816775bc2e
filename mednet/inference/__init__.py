"""Inference helpers: slice-wise whole-volume inference restricted to the brain."""

from mednet.inference.slice_inferer import BrainSliceInferer, foreground_box

__all__ = ["BrainSliceInferer", "foreground_box"]
