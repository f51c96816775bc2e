"""Run directories: every bundle run writes into a fresh, timestamped folder and never over an earlier one.

Layout (shared by every bundle)::

    runs/<bundle>/<job>-<variant>-<YYYYmmdd-HHMMSS>/     e.g. runs/brain_tissue_fcn/train-skip-20261123-120501/
        model.pt, metrics.csv, convergence.png, tensorboard/, ...
        eval-<YYYYmmdd-HHMMSS>/                           evaluations of that run's model
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mednet.data.errors import DataError

__all__ = ["new_run_dir", "latest_run", "resolve_checkpoint"]


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    """Create and return ``root/name-<timestamp>`` (``-2``, ``-3``… appended if that exists already)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        path = root / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise DataError(root, f"could not create a new run directory for {name}")


def latest_run(root: str | os.PathLike, prefix: str, required_file: str = "model.pt") -> Path:
    """The most recently modified ``root/<prefix>*`` directory holding ``required_file``."""
    root = Path(root)
    runs = [p for p in root.glob(f"{prefix}*") if (p / required_file).is_file()] if root.is_dir() else []
    if not runs:
        raise DataError(root, f"no run '{prefix}*' with a {required_file} found; train first or pass --ckpt_path")
    return max(runs, key=lambda p: (p / required_file).stat().st_mtime)


def resolve_checkpoint(ckpt_path: str | os.PathLike | None, runs_root: str | os.PathLike, prefix: str) -> Path:
    """``ckpt_path`` if given (must exist), else ``model.pt`` of the latest ``prefix`` run under ``runs_root``."""
    if ckpt_path:
        path = Path(ckpt_path)
        if path.is_dir():
            path = path / "model.pt"
        if not path.is_file():
            raise DataError(path, "checkpoint not found")
        return path
    return latest_run(runs_root, prefix) / "model.pt"
