"""Run directories: every bundle run writes into a fresh, timestamped folder and never over an earlier one.

Layout (shared by every bundle)::

    runs/<bundle>/<job>-<variant>-<YYYYmmdd-HHMMSS>/     e.g. runs/brain_tissue_fcn/train-skip-20261123-120501/
        settings.json                                     what evaluation/inference must repeat (variant, views, …)
        model.pt, model_final.pt, metrics.csv, ...        replaced atomically during the run (mednet.io)
        finished.json                                     written last, when training completed
        eval-<split>-<YYYYmmdd-HHMMSS>/                   evaluations of that run's model (+ provenance.json)

Which model a job uses is explicit: the default checkpoint (:func:`resolve_checkpoint` without a path) is the
newest **finished** run whose ``settings.json`` agrees with the job's settings, and evaluation and inference
record the checkpoint, its sha256 and both runs' settings (:func:`checkpoint_provenance`) in
``provenance.json`` / per-output sidecars (:func:`write_sidecar`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from mednet.errors import DataError
from mednet.io import nan_to_none, write_json_atomic

__all__ = [
    "run_setting",
    "new_run_dir", "training_run_dir", "latest_run", "resolve_checkpoint", "write_run_settings", "write_run_record", "check_run_settings",
    "settings_differences", "mark_finished", "read_finished", "checkpoint_provenance", "write_provenance",
    "sidecar_path", "write_sidecar", "file_sha256", "SETTINGS_FILE", "FINISHED_FILE", "PROVENANCE_FILE", "RESUME_FILE",
]

logger = logging.getLogger(__name__)

#: written into every training run: the settings evaluation and inference must repeat
SETTINGS_FILE = "settings.json"
#: written into a training run when training completed (end time, epochs, best metric)
FINISHED_FILE = "finished.json"
#: the state of a training run's last completed epoch; its presence means the run has trained and can be resumed
RESUME_FILE = "checkpoint_last.pt"
#: written into every evaluation folder: which checkpoint, with which settings
PROVENANCE_FILE = "provenance.json"

_MAX_LISTED = 8  # runs named in the "no run qualifies" message


def now_iso() -> str:
    """Local time with its UTC offset, to the second (``2026-11-23T12:05:01+01:00``)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


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


def training_run_dir(run_dir: str | os.PathLike | None, runs_root: str | os.PathLike, name: str) -> Path:
    """The folder a training run writes to: a new ``runs_root/name-<timestamp>`` (:func:`new_run_dir`), or
    ``run_dir`` when given (``--run_dir``).

    A given ``run_dir`` is created if missing; if it holds an interrupted run (``checkpoint_last.pt`` without
    ``finished.json``) training **continues** from its last completed epoch
    (:class:`mednet.engines.checkpoints.AtomicCheckpointSaver`); a finished run is never trained over.

    Raises:
        DataError: ``run_dir`` holds a finished run, or is a file.
    """
    if run_dir in (None, ""):
        return new_run_dir(runs_root, name)
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise DataError(path, "--run_dir is a file, not a folder")
    if (path / FINISHED_FILE).is_file():
        raise DataError(path, f"holds a finished training run ({FINISHED_FILE}); it is never trained over — "
                              "choose another --run_dir, or leave it out for a new timestamped run")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _read_json(path: Path) -> dict | None:
    """``path``'s JSON object, or None if the file is missing; DataError if it is unreadable."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read ({e})") from e
    if not isinstance(obj, dict):
        raise DataError(path, "not a JSON object")
    return obj


def settings_differences(trained: Mapping[str, object], requested: Mapping[str, object]) -> dict[str, tuple]:
    """``{key: (trained value, requested value)}`` for every key present in both that differs.

    Keys present in only one of them are not compared: a setting added after a run was trained (e.g. a new
    preprocessing option) does not make older runs unusable, and a run may record more than a job checks.
    """
    return {k: (trained[k], _jsonable(v)) for k, v in requested.items() if k in trained and trained[k] != _jsonable(v)}


#: settings that name a folder: compared by the folder they resolve to, not as text
_PATH_SETTINGS = ("dataset_dir",)


def _same_folder(recorded: object, requested: object) -> bool:
    """Whether a recorded folder (absolute, or relative as typed then: tried against the current folder and the
    checkout) and a requested one are the same folder."""
    if not isinstance(recorded, str) or not isinstance(requested, str):
        return False
    target = os.path.realpath(requested)
    candidates = [Path(recorded)]
    if not candidates[0].is_absolute():
        with contextlib.suppress(FileNotFoundError):
            from mednet.app.bundles import repo_root

            candidates.append(repo_root() / recorded)
    return any(os.path.realpath(c) == target for c in candidates)


def _cli_value(value: object) -> str:
    """``value`` as the command line takes it: text as is, True/False/None as Python spells them (python-fire reads
    ``true`` as text, which the option check refuses), lists as JSON."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return repr(value)
    return json.dumps(value)


