"""Post-hoc calibration and selective prediction of trained classifiers: temperature scaling fitted on validation
logits (:mod:`mednet.calibration.temperature`), weighted ensembles averaged in probability space with weights
given as a ratio or searched on the validation split (:mod:`mednet.calibration.ensemble`), and risk–coverage
analysis with a referral threshold for accepting confident cases and referring the rest
(:mod:`mednet.calibration.selective`); a run's fitted temperature and threshold in ``calibration.json``
(:mod:`mednet.calibration.run_calibration`)."""

from mednet.calibration.ensemble import (
    WEIGHT_OBJECTIVES,
    choose_ensemble_weights,
    ensemble_log_probabilities,
    format_ratio,
    parse_ratio,
    search_ensemble_weights,
)
from mednet.calibration.run_calibration import (
    CALIBRATION_FILE,
    fit_calibration,
    read_calibration,
    write_calibration,
)
from mednet.calibration.selective import (
    accuracy_lower_bound,
    aurc,
    aurc_from_curve,
    optimal_aurc,
    referral_threshold,
    risk_coverage_curve,
    selective_summary,
)
from mednet.calibration.temperature import check_temperature, fit_temperature, scaled_probabilities, temperature_nll

__all__ = [
    "CALIBRATION_FILE",
    "WEIGHT_OBJECTIVES",
    "choose_ensemble_weights",
    "fit_calibration",
    "read_calibration",
    "write_calibration",
    "accuracy_lower_bound",
    "aurc",
    "aurc_from_curve",
    "check_temperature",
    "ensemble_log_probabilities",
    "fit_temperature",
    "format_ratio",
    "optimal_aurc",
    "parse_ratio",
    "referral_threshold",
    "risk_coverage_curve",
    "scaled_probabilities",
    "search_ensemble_weights",
    "selective_summary",
    "temperature_nll",
]
