"""Network definitions selected by name from bundle configs: tissue FCNs (brain), image classifiers (dermoscopy)."""

from mednet.networks import classifiers, ensemble, fcn, trained  # noqa: F401
from mednet.networks.classifiers import CLASSIFIER_NAMES, build_classifier
from mednet.networks.fcn import FCN_VARIANTS, TissueFCN, count_parameters

__all__ = ["CLASSIFIER_NAMES", "FCN_VARIANTS", "TissueFCN", "build_classifier", "count_parameters"]
