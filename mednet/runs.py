"""Run directories: every bundle run writes into a fresh, timestamped folder and never over an earlier one.

Layout (shared by every bundle)::

    runs/<bundle>/<job>-<variant>-<YYYYmmdd-HHMMSS>/     e.g. runs/brain_tissue_fcn/train-skip-20261123-120501/
        model.pt, metrics.csv, convergence.png, tensorboard/, ...
        eval-<YYYYmmdd-HHMMSS>/                           evaluations of that run's model
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

from mednet.data.errors import DataError

__all__ = ["new_run_dir", "latest_run", "resolve_checkpoint", "write_run_settings", "check_run_settings", "SETTINGS_FILE"]

#: written into every training run: the settings evaluation and inference must repeat
SETTINGS_FILE = "settings.json"


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


def _jsonable(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_run_settings(run_dir: str | os.PathLike, settings: Mapping[str, object]) -> Path:
    """Write ``settings`` (e.g. variant, width, intensity normalisation, views) to ``run_dir/settings.json``."""
    path = Path(run_dir) / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: _jsonable(v) for k, v in settings.items()}, indent=2) + "\n")
    return path


def check_run_settings(checkpoint: str | os.PathLike, settings: Mapping[str, object]) -> None:
    """Refuse to use ``checkpoint`` with settings other than those it was trained with.

    Reads ``settings.json`` beside the checkpoint (written by training; a checkpoint without one — exported or
    from elsewhere — is not checked) and compares every key present in both. A network evaluated with another
    intensity normalisation or other views runs without error but segments badly, so this is an error.

    Raises:
        DataError: naming the checkpoint, each differing setting and the override that fixes it.
    """
    path = Path(checkpoint).parent / SETTINGS_FILE
    if not path.is_file():
        return
    try:
        trained = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read the run settings ({e})") from e
    differ = {k: (trained[k], _jsonable(v)) for k, v in settings.items() if k in trained and trained[k] != _jsonable(v)}
    if differ:
        said = ", ".join(f"{k}={a!r} (this run: {b!r})" for k, (a, b) in differ.items())
        fix = " ".join(f"--{k} {json.dumps(a) if not isinstance(a, str) else a}" for k, (a, _) in differ.items())
        raise DataError(checkpoint, f"trained with {said}; pass {fix} to use it (settings: {path})")
