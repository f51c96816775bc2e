"""Helpers shared by the benchmarks: a demo cohort on demand, the brain bundle's config parsed from Python."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ensure_cohort(path: str, subjects: int = 6, zoom: float = 1.0, seed: int = 0) -> Path:
    """``path`` if it holds a datalist, else build a demo cohort there."""
    from mednet.data.brain_demo_cohort import build_demo_cohort

    p = Path(path)
    if not (p / "datalist.json").is_file():
        build_demo_cohort(out=str(p), subjects=subjects, zoom=zoom, seed=seed)
    return p


def brain_parser(config: str = "train", **overrides):
    """The brain bundle's ``config`` as a MONAI ``ConfigParser`` (run from the repository root)."""
    import os

    from monai.bundle import ConfigParser

    os.chdir(REPO)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "brain_tissue_fcn" / "configs" / f"{config}.json"))
    parser.update(overrides)
    return parser


def baseline_loader(n4: bool = False):
    """``LoadLabelledVolumed`` for the intensity baselines: the scan's own intensities ÷ brain mean (``scale``),
    without bias-field correction (the loader's default is N4) or, with ``n4``, after the product's N4.

    Raises ``RuntimeError`` for ``n4`` when this mednet's loader has no ``bias_correction`` option.
    """
    import inspect

    from mednet.data.transforms import LoadLabelledVolumed

    if "bias_correction" not in inspect.signature(LoadLabelledVolumed).parameters:
        if n4:
            raise RuntimeError("LoadLabelledVolumed has no bias_correction option in this mednet")
        return LoadLabelledVolumed(intensity_normalization="scale")
    return LoadLabelledVolumed(intensity_normalization="scale", bias_correction="n4" if n4 else "none")

