"""Loading trained weights with a clear message when the checkpoint is missing or does not fit the network."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mednet.data.errors import DataError
from mednet.runs import check_run_settings

__all__ = ["load_weights"]


def _state_dict(obj: object, path: Path) -> dict:
    if isinstance(obj, dict) and "network" in obj and isinstance(obj["network"], dict):
        obj = obj["network"]  # MONAI CheckpointSaver with several objects
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(path, "not a network checkpoint (expected a state_dict of tensors)")
    return obj


def load_weights(network: torch.nn.Module, ckpt_path: str | os.PathLike, map_location: str | torch.device = "cpu",
                 hint: str = "", settings: dict | None = None) -> torch.nn.Module:
    """Load a state dict saved by training into ``network`` (``torch.load(weights_only=True)``).

    ``settings`` (e.g. ``{"variant": ..., "views": ...}``) are checked against the training run's
    ``settings.json`` first (:func:`mednet.runs.check_run_settings`).

    Raises:
        DataError: the file is missing, unreadable, not a state dict, or its tensors do not match the network
            (e.g. trained with another variant/width) — the message names the file and the mismatch, plus ``hint``.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    if settings:
        check_run_settings(path, settings)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise DataError(path, f"cannot read checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    sd = _state_dict(obj, path)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(sd) & set(expected) if sd[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]}: {tuple(sd[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)})")
        raise DataError(path, f"checkpoint does not match the network {type(network).__name__}: " + "; ".join(parts)
                        + (f". {hint}" if hint else ""))
    network.load_state_dict(sd)
    return network
