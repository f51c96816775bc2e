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
import shlex
import sys
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path

from mednet.errors import DataError, OptionError
from mednet.io import is_temp_name, nan_to_none, read_json_object, remove_stale_temp_files, write_json_atomic

__all__ = [
    "run_setting",
    "new_run_dir", "training_run_dir", "check_run_dir", "acquire_run_lock", "release_run_lock", "held_run_dirs", "held_locks", "release_run_locks_since", "latest_run", "resolve_checkpoint", "write_run_settings", "check_resume_settings", "run_default", "write_run_record", "check_run_settings",
    "settings_differences", "mark_finished", "read_finished", "checkpoint_provenance", "write_provenance",
    "sidecar_path", "write_sidecar", "file_sha256", "command_overrides", "nested_overrides", "SETTINGS_FILE",
    "FINISHED_FILE", "PROVENANCE_FILE", "RESUME_FILE", "MODEL_FILE", "OVERRIDES_KEY", "LOCK_FILE",
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
#: the best model of a training run (the default checkpoint of evaluation and inference)
MODEL_FILE = "model.pt"
#: the key of ``settings.json`` that records the run's nested (``--a#b``) command-line overrides
OVERRIDES_KEY = "overrides"
#: held in a training run's folder while a process trains it (pid, host, start): a second process resuming the same
#: folder would interleave its checkpoints and metrics with the first's
LOCK_FILE = "run.lock"

_MAX_LISTED = 8  # runs named in the "no run qualifies" message


def now_iso() -> str:
    """Local time with its UTC offset, to the second (``2026-11-23T12:05:01+01:00``)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _cannot_create(path: Path, e: OSError) -> DataError:
    """The user's error for a run folder the file system refuses (a file in the way, no permission, disk full)."""
    if isinstance(e, FileExistsError):  # exist_ok covers folders only
        why = "a file of that name is in the way"
    elif isinstance(e, NotADirectoryError):
        why = "a part of its path is a file"
    else:
        why = e.strerror or str(e)
    return DataError(path, f"cannot create the run folder ({why})")


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    """Create and return ``root/name-<timestamp>`` (``-2``, ``-3``… appended if that exists already).

    Raises:
        DataError: the folder cannot be created (``root`` or a parent is a file, no permission, …).
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # FileExistsError when root is a file, NotADirectoryError under one, PermissionError
        raise _cannot_create(root, e) from e
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        path = root / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise _cannot_create(path, e) from e
    raise DataError(root, f"could not create a new run directory for {name}")


def training_run_dir(run_dir: str | os.PathLike | None, runs_root: str | os.PathLike, name: str) -> Path:
    """The folder a training run writes to: a new ``runs_root/name-<timestamp>`` (:func:`new_run_dir`), or
    ``run_dir`` when given (``--run_dir``).

    A given ``run_dir`` is created if missing; if it holds an interrupted run (``checkpoint_last.pt`` without
    ``finished.json``) training **continues** from its last completed epoch
    (:class:`mednet.engines.checkpoints.AtomicCheckpointSaver`), after the temporary files of writes the
    interruption cut short are removed (:func:`mednet.io.remove_stale_temp_files`). Anything else that holds
    files is refused, so that no run's files are written over or mixed with another's: a finished run, a folder
    with a trained ``model.pt`` but nothing to resume from (a run of an earlier mednet, or copied), and a folder of
    other files (``--run_dir runs/brain_tissue_fcn``: the runs root). A folder whose run stopped before its first
    epoch (``settings.json`` and other records, no ``checkpoint_last.pt``) may be used again.

    Raises:
        OptionError: ``run_dir`` is blank (``--run_dir " "`` would create a folder named by a space).
        DataError: ``run_dir`` is a file, holds a finished or otherwise trained run, holds files but no mednet run
            records, or cannot be created.
    """
    if run_dir in (None, ""):
        path = new_run_dir(runs_root, name)
        acquire_run_lock(path)
        return path
    path = check_run_dir(run_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way (NotADirectoryError, FileExistsError), no permission, …
        raise _cannot_create(path, e) from e
    acquire_run_lock(path)  # before the clean-up: another process's temporary files may be live
    remove_stale_temp_files(path)
    return path


try:  # advisory file locks: POSIX (Linux, macOS); Windows has none here and runs unlocked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: the lock file descriptors this process holds, by resolved lock path (insertion order: oldest first)
_HELD_LOCKS: dict[Path, int] = {}
#: training run folders this process has trained (held), in order, for the Ctrl-C message
_TRAINED_HERE: list[Path] = []
_RELEASE_AT_EXIT = False


def _release_locks() -> None:
    for lock in list(_HELD_LOCKS):
        release_run_lock(lock.parent)


def _lock_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).resolve() / LOCK_FILE  # the same key whatever the working folder


def _holder_text(path: Path) -> str:
    try:
        held = json.loads(path.read_text(encoding="utf-8"))
        return f"process {held.get('pid')} on host {held.get('host')} (since {held.get('started')})"
    except (OSError, ValueError, TypeError, AttributeError):
        return "another process"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _refuse_locked(path: Path) -> DataError:
    return DataError(path, f"the run folder is in use by {_holder_text(path)}, still training it; wait for that run "
                           "to end (or stop it) before resuming")


def _check_unlocked(path: Path) -> None:
    """Refuse now if another process holds ``path`` (before the data are read); take nothing."""
    if fcntl is None or path in _HELD_LOCKS or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDWR)  # NFS emulates flock with fcntl locks: an exclusive one needs write access
    except OSError:
        return  # unreadable: acquire_run_lock reports it
    try:
        if not _try_lock(fd):
            raise _refuse_locked(path)
    finally:
        os.close(fd)  # closing drops a lock taken just to look


def acquire_run_lock(run_dir: str | os.PathLike) -> Path:
    """Hold an exclusive lock on ``run_dir/run.lock`` until the run finishes or this process ends.

    Of two processes on one folder (two resumes of the same ``--run_dir``, or a resume of a run still training)
    only one trains it: their checkpoints, ``model.pt`` and ``metrics.csv`` would otherwise interleave. An OS
    advisory lock (``flock``) rather than a pid written into a file, because the kernel drops it with the process
    however it ends (SIGKILL, OOM, a lost node's NFS lease), so no lock is ever stale, and it holds across
    containers that share the folder but not a pid namespace. The file records pid, host and start time for the
    message only. Taken again by the process holding it, it is kept (a run resumed in-process).

    Raises:
        DataError: another process holds it, or the lock file cannot be made.
    """
    global _RELEASE_AT_EXIT
    path = _lock_path(run_dir)
    if fcntl is None or path in _HELD_LOCKS:
        return path
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DataError(path, f"cannot create the run folder's lock file ({e.strerror or e})") from e
    if not _try_lock(fd):
        os.close(fd)
        raise _refuse_locked(path)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": platform.node(), "started": now_iso()}).encode("utf-8"))
    _HELD_LOCKS[path] = fd
    if path.parent not in _TRAINED_HERE:
        _TRAINED_HERE.append(path.parent)
    if not _RELEASE_AT_EXIT:
        import atexit

        atexit.register(_release_locks)  # SIGTERM unwinds to here too (mednet.bundle_support)
        _RELEASE_AT_EXIT = True
    return path


def held_run_dirs() -> list[Path]:
    """The training run folders this process trains now or trained without finishing, oldest first (the lock
    may already be released: :func:`mednet.app.bundles.run_bundle` releases a failed run's when it returns)."""
    return list(_TRAINED_HERE)


def release_run_lock(run_dir: str | os.PathLike) -> None:
    """Release and remove ``run_dir/run.lock`` if this process holds it."""
    path = _lock_path(run_dir)
    fd = _HELD_LOCKS.pop(path, None)
    if fd is None:
        return
    try:
        path.unlink(missing_ok=True)  # while still held: no other process took it in between
    except OSError:
        pass
    os.close(fd)


def release_run_locks_since(before: Mapping[Path, int]) -> None:
    """Release the locks taken since ``before`` (a copy of the held locks): a Python caller's failed run does not
    keep its folder locked for the rest of a long-lived process (a notebook)."""
    for path in [p for p in _HELD_LOCKS if p not in before]:
        release_run_lock(path.parent)


def held_locks() -> dict[Path, int]:
    """A copy of the locks this process holds (for :func:`release_run_locks_since`)."""
    return dict(_HELD_LOCKS)


def check_run_dir(run_dir: str | os.PathLike | None) -> Path | None:
    """The refusals of :func:`training_run_dir` for a given ``--run_dir``, without creating or cleaning anything:
    a bundle checks them first, before minutes of patch extraction or image decoding, and again when it makes the
    folder. Returns the folder (None without ``run_dir``).

    Raises:
        OptionError, DataError: as :func:`training_run_dir`.
    """
    if run_dir in (None, ""):
        return None
    if isinstance(run_dir, str) and any(not part.strip() for part in Path(run_dir).parts):
        raise OptionError({"--run_dir": f"{run_dir!r} has a blank folder name; give a name, or leave --run_dir out "
                                        "for a new timestamped run"})
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise DataError(path, "--run_dir is a file, not a folder")
    if (path / FINISHED_FILE).is_file():
        raise DataError(path, f"holds a finished training run ({FINISHED_FILE}); it is never trained over — "
                              "choose another --run_dir, or leave it out for a new timestamped run")
    if (path / MODEL_FILE).is_file() and not (path / RESUME_FILE).is_file():
        raise DataError(path, f"holds a trained model ({MODEL_FILE}) but no {RESUME_FILE} to resume from (a run of "
                              "an earlier mednet, or not a mednet run); it is never trained over — choose another "
                              "--run_dir, or leave it out for a new timestamped run")
    if path.is_dir():
        _adopt(path)
        _check_unlocked(_lock_path(path))  # a run still training there: refused now, before the data are read
    return path


#: files that only a mednet training run writes into its folder before its first epoch ends
_RUN_RECORDS = (SETTINGS_FILE, RESUME_FILE)
#: a job launcher's own output files, which may be in the folder before the run starts
_LAUNCHER_LOGS = (".log", ".out", ".err")
_MAX_SHOWN = 5  # entries of a foreign folder named in its refusal


def _adopt(path: Path) -> None:
    """Check that an existing ``--run_dir`` folder is empty (but for temporary files of interrupted writes and a job
    launcher's logs) or a mednet run.

    Raises:
        DataError: the folder holds files (other than temporary files of interrupted writes) but no run records.
    """
    try:
        entries = sorted(p.name for p in path.iterdir() if not is_temp_name(p.name) and p.name != LOCK_FILE)
    except OSError as e:
        raise DataError(path, f"cannot read the run folder ({e.strerror or e})") from e
    # a launcher's log made before Python starts (Slurm's --output=RUN/slurm-%j.out, `> RUN/train.log`)
    entries = [e for e in entries if not (Path(e).suffix.lower() in _LAUNCHER_LOGS and (path / e).is_file())]
    if entries and not any((path / record).is_file() for record in _RUN_RECORDS):
        shown = ", ".join(entries[:_MAX_SHOWN]) + (f" and {len(entries) - _MAX_SHOWN} more"
                                                   if len(entries) > _MAX_SHOWN else "")
        raise DataError(path, f"holds {shown} but no mednet run records ({' or '.join(_RUN_RECORDS)}): --run_dir "
                              "must be a new or empty folder, or an interrupted mednet training run — choose "
                              "another, or leave it out for a new timestamped run")


def _jsonable(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


_read_json = read_json_object  # ``path``'s JSON object, None if missing, DataError if unreadable


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


def _fire_reads_as_text(text: str) -> bool:
    """Whether python-fire (``python -m monai.bundle run``) reads the argument ``text`` as that same text: it
    evaluates arguments as Python literals, so ``1`` arrives as an int, ``[a, b]`` as a list and ``a#b`` as ``a``
    (``#`` starts a comment)."""
    import fire.parser

    try:
        return fire.parser.DefaultParseValue(text) == text
    except Exception:  # fire's parser is lenient; any failure means: do not rely on it
        return False


def _cli_value(value: object) -> str:
    """``value`` as a shell passes it to the command line, pasted as is: True/False/None as Python spells them
    (python-fire reads ``true`` as text, which the option check refuses), numbers as JSON, lists and mappings as
    compact JSON and text as is — each quoted for the shell (``--views '[0,1,2]'``: unquoted, ``[0, 1, 2]`` is three
    arguments). Text that python-fire would read as something else (``1``, ``a#b``) is passed as a JSON string."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return shlex.quote(value if _fire_reads_as_text(value) else json.dumps(value))
    return shlex.quote(json.dumps(_jsonable(value), separators=(",", ":")))


#: settings no option sets, each with the option that decides it: (option, value for a trained True/False)
_DERIVED_SETTINGS = {"cosine_head": ("loss", {True: "ldam", False: "ce"})}
#: settings computed from the training data, not set by any option (the dermoscopy bundle's channel statistics and
#: class list): a resume hint cannot name an override for them
_DATA_SETTINGS = ("normalization", "class_names", "class_counts", "data")


def _overrides(differ: Mapping[str, tuple]) -> str:
    """``--views '[0,1,2]' --variant skip``: the command-line overrides giving the trained values, ready to paste
    into a shell (a derived setting such as ``cosine_head`` through the option that sets it: ``--loss ldam``)."""
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
    path = write_json_atomic({"finished": now_iso(), **clean}, Path(run_dir) / FINISHED_FILE)
    release_run_lock(run_dir)  # nothing trains it any more
    finished = Path(run_dir).resolve()
    if finished in _TRAINED_HERE:
        _TRAINED_HERE.remove(finished)
    return path


def read_finished(run_dir: str | os.PathLike) -> dict | None:
    """``run_dir/finished.json`` as a dict, or None when the run did not finish."""
    return _read_json(Path(run_dir) / FINISHED_FILE)


def latest_run(root: str | os.PathLike, prefix: str, required_file: str = "model.pt",
               settings: Mapping[str, object] | None = None) -> Path:
    """The most recently finished ``root/<prefix>*`` run holding ``required_file`` and compatible with ``settings``.

    A run qualifies when it has ``required_file``, a ``finished.json`` (:func:`mark_finished`), and — when
    ``settings`` are asked for — a ``settings.json`` that agrees with them on every key present in both
    (:func:`settings_differences`). A run without ``settings.json`` (copied, or of another tool) has unknown
    settings, so it is never the default for a job that names settings: the job would silently use a model trained
    with other ones; ``--ckpt_path`` still uses it. "Most recent" is by the time ``finished.json`` was written.

    Raises:
        DataError: no run qualifies — the message lists the runs found (newest first) with the reason each was
            skipped (no model, unfinished, other settings), and the fix: ``--ckpt_path``, or the overrides that
            match a finished run.
    """
    root = Path(root)
    runs = [p for p in root.glob(f"{prefix}*") if p.is_dir()] if root.is_dir() else []
    if not runs:
        raise DataError(root, f"no run '{prefix}*' found; train first, pass --ckpt_path RUN/{required_file}, or "
                              "--runs_root FOLDER where the runs are (python -m mednet.app.demo writes them under its "
                              "--out: demo/runs, demo/dermoscopy/runs)")
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
        if trained is None and settings:
            skipped.append((run, f"no {SETTINGS_FILE} (trained with unknown settings)"))
            continue
        differ = settings_differences(trained, settings) if (trained is not None and settings) else {}
        if differ:
            said = ", ".join(f"{k}={a!r} (requested {b!r})" for k, (a, b) in differ.items())
            skipped.append((run, f"other settings: {said}"))
            fix = fix or f"Pass {_overrides(differ)} to use {run.name} (the newest with other settings); or "
            continue
        finished.append((marker.stat().st_mtime, run))
    if finished:
        chosen = max(finished, key=lambda t: (t[0], t[1].name))[1]
        newer = [f"{run.name} ({why.split(' (')[0]})" for run, why in skipped
                 if (run / required_file).is_file() and (run / required_file).stat().st_mtime > max(finished)[0]]
        if newer:  # e.g. the run just interrupted: say that an older one is used instead
            logger.warning("%s: using %s; newer runs skipped: %s", root, chosen.name, "; ".join(newer[:_MAX_LISTED]))
        return chosen
    listed = "; ".join(f"{run.name}: {why}" for run, why in skipped[:_MAX_LISTED])
    more = f"; and {len(skipped) - _MAX_LISTED} more" if len(skipped) > _MAX_LISTED else ""
    wanted = f" with settings {json.dumps({k: _jsonable(v) for k, v in settings.items()})}" if settings else ""
    raise DataError(root, f"no finished run '{prefix}*'{wanted} found — {listed}{more}. "
                          f"{fix or 'Pass '}--ckpt_path RUN/{required_file} (its settings.json gives the rest)")


def resolve_checkpoint(ckpt_path: str | os.PathLike | None, runs_root: str | os.PathLike, prefix: str,
                       settings: Mapping[str, object] | None = None) -> Path:
    """``ckpt_path`` if given (must exist; a run folder means its ``model.pt``), else ``model.pt`` of the
    latest finished run compatible with ``settings`` (:func:`latest_run`); returned with every symbolic link
    resolved (:meth:`pathlib.Path.resolve`).

    Resolved because a run's records lie beside the file itself: ``shared/best.pt -> run/model.pt`` would otherwise
    be checked against (and recorded with) ``shared/settings.json`` — none, so a checkpoint trained with other
    settings passed unchecked. Every later step (settings check, normalisation, provenance) then reads the run of
    the weights it loads.

    An explicit checkpoint of a run that did not finish is used (the user chose it) with a warning.
    """
    if ckpt_path:
        given = Path(ckpt_path)
        path = given / MODEL_FILE if given.is_dir() else given
        if not path.is_file():
            raise DataError(path, "checkpoint not found")
        path = path.resolve()
        if (path.parent / SETTINGS_FILE).is_file() and not (path.parent / FINISHED_FILE).is_file():
            logger.warning("%s: its training run has no %s (still training, crashed or stopped); using it as asked",
                           path, FINISHED_FILE)
        return path
    return (latest_run(runs_root, prefix, MODEL_FILE, settings) / MODEL_FILE).resolve()


def _has_trained(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a run that completed at least one epoch (a resumable state, a finished run, or a
    trained ``model.pt`` — of a run from before ``checkpoint_last.pt`` existed, or copied in).

    Records of a run that failed before its first epoch (bad validation data, a wrong option) bind nothing: the
    corrected command may rewrite them in the same ``--run_dir``.
    """
    return any((Path(run_dir) / name).is_file() for name in (RESUME_FILE, FINISHED_FILE, MODEL_FILE))


#: the nested overrides given to the bundle run in progress by a Python caller (:func:`command_overrides`)
_COMMAND_OVERRIDES: ContextVar[Mapping[str, object] | None] = ContextVar("mednet_command_overrides", default=None)


@contextlib.contextmanager
def command_overrides(overrides: Mapping[str, object]) -> Iterator[None]:
    """Within the block, ``overrides`` are the overrides of the bundle run in progress (for
    :func:`write_run_settings`).

    ``python -m monai.bundle run`` needs nothing: its command line is read (:func:`mednet.overrides.cli_overrides`).
    A Python caller that gives the workflow its overrides itself (``ConfigWorkflow(**overrides)``, as
    :func:`mednet.app.bundles.run_bundle` does) wraps the run in this, since the config cannot see which of its
    values were overridden.
    """
    token = _COMMAND_OVERRIDES.set(dict(overrides))
    try:
        yield
    finally:
        _COMMAND_OVERRIDES.reset(token)


def _nested(key: str) -> bool:
    return "#" in key or "::" in key


def nested_overrides(overrides: Mapping[str, object] | None = None) -> dict[str, object] | None:
    """The nested (``--optimizer#weight_decay 0.1``) overrides of this run, keyed as typed with ``#``, as JSON
    values; None when they cannot be known.

    ``overrides`` when given; else those of :func:`command_overrides`; else the command line of
    ``python -m monai.bundle run``. Top-level options (``--epochs``) are not included: a bundle records the ones
    that matter under their own names.
    """
    if overrides is None:
        overrides = _COMMAND_OVERRIDES.get()
    if overrides is None:
        from mednet.overrides import cli_overrides

        parsed = cli_overrides(sys.argv)
        if parsed is None:
            return None
        overrides = parsed[1]
    # ids starting with "_" (``--_meta_#version``) are the bundle's metadata and comments, not training settings
    nested = {str(k).replace("::", "#"): v for k, v in overrides.items() if _nested(str(k)) and not str(k).startswith("_")}
    return {k: json.loads(json.dumps(nan_to_none(nested[k]), default=str)) for k in sorted(nested)}


_ABSENT = object()


def _override_hint(recorded: Mapping[str, object], given: Mapping[str, object]) -> str:
    """What to type to resume with the recorded nested overrides: ``--a#b 1`` for each one the run was started
    with, ``leave out --c#d`` for each one it was not."""
    parts = [f"--{k} {_cli_value(v)}" for k, v in recorded.items() if given.get(k, _ABSENT) != v]
    dropped = [f"--{k}" for k in given if k not in recorded]
    return " ".join(parts) + (" and " if parts and dropped else "") + (
        f"leave out {', '.join(dropped)}" if dropped else "")


def _shown(values: Mapping[str, object], key: str) -> str:
    return json.dumps(values[key]) if key in values else "not given"


def run_default(ckpt_path: str | os.PathLike | None, key: str, default: object) -> object:
    """The default of an evaluation/inference option: the value the run of ``ckpt_path`` recorded in its
    ``settings.json``, else ``default`` (no ``--ckpt_path``: the latest run with the default settings is used; a
    checkpoint without a run folder; a setting the run did not record).

    With ``--ckpt_path`` named, a user should not have to repeat the training command's ``--views "[2]"
    --bias_correction none`` (or ``--image_size 32 --loss ldam``): the run says what it was trained with. An
    option given on the command line still replaces this, and is checked against the run as before.

    Raises:
        DataError: the run's ``settings.json`` is unreadable.
    """
    if ckpt_path in (None, ""):
        return default
    path = Path(ckpt_path)
    if path.is_dir():
        path = path / MODEL_FILE
    folder = path.resolve().parent  # a symbolic link's own run (as resolve_checkpoint)
    settings = _read_json(folder / SETTINGS_FILE) or {}
    value = settings.get(key)
    return default if value is None else value


def check_resume_settings(run_dir: str | os.PathLike | None, settings: Mapping[str, object],
                          overrides: Mapping[str, object] | None = None) -> None:
    """The refusals of :func:`write_run_settings` for a ``--run_dir`` being resumed, without writing anything: a
    bundle checks the settings its options give first, before minutes of patch extraction (the data-derived ones
    are checked when the record is written).

    Raises:
        DataError: as :func:`write_run_settings`.
    """
    if run_dir in (None, ""):
        return
    write_run_settings(run_dir, settings, overrides, check_only=True)


def write_run_settings(run_dir: str | os.PathLike, settings: Mapping[str, object],
                       overrides: Mapping[str, object] | None = None, check_only: bool = False) -> Path:
    """Write ``settings`` (e.g. variant, width, intensity normalisation, views) to ``run_dir/settings.json``, with
    the run's nested command-line overrides under ``"overrides"`` (:func:`nested_overrides`).

    The nested overrides (``--optimizer#weight_decay 0.1``, ``--train#trainer#epoch_length 2``) change the
    training as much as a named option, but no bundle names them in its settings: without this record a run
    trained with them would be indistinguishable from one trained without. ``overrides``: the run's overrides
    (all of them; the nested ones are kept), default those of :func:`command_overrides` or of the
    ``python -m monai.bundle run`` command line. When they cannot be known (a Python caller outside
    :func:`command_overrides`) nothing is recorded under ``"overrides"`` and nothing is compared.

    A folder that already has one holds an interrupted run being resumed (``--run_dir``): its settings are
    kept, and a request that differs from them — nested overrides included — is refused before any work:
    continuing with other settings would label the earlier epochs' ``model.pt`` with settings it was not trained
    with.

    Raises:
        DataError: ``run_dir`` has settings or nested overrides that differ from these (naming each and the
            overrides that resume it as it was).
    """
    path = Path(run_dir) / SETTINGS_FILE
    new = {k: _jsonable(v) for k, v in settings.items() if k != OVERRIDES_KEY}
    nested = nested_overrides(overrides)
    if nested is not None:
        new[OVERRIDES_KEY] = nested
    old = _read_json(path) if _has_trained(run_dir) else None
    if old is None:  # a new run, or one that failed before its first epoch: nothing trained to protect
        return path if check_only else write_json_atomic(new, path, overwrite=True)
    differ = settings_differences({k: v for k, v in old.items() if k != OVERRIDES_KEY},
                                  {k: v for k, v in new.items() if k != OVERRIDES_KEY})
    # a folder recorded as typed (before runs recorded absolute paths) is the same folder when it resolves to it
    differ = {k: v for k, v in differ.items() if not (k in _PATH_SETTINGS and _same_folder(*v))}
    if "split_fingerprint" in differ:  # no option sets it: the split itself changed
        raise DataError(path, "the run being resumed was trained on another assignment of its split's images "
                              "(split_fingerprint differs: the split was re-made since); leave out --run_dir to "
                              "start a new run")
    from_data = sorted(k for k in differ if k in _DATA_SETTINGS)
    if from_data:  # no option sets them either: the training images themselves changed
        raise DataError(path, f"the run being resumed was trained on other data ({', '.join(from_data)} differ: the "
                              "training split's images or labels changed since); leave out --run_dir to start a new run")
    if differ:
        said = ", ".join(f"{k}={a!r} (this command: {b!r})" for k, (a, b) in differ.items())
        raise DataError(path, f"the run being resumed was started with {said}; pass {_overrides(differ)} to continue "
                              "it, or leave out --run_dir to start a new run")
    recorded = old.get(OVERRIDES_KEY)  # absent in a run of an earlier mednet: its nested overrides are unknown
    if isinstance(recorded, dict) and nested is not None and recorded != nested:
        changed = sorted(k for k in {*recorded, *nested} if recorded.get(k, _ABSENT) != nested.get(k, _ABSENT))
        said = ", ".join(f"--{k} {_shown(recorded, k)} (this command: {_shown(nested, k)})" for k in changed)
        raise DataError(path, f"the run being resumed was started with other nested overrides: {said}; give "
                              f"{_override_hint(recorded, nested)} to continue it, or leave out --run_dir to start "
                              "a new run")
    if check_only:
        return path
    merged = {**new, **old}
    if OVERRIDES_KEY not in old and OVERRIDES_KEY in new:
        merged[OVERRIDES_KEY] = None  # started by an earlier mednet: what it was started with stays unknown
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
    from elsewhere — is not checked) and compares every key present in both. A symbolic link to a checkpoint is
    followed first: the settings are those of the run folder that holds the weights, not of the link's folder. A
    network evaluated with another intensity normalisation or other views runs without error but segments badly,
    so this is an error.

    Raises:
        DataError: naming the checkpoint, each differing setting and the override that fixes it.
    """
    path = Path(checkpoint).resolve().parent / SETTINGS_FILE  # beside the file itself, through any link to it
    trained = _read_json(path)
    if trained is None:
        return
    differ = settings_differences(trained, settings)
    if differ:
        said = ", ".join(f"{k}={a!r} (this run: {b!r})" for k, (a, b) in differ.items())
        raise DataError(checkpoint, f"trained with {said}; pass {_overrides(differ)} to use it (settings: {path})")


def run_setting(checkpoint: str | os.PathLike, key: str) -> object:
    """A setting recorded by training in ``settings.json`` beside ``checkpoint`` (a link followed to the file
    itself, as in :func:`check_run_settings`) that evaluation must repeat (e.g. the training split's normalisation
    ``mean``/``std``), not a user option.

    Raises:
        DataError: no ``settings.json`` beside the checkpoint, or it lacks ``key``.
    """
    path = Path(checkpoint).resolve().parent / SETTINGS_FILE
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
