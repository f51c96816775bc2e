"""Ignite engines' pieces: checkpoints, optimisers/schedules, shared handlers (progress, per-epoch metrics), task reports."""

from mednet.engines import (  # noqa: F401  (bundle configs use mednet.engines.X.Y)
    checkpoints,
    classification_report,
    distillation,
    handlers,
    optimization,
    segmentation_report,
)
