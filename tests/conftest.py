"""Shared fixtures: a tiny MNI-derived demo cohort built once per test session."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# tests run on 2 CPU cores next to other work: keep torch from oversubscribing
os.environ.setdefault("OMP_NUM_THREADS", "2")
warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """5 subjects (3 training, 1 validation, 1 test) at zoom 0.5 (≈ 98×116×94 voxels): template grid,
    anisotropic and LPS 256×128×256-shaped subjects all present."""
    from mednet.data.brain_demo_cohort import build_demo_cohort

    out = tmp_path_factory.mktemp("cohort")
    build_demo_cohort(out=str(out), subjects=5, seed=1, zoom=0.5, overwrite=True)
    return out


def make_head(image, brain, voxel_mm: float, noisy_air: bool = True, seed: int = 0):
    """A synthetic scan that is *not* skull-stripped: ``image`` (a skull-stripped brain, numpy ``(X, Y, Z)``) with
    a dark CSF/dura rim, dark skull and bright scalp fat around ``brain`` and, with ``noisy_air``, Rician-like
    noise in the air outside the head (raw MRI); without it the air is 0 (a masked head)."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    dist = ndimage.distance_transform_edt(~brain) * voxel_mm  # mm from the brain
    median = float(np.median(image[brain]))
    head = image.copy()
    head[(dist > 0) & (dist <= 3)] = 0.3 * median  # CSF / dura
    head[(dist > 3) & (dist <= 9)] = 0.08 * median  # skull
    head[(dist > 9) & (dist <= 22)] = 1.3 * median  # scalp fat
    air = dist > 22
    head[air] = np.abs(rng.normal(0, 0.03 * median, int(air.sum()))) if noisy_air else 0.0
    return head.astype(np.float32)