#: settings no option sets, each with the option that decides it: (option, value for a trained True/False)
_DERIVED_SETTINGS = {"cosine_head": ("loss", {True: "ldam", False: "ce"})}


def _overrides(differ: Mapping[str, tuple]) -> str:
    """``--views [0, 1, 2] --variant skip``: the command-line overrides giving the trained values (a derived setting
    such as ``cosine_head`` through the option that sets it: ``--loss ldam``)."""
    options: dict[str, str] = {}
    for key, (trained, _) in differ.items():
        if key in _DERIVED_SETTINGS and isinstance(trained, bool):
            option, values = _DERIVED_SETTINGS[key]
            options.setdefault(option, values[trained])
        else:
            options[key] = _cli_value(trained)
    return " ".join(f"--{k} {v}" for k, v in options.items())


def mark_finished(run_dir: str | os.PathLike, **info: object) -> Path:
    """Write ``run_dir/finished.json`` (``finished`` = now, plus ``info``: epochs, best metric, …), atomically.

    Written as the last step of a completed training run: a run without it is still running, crashed or was
    stopped, and :func:`latest_run` does not pick it.
    """
    clean = {k: None if isinstance(v, float) and math.isnan(v) else _jsonable(v) for k, v in info.items()}
    return write_json_atomic({"finished": now_iso(), **clean}, Path(run_dir) / FINISHED_FILE)


def read_finished(run_dir: str | os.PathLike) -> dict | None:
    """``run_dir/finished.json`` as a dict, or None when the run did not finish."""
    return _read_json(Path(run_dir) / FINISHED_FILE)


def latest_run(root: str | os.PathLike, prefix: str, required_file: str = "model.pt",
               settings: Mapping[str, object] | None = None) -> Path:
    """The most recently finished ``root/<prefix>*`` run holding ``required_file`` and compatible with ``settings``.

    A run qualifies when it has ``required_file``, a ``finished.json`` (:func:`mark_finished`), and a
    ``settings.json`` that agrees with ``settings`` on every key present in both (:func:`settings_differences`;
    a run without ``settings.json`` is not checked). "Most recent" is by the time ``finished.json`` was written.

    Raises:
        DataError: no run qualifies — the message lists the runs found (newest first) with the reason each was
            skipped (no model, unfinished, other settings), and the fix: ``--ckpt_path``, or the overrides that
            match a finished run.
    """
    root = Path(root)
    runs = [p for p in root.glob(f"{prefix}*") if p.is_dir()] if root.is_dir() else []
    if not runs:
        raise DataError(root, f"no run '{prefix}*' found; train first or pass --ckpt_path")
    finished: list[tuple[float, Path]] = []
    skipped: list[tuple[Path, str]] = []
    fix = ""
    for run in sorted(runs, key=lambda p: p.name, reverse=True):
        marker = run / FINISHED_FILE
        if not (run / required_file).is_file():
            skipped.append((run, f"no {required_file}"))
            continue
        if not marker.is_file():
            skipped.append((run, f"unfinished (no {FINISHED_FILE}: still training, crashed or stopped)"))
            continue
        try:
            trained = _read_json(run / SETTINGS_FILE)
        except DataError as e:
            skipped.append((run, f"unreadable {SETTINGS_FILE} ({e.problem})"))
            continue
        differ = settings_differences(trained, settings) if (trained is not None and settings) else {}
        if differ:
            said = ", ".join(f"{k}={a!r} (requested {b!r})" for k, (a, b) in differ.items())
            skipped.append((run, f"other settings: {said}"))
            fix = fix or f"; or pass {_overrides(differ)} to use {run.name}"
            continue
        finished.append((marker.stat().st_mtime, run))
    if finished:
        return max(finished, key=lambda t: (t[0], t[1].name))[1]
    listed = "; ".join(f"{run.name}: {why}" for run, why in skipped[:_MAX_LISTED])
    more = f"; and {len(skipped) - _MAX_LISTED} more" if len(skipped) > _MAX_LISTED else ""
    wanted = f" with settings {json.dumps({k: _jsonable(v) for k, v in settings.items()})}" if settings else ""
    raise DataError(root, f"no finished run '{prefix}*'{wanted} found — {listed}{more}. "
                          f"Pass --ckpt_path RUN/{required_file} to choose one{fix}")


