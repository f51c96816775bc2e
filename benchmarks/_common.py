"""Helpers shared by the benchmarks: a demo cohort on demand, the brain bundle's config parsed from Python."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ensure_cohort(path: str, subjects: int = 6, zoom: float = 1.0, seed: int = 0) -> Path:
    """``path`` if it holds a datalist, else build a demo cohort there.

    A demo cohort (one with ``cohort.csv``) made by another generator than this mednet's is refused: its subjects
    are not what ``seed`` gives now. A folder without a datalist is built into only when it is empty or holds
    nothing but a cohort build that stopped before its datalist (``images/``, ``labels/``, ``cohort.csv``);
    anything else there is refused by :func:`build_demo_cohort`, never deleted.
    """
    from mednet.data.brain_demo_cohort import GENERATOR, build_demo_cohort
    from mednet.io import TEMP_MARKER

    p = Path(path)
    record = p / "cohort.csv"
    if (p / "datalist.json").is_file():
        if record.is_file():
            with open(record, encoding="utf-8", newline="") as f:
                made_by = next(csv.DictReader(f), {}).get("generator")
            if made_by != GENERATOR:
                raise SystemExit(f"mednet error: {record}: this demo cohort was made by "
                                 f"{made_by or 'an earlier mednet'}, not by {GENERATOR}; delete {p} or choose another folder")
        return p
    half_built = p.is_dir() and all(
        (f.name == "cohort.csv" and f.is_file())
        or (f.name in ("images", "labels") and f.is_dir() and all(g.name.startswith("sub-") or TEMP_MARKER in g.name for g in f.iterdir()))
        for f in p.iterdir())
    build_demo_cohort(out=str(p), subjects=subjects, zoom=zoom, seed=seed, overwrite=half_built)
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
    not clipped (the product clips to the brain's 0.5–99.5th percentiles; a baseline on raw intensities does not),
    without bias-field correction (the loader's default is N4) or, with ``n4``, after the product's N4.

    Raises ``RuntimeError`` for ``n4`` when this mednet's loader has no ``bias_correction`` option.
    """
    import inspect

    from mednet.data.transforms import LoadLabelledVolumed

    params = inspect.signature(LoadLabelledVolumed).parameters
    raw = {"clip_percentiles": None} if "clip_percentiles" in params else {}
    if "bias_correction" not in params:
        if n4:
            raise RuntimeError("LoadLabelledVolumed has no bias_correction option in this mednet")
        return LoadLabelledVolumed(intensity_normalization="scale", **raw)
    return LoadLabelledVolumed(intensity_normalization="scale", bias_correction="n4" if n4 else "none", **raw)


def add_device_argument(parser) -> None:
    """``--device auto|cpu|cuda`` (``auto``: the bundles' own rule, CUDA when present)."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run (auto: CUDA when present, as the bundles do); AMP on CUDA, as the bundles")


def resolve_device(name: str):
    """The ``torch.device`` for ``--device`` (``auto`` → CUDA when available, else CPU)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def device_overrides(device) -> dict:
    """Bundle overrides that pin ``device`` and the AMP rule of ``bundles/common/runtime.json`` (AMP on CUDA)."""
    return {"device": f"$torch.device('{device.type}')", "amp": device.type == "cuda"}


def synchronize(device) -> None:
    """Wait for queued GPU work, so that a wall-clock timer measures it (no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
