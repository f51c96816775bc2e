"""Atomic file writes: a file a run writes is either its previous complete version or its new complete one.

Every writer in mednet (``torch.save`` of models, CSV tables, matplotlib PNGs, JSON, NIfTI via nibabel, NumPy
``.npz``) writes through :func:`atomic_path`: the writer gets a temporary path **in the target's folder**
(same file system, so the final ``os.replace`` is atomic on POSIX and Windows) that **keeps the target's
suffix** (``.pt``, ``.png``, ``.nii.gz``, ``.npz``: nibabel, matplotlib, pandas and NumPy choose the format —
or append a suffix — from the name), and the temporary file is renamed over the target only when the writer
returned. A crash, a full disk or Ctrl-C while writing leaves the previous file untouched and no temporary file
behind (the temporary file is removed on any exception).

Why not ``tempfile.NamedTemporaryFile`` / ignite's ``DiskSaver(atomic=True)``: they create the file with mode
0600, so a model or report replaced that way becomes unreadable to the group; here the writer creates the
file itself and it gets the usual permissions (umask). Why not MONAI: it has no atomic-write helper.

A **set** of files that must change together (a cohort's volumes and its ``datalist.json``, slice files and
``slices.csv``, DermaMNIST's PNGs and ``split.csv``) is replaced through :func:`mednet.file_sets.replace_files`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mednet.errors import DataError

__all__ = ["atomic_path", "refuse_existing", "refuse_file_as_folder", "temp_name", "is_temp_name", "remove_stale_temp_files",
           "write_text_atomic", "write_json_atomic", "read_json_object", "nan_to_none", "TEMP_MARKER"]

logger = logging.getLogger(__name__)

#: part of every temporary file name (``.model.tmp-1a2b3c4d.pt``): lets tools and tests recognise leftovers
TEMP_MARKER = ".tmp-"

#: the whole of a :func:`temp_name`: a dot, the (possibly shortened, possibly empty) stem, the marker, 8 hex digits
#: and the target's suffix (none, one or two parts)
_TEMP_NAME = re.compile(r"\.(?s:.*)" + re.escape(TEMP_MARKER) + r"[0-9a-f]{8}(?:\.[^.]*){0,2}")

#: the longest file name most file systems take (ext4, XFS, Btrfs, tmpfs, APFS, NTFS), where ``pathconf`` cannot tell
_NAME_MAX = 255

_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


def _suffix(name: str) -> str:
    """The suffix a writer looks at: ``.pt``, ``.png``; two parts for compressed files (``.nii.gz``, ``.csv.gz``)."""
    path = Path(name)
    suffix = path.suffix
    if suffix.lower() in _COMPRESSION and Path(path.stem).suffix:
        suffix = Path(path.stem).suffix + suffix
    return suffix


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) ``folder``'s file system takes; 255 where it cannot say."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), folder not there yet, no such limit
        return _NAME_MAX


def temp_name(target: str | os.PathLike) -> Path:
    """``dir/model.pt`` → ``dir/.model.tmp-<8 hex>.pt``: hidden, unique, in the same folder, same suffix.

    The temporary name is 14 characters longer than the target's, so for a target name near the file system's
    limit (255 bytes on most) the stem is shortened from its end until the temporary name fits: a legal target name
    must never fail because of the temporary one. The name still matches :func:`is_temp_name`.
    """
    target = Path(target)
    suffix = _suffix(target.name)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    token = secrets.token_hex(4)
    limit = _name_max(target.parent)
    name = f".{stem}{TEMP_MARKER}{token}{suffix}"
    while len(os.fsencode(name)) > limit and stem:
        stem = stem[:-1]
        name = f".{stem}{TEMP_MARKER}{token}{suffix}"
    return target.with_name(name)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a :func:`temp_name` (``.model.tmp-1a2b3c4d.pt``): a write that never completed when it
    is still there after its writer ended."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of interrupted writes (:func:`is_temp_name`) directly inside ``folder``.

    :func:`atomic_path` removes its temporary file on any exception, but a process killed outright (``SIGKILL``,
    a power cut, or ``SIGTERM`` before the run turned it into an exception) leaves it behind: a resumed training run
    calls this on its run folder before it writes anything, so the leftovers of earlier attempts do not pile up.
    Only plain files with exactly that name pattern, only in ``folder`` itself (not its sub-folders, which may be
    evaluations being written right now); each removal is logged. Call it only when no other process writes to
    ``folder``.

    Returns:
        the files removed.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:  # missing or unreadable: nothing of ours to clean
        return removed
    for path in sorted(entries):
        if is_temp_name(path.name) and path.is_file() and not path.is_symlink():
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
            logger.info("%s: removed the temporary file of a write that was interrupted", path)
    return removed


#: what :func:`refuse_existing` tells the user to do by default (commands that take ``--overwrite``)
_EXISTS_HINT = "choose another path or pass --overwrite"


def _exists(target: Path, hint: str | None = None) -> DataError:
    return DataError(target, f"output already exists; {hint or _EXISTS_HINT}")


def refuse_file_as_folder(out: str | os.PathLike, *subfolders: str,
                          hint: str = "choose another --out") -> Path:
    """Raise :class:`~mednet.errors.DataError` if the output folder ``out`` (or one of its ``subfolders``) is a file,
    or ``out`` lies under a file; returns ``Path(out)``.

    Called by the commands that write a folder (``data_prep.dermoscopy``, ``data_prep.synthetic_dermoscopy``,
    ``data_prep.demo_cohort``, ``data_prep.feedback merge``) before they read or write anything: ``mkdir`` or the
    first atomic write under a file would otherwise fail with a ``FileExistsError`` / ``NotADirectoryError``
    traceback after the work, and a "pass --overwrite" advice would not help. ``hint`` ends the message (what to
    do instead).
    """
    out = Path(out)
    for folder in (*(out / sub for sub in subfolders), out):
        if folder.exists() and not folder.is_dir():
            raise DataError(folder, f"is a file, not a folder; {hint}")
    for parent in out.parents:
        if parent.exists():  # the nearest existing ancestor: False for every path under a file
            if not parent.is_dir():
                raise DataError(parent, f"is a file, not a folder (--out {out} would lie inside it); {hint}")
            break
    return out


def refuse_existing(*paths: str | os.PathLike, overwrite: bool = False, hint: str | None = None) -> None:
    """Raise :class:`~mednet.errors.DataError` for the first of ``paths`` that exists, unless ``overwrite``.

    The one check every writer makes before it starts (so a run never loses earlier outputs, and fails before
    hours of work rather than at the end); :func:`atomic_path` with ``overwrite=False`` checks again at the rename.
    ``hint`` replaces the default advice ("choose another path or pass --overwrite") for a command that has no
    ``--overwrite``: the message must not name a flag the user cannot give.
    """
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise _exists(Path(path), hint)


def _fsync(path: Path) -> None:
    """Flush ``path`` to disk before it is renamed (so a power cut cannot leave a renamed but empty file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (e.g. certain network mounts) refuse fsync on a read-only descriptor
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target`` in one rename.

    ::

        with atomic_path(run_dir / "model.pt") as tmp:
            torch.save(state_dict, tmp)

    A ``target`` that is a symbolic link is replaced by a regular file (the rename replaces the link itself, as
    every atomic writer does); the file it linked to is left unchanged.

    Args:
        target: the file to (re)write; its folder is created.
        overwrite: replace an existing ``target`` (files a run rewrites: ``model.pt``, ``metrics.csv``, …).
            With False an existing ``target`` is an error — checked again at the rename with ``os.link``, which
            fails if the name exists, so a concurrent run cannot be overwritten either (falls back to a check
            plus ``os.replace`` on file systems without hard links).

    Raises:
        DataError: ``target`` exists and ``overwrite`` is False.
        FileNotFoundError: the writer wrote nothing.
        Exception: whatever the writer raised; the temporary file is removed and ``target`` left as it was.
    """
    target = Path(target)
    if not overwrite and target.exists():
        raise _exists(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{target}: the writer wrote nothing to the temporary file {tmp.name}")
        _fsync(tmp)
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise _exists(target) from None
            except OSError:  # no hard links on this file system
                if target.exists():
                    raise _exists(target) from None
                os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`; returns ``Path(path)``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def nan_to_none(value: object) -> object:
    """``value`` with every float NaN (in dicts, lists and tuples, recursively) replaced by None: strict JSON has
    no NaN, and ``json.dumps`` would write a token other readers refuse."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value


def write_json_atomic(obj: object, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """``json.dumps(obj, indent=2)`` to ``path`` through :func:`atomic_path` (no NaN cleaning: see
    :func:`mednet.reports.write_json` for reports)."""
    return write_text_atomic(json.dumps(obj, indent=2) + "\n", path, overwrite=overwrite)


def read_json_object(path: str | os.PathLike) -> dict | None:
    """``path``'s JSON object (a run's ``settings.json``, ``calibration.json``, …), or None if the file is missing.

    Raises:
        DataError: the file is unreadable, not UTF-8 JSON, or holds something other than an object.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read ({e})") from e
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a JSON object, got {type(obj).__name__}")
    return obj