def resolve_checkpoint(ckpt_path: str | os.PathLike | None, runs_root: str | os.PathLike, prefix: str,
                       settings: Mapping[str, object] | None = None) -> Path:
    """``ckpt_path`` if given (must exist; a run folder means its ``model.pt``), else ``model.pt`` of the
    latest finished run compatible with ``settings`` (:func:`latest_run`).

    An explicit checkpoint of a run that did not finish is used (the user chose it) with a warning.
    """
    if ckpt_path:
        path = Path(ckpt_path)
        if path.is_dir():
            path = path / "model.pt"
        if not path.is_file():
            raise DataError(path, "checkpoint not found")
        if (path.parent / SETTINGS_FILE).is_file() and not (path.parent / FINISHED_FILE).is_file():
            logger.warning("%s: its training run has no %s (still training, crashed or stopped); using it as asked",
                           path, FINISHED_FILE)
        return path
    return latest_run(runs_root, prefix, "model.pt", settings) / "model.pt"


def _has_trained(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a run that completed at least one epoch (a resumable state, or a finished run).

    Records of a run that failed before its first epoch (bad validation data, a wrong option) bind nothing: the
    corrected command may rewrite them in the same ``--run_dir``.
    """
    return (Path(run_dir) / RESUME_FILE).is_file() or (Path(run_dir) / FINISHED_FILE).is_file()


def write_run_settings(run_dir: str | os.PathLike, settings: Mapping[str, object]) -> Path:
    """Write ``settings`` (e.g. variant, width, intensity normalisation, views) to ``run_dir/settings.json``.

    A folder that already has one holds an interrupted run being resumed (``--run_dir``): its settings are
    kept, and a request that differs from them is refused before any work — continuing with other settings
    would label the earlier epochs' ``model.pt`` with settings it was not trained with.

    Raises:
        DataError: ``run_dir`` has settings that differ from ``settings`` (naming each and the overrides that
            resume it as it was).
    """
    path = Path(run_dir) / SETTINGS_FILE
    new = {k: _jsonable(v) for k, v in settings.items()}
    old = _read_json(path) if _has_trained(run_dir) else None
    if old is None:  # a new run, or one that failed before its first epoch: nothing trained to protect
        return write_json_atomic(new, path, overwrite=True)
    differ = settings_differences(old, new)
    # a folder recorded as typed (before runs recorded absolute paths) is the same folder when it resolves to it
    differ = {k: v for k, v in differ.items() if not (k in _PATH_SETTINGS and _same_folder(*v))}
    if "split_fingerprint" in differ:  # no option sets it: the split itself changed
        raise DataError(path, "the run being resumed was trained on another assignment of its split's images "
                              "(split_fingerprint differs: the split was re-made since); leave out --run_dir to "
                              "start a new run")
    if differ:
        said = ", ".join(f"{k}={a!r} (this command: {b!r})" for k, (a, b) in differ.items())
        raise DataError(path, f"the run being resumed was started with {said}; pass {_overrides(differ)} to continue "
                              "it, or leave out --run_dir to start a new run")
    merged = {**new, **old}
    return path if merged == old else write_json_atomic(merged, path)


def write_run_record(obj: object, run_dir: str | os.PathLike, name: str) -> Path:
    """Write a record of what a run trains on (e.g. ``patch_stats.json``) once.

    On a resumed run (``--run_dir``) the existing record is kept if the new one is the same, and a different
    one is refused: the run would continue on other data than it started with.

    Raises:
        DataError: ``run_dir/name`` exists with other content.
    """
    path = Path(run_dir) / name
    clean = json.loads(json.dumps(nan_to_none(obj)))  # as read back: tuples become lists, NaN null
    old = _read_json(path) if _has_trained(run_dir) else None
    if old is None:
        return write_json_atomic(clean, path, overwrite=True)
    if old != clean:
        raise DataError(path, "the run being resumed was started on other training data (this record differs); "
                              "leave out --run_dir to start a new run")
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
    trained = _read_json(path)
    if trained is None:
        return
    differ = settings_differences(trained, settings)
    if differ:
        said = ", ".join(f"{k}={a!r} (this run: {b!r})" for k, (a, b) in differ.items())
        raise DataError(checkpoint, f"trained with {said}; pass {_overrides(differ)} to use it (settings: {path})")


def run_setting(checkpoint: str | os.PathLike, key: str) -> object:
    """A setting recorded by training in ``settings.json`` beside ``checkpoint`` that evaluation must repeat
    (e.g. the training split's normalisation ``mean``/``std``), not a user option.

    Raises:
        DataError: no ``settings.json`` beside the checkpoint, or it lacks ``key``.
    """
    path = Path(checkpoint).parent / SETTINGS_FILE
    trained = _read_json(path)
    if trained is None or key not in trained:
        raise DataError(checkpoint, f"{key!r} is not recorded in {path}; use a checkpoint inside the training run "
                                    f"folder that wrote it")
    return trained[key]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (read in 1 MiB chunks: checkpoints can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import monai
    import torch

    import mednet

    return {"mednet": mednet.__version__, "monai": monai.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def checkpoint_provenance(checkpoint: str | os.PathLike, settings: Mapping[str, object] | None = None,
                          **extra: object) -> dict:
    """What a job used, for ``provenance.json`` and inference sidecars; also logged.

    Returns::

        {"time": ISO time, **extra (job, split, datalist, …),
         "checkpoint": {"path", "sha256", "run_dir", "training_settings" (the run's settings.json or None),
                        "training_finished" (its finished.json or None)},
         "settings": this job's settings, "versions": {"mednet", "monai", "torch", "python"}}

    The sha256 identifies the weights even after the run folder is moved or renamed. ``settings`` are first
    checked against the training run's (:func:`check_run_settings`): provenance is only ever recorded for a
    checkpoint the job may use.
    """
    if settings:
        check_run_settings(checkpoint, settings)
    path = Path(checkpoint).resolve()
    trained = _read_json(path.parent / SETTINGS_FILE)
    finished = _read_json(path.parent / FINISHED_FILE)
    digest = file_sha256(path)
    info = {
        "time": now_iso(),
        **{k: _jsonable(str(v) if isinstance(v, os.PathLike) else v) for k, v in extra.items()},
        "checkpoint": {"path": str(path), "sha256": digest, "run_dir": str(path.parent),
                       "training_settings": trained, "training_finished": finished},
        "settings": {k: _jsonable(v) for k, v in (settings or {}).items()},
        "versions": _versions(),
    }
    logger.info("checkpoint %s (sha256 %s…), trained with %s%s", path, digest[:12],
                json.dumps(trained) if trained is not None else f"unknown settings (no {SETTINGS_FILE})",
                "" if finished is not None or trained is None else f"; WARNING: that run has no {FINISHED_FILE}")
    return info


def write_provenance(provenance: Mapping[str, object], output_dir: str | os.PathLike,
                     overwrite: bool = False) -> Path:
    """``output_dir/provenance.json`` (atomically; an existing one is refused unless ``overwrite``).

    ``provenance`` comes first so that a bundle expression ``write_provenance(@provenance, @output_dir)``
    resolves (and checks) the checkpoint before it creates the output folder.
    """
    return write_json_atomic(dict(provenance), Path(output_dir) / PROVENANCE_FILE, overwrite=overwrite)


def sidecar_path(output: str | os.PathLike) -> Path:
    """``out/sub-01_seg.nii.gz`` → ``out/sub-01_seg.json`` (BIDS derivatives: the data file's name, ``.json``)."""
    output = Path(output)
    name = output.name
    for suffix in (".nii.gz", ".nii", ".csv.gz", ".tsv.gz"):
        if name.lower().endswith(suffix):
            return output.with_name(name[: -len(suffix)] + ".json")
    return output.with_suffix(".json")


def write_sidecar(output: str | os.PathLike, provenance: Mapping[str, object], input: str | os.PathLike | None = None,
                  overwrite: bool = False) -> Path:
    """JSON sidecar of one output file: ``{"input", "output", **provenance, "time": now}``, written atomically.

    ``input`` and ``output`` are this file's own (a key of the same name in ``provenance`` does not replace them).

    An existing sidecar is refused unless ``overwrite`` (like the output it describes).
    """
    own = {"input": None if input is None else str(Path(input).resolve()), "output": str(Path(output).resolve())}
    record = {**own, **{k: v for k, v in provenance.items() if k not in own and k != "time"}, "time": now_iso()}
    return write_json_atomic(record, sidecar_path(output), overwrite=overwrite)
