"""Network definitions selected by name from bundle configs."""

from mednet.networks.fcn import FCN_VARIANTS, TissueFCN, count_parameters

__all__ = ["FCN_VARIANTS", "TissueFCN", "count_parameters"]
