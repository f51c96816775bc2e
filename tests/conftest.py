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
    from data_prep.demo_cohort import build_demo_cohort

    out = tmp_path_factory.mktemp("cohort")
    build_demo_cohort(out=str(out), subjects=5, seed=1, zoom=0.5, overwrite=True)
    return out
