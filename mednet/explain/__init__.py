"""Explanations of the classification bundle's networks: attribution maps (Grad-CAM, Grad-CAM++, Integrated
Gradients, GradientSHAP; :mod:`mednet.explain.attribution`) and their sanity checks (model randomisation,
deletion/insertion; :mod:`mednet.explain.sanity`)."""

from mednet.explain.attribution import (
    CAM_METHODS,
    EXPLAIN_METHODS,
    IG_BASELINES,
    METHOD_TITLES,
    attribution_maps,
    attribution_maps_timed,
    black_baseline,
    blur_sigma,
    blurred_baseline,
    check_layer,
    check_methods,
    default_target_layer,
    earlier_target_layer,
    feature_map_size,
    grad_cam_map,
    map_resolution,
)

__all__ = [
    "CAM_METHODS", "EXPLAIN_METHODS", "IG_BASELINES", "METHOD_TITLES", "attribution_maps", "attribution_maps_timed",
    "black_baseline", "blur_sigma", "blurred_baseline", "check_layer", "check_methods", "default_target_layer",
    "earlier_target_layer", "feature_map_size", "grad_cam_map", "map_resolution",
]
