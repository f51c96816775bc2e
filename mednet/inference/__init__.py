"""Inference helpers: slice-wise whole-volume inference restricted to the brain, along one or several planes."""

from mednet.inference.slice_inferer import BatchedSliceInferer, foreground_box
from mednet.inference.view_aggregation import ViewAggregationInferer

__all__ = ["BatchedSliceInferer", "ViewAggregationInferer", "foreground_box"]
