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
``slices.csv``, DermaMNIST's PNGs and ``split.csv``) is replaced through :func:`replace_files`: staged whole in a
hidden folder, then swapped in, with the earlier set moved back on any failure, and moved back by the next run
(:func:`recover_replacements`) if the process was killed outright in between.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mednet.errors import DataError

__all__ = ["atomic_path", "refuse_existing", "refuse_file_as_folder", "temp_name", "is_temp_name", "remove_stale_temp_files",
           "replace_files", "recover_replacements", "write_text_atomic", "write_json_atomic", "read_json_object", "nan_to_none", "TEMP_MARKER"]

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


# ------------------------------------------------------------------------ replacing a set of files, all or nothing
try:  # advisory file locks: POSIX (Linux, macOS); Windows has none (see :func:`recover_replacements`)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: in a replacement's folder: created first and removed last, locked (``flock``) while its writer lives; it names
#: the destination
_LOCK = "replace.lock"
#: in a replacement's folder: written and flushed before the first file moves, removed once the new set is in place
#: (or the old set back): while it is there, the replacement is unfinished and must be rolled back
_RECORD = "replacing.json"
#: in a replacement's folder: the new set, as the writer stages it; the old set, once moved aside
_NEW, _OLD = "new", "old"


def _rel(path: str | os.PathLike) -> str:
    """``path`` as a relative POSIX path inside the destination; a ValueError for an absolute path or ``..``."""
    rel = Path(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel == Path("."):
        raise ValueError(f"{path!r}: expected a relative path inside the destination folder")
    return rel.as_posix()


def _same_dest(recorded: object, dest: Path) -> bool:
    return isinstance(recorded, str) and os.path.normcase(recorded) == os.path.normcase(str(dest.resolve()))


def _lock_dest(folder: Path) -> str | None:
    """The destination named by ``folder``'s lock file; None if there is none or it cannot be read."""
    try:
        return json.loads((folder / _LOCK).read_text(encoding="utf-8")).get("dest")
    except (OSError, ValueError, AttributeError):
        return None


def _try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock; None if another process holds it (or it is gone).
    Without ``fcntl`` (Windows) the file is only opened: nothing tells a live replacement from a stale one there."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    return fd


def _discard(folder: Path) -> None:
    """Delete a replacement's folder whose old set is no longer needed: the record first (then it is garbage to
    every later run, whatever is left of it), the lock file last (what names it as ours)."""
    try:
        (folder / _RECORD).unlink(missing_ok=True)
    except OSError as e:
        logger.warning("%s: could not remove (%s)", folder / _RECORD, e)
        return  # keep everything: the record still says the old files are needed
    _fsync(folder)
    try:
        entries = [p for p in folder.iterdir() if p.name != _LOCK]
    except OSError:
        entries = []
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    with contextlib.suppress(OSError):
        (folder / _LOCK).unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _roll_back(folder: Path, dest: Path, record: dict) -> list[str]:
    """Take out the new files a replacement moved into ``dest`` and move the old ones back; the problems, if any.

    Works from what is on disk, so it serves a failing replacement, a later run recovering from a killed one, and
    a roll-back that was itself interrupted: a new file is in ``dest`` when it is no longer in the staging folder
    (``os.replace`` moves a file whole or not at all), an old one still to restore when it is in the aside folder.
    A new file whose old version is no longer aside is left alone: that name holds the old file again (put back
    by an earlier roll-back, or by hand).
    """
    new, old = list(record["new"]), list(record["old"])
    aside_of = {rel: folder / _OLD / rel for rel in old}
    problems = []
    for rel in reversed(new):
        if os.path.lexists(folder / _NEW / rel):  # never moved in
            continue
        if rel in aside_of and not os.path.lexists(aside_of[rel]):
            continue
        try:
            (dest / rel).unlink(missing_ok=True)
        except OSError as e:
            problems.append(f"{dest / rel}: could not remove the new file ({e})")
    for rel in reversed(old):
        if not os.path.lexists(aside_of[rel]):
            continue
        try:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(aside_of[rel], dest / rel)
        except OSError as e:
            problems.append(f"{dest / rel}: could not move the earlier version back ({e}); it is in {aside_of[rel]}")
    for made in reversed(record.get("made", [])):  # folders the replacement created, if left empty
        with contextlib.suppress(OSError):
            (dest / made if made != "." else dest).rmdir()
    return problems


def _restore_failed(folder: Path, dest: Path, problems: list[str]) -> DataError:
    for problem in problems:
        logger.error("%s", problem)
    return DataError(folder / _OLD, f"{len(problems)} file(s) of {dest} could not be put back after its replacement "
                                    f"failed ({problems[0]}); the earlier files that are not back in {dest} are kept "
                                    "here: move them back by hand (the next run writing there also tries again)")


def recover_replacements(dest: str | os.PathLike) -> list[Path]:
    """Finish what :func:`replace_files` runs on ``dest`` that were killed outright (``SIGKILL``, a power cut) left.

    A stale replacement folder (hidden, :func:`is_temp_name`, next to ``dest`` or inside it; its lock not held by a
    live process) is rolled back if its record says it was moving files (the new files it moved in are removed and
    the old ones moved back, so ``dest`` holds the old set whole), then deleted; one killed while its writer was
    still staging files is just deleted. Called by :func:`replace_files` and, before they check ``dest``, by the
    commands that use it (what they refuse or keep then reflects the old set, not a half-replaced one). A
    replacement another process is running (its lock held) is left alone. Windows has no ``flock`` here: every
    replacement folder is taken as stale, so two commands must not write one folder at once there.

    Returns:
        the replacement folders recovered and removed.

    Raises:
        DataError: a roll-back could not move every old file back (the folder, named, is kept: move them back by
            hand), or a record cannot be read.
    """
    dest = Path(dest).resolve()
    done = []
    for parent in (dest.parent, dest):
        try:
            entries = sorted(parent.iterdir())
        except OSError:  # missing or unreadable: nothing of ours there
            continue
        for folder in entries:
            if not (is_temp_name(folder.name) and folder.is_dir() and not folder.is_symlink()):
                continue
            if not (folder / _LOCK).exists():  # killed before its lock file was in place (or not ours)
                with contextlib.suppress(OSError):
                    if (folder.name.startswith(f".{dest.name}{TEMP_MARKER}") and time.time() - folder.stat().st_mtime > 60
                            and all(p.name == f"{_LOCK}.part" for p in folder.iterdir())):
                        shutil.rmtree(folder)
                continue
            recorded = _lock_dest(folder)
            if recorded is None and not folder.name.startswith(f".{dest.name}{TEMP_MARKER}"):
                continue
            if recorded is not None and not _same_dest(recorded, dest):
                continue  # another destination's (a sibling folder's)
            fd = _try_lock(folder / _LOCK)
            if fd is None:
                logger.info("%s: left alone, another process is replacing files in %s with it", folder, dest)
                continue
            try:
                if (folder / _RECORD).exists():
                    try:
                        record = json.loads((folder / _RECORD).read_text(encoding="utf-8"))
                        record["new"], record["old"]  # noqa: B018 - both must be there
                    except (OSError, ValueError, KeyError, TypeError) as e:
                        raise DataError(folder / _RECORD, f"cannot read the record of an interrupted replacement of "
                                                          f"{dest} ({e}); move the files in {folder / _OLD} back "
                                                          f"into {dest} by hand, then delete {folder}") from e
                    problems = _roll_back(folder, dest, record)
                    if problems:
                        raise _restore_failed(folder, dest, problems)
                    logger.warning("%s: an earlier run was killed while replacing these files; moved the %d earlier "
                                   "file(s) back (from %s)", dest, len(record["old"]), folder)
                else:
                    logger.info("%s: removed the staging folder of a run that was interrupted", folder)
                _discard(folder)
                done.append(folder)
            finally:
                os.close(fd)
    return done


def _open_replacement(dest: Path) -> tuple[Path, int]:
    """Create a replacement folder for ``dest`` and hold its lock: next to ``dest`` (same file system), or inside
    ``dest`` where that is another file system (a mount point) or its parent cannot be written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    places = [dest.parent]
    if dest.is_dir():
        if os.stat(dest).st_dev != os.stat(dest.parent).st_dev:
            places = [dest]
        else:
            places.append(dest)
    token = secrets.token_hex(4)
    for i, place in enumerate(places):
        stem = dest.name
        name = f".{stem}{TEMP_MARKER}{token}"
        while len(os.fsencode(name)) > _name_max(place) and stem:
            stem = stem[:-1]
            name = f".{stem}{TEMP_MARKER}{token}"
        folder = place / name
        try:
            folder.mkdir()
            break
        except PermissionError:
            if i == len(places) - 1:
                raise
    try:
        # locked under another name, then renamed (the lock goes with the file): a lock file in place is never an
        # unlocked one of a live replacement that another run's clean-up could take for stale
        part = folder / f"{_LOCK}.part"
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"dest": str(dest.resolve()), "pid": os.getpid()}).encode("utf-8"))
        os.rename(part, folder / _LOCK)
        (folder / _NEW).mkdir()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, fd


def _commit(folder: Path, dest: Path, old: Iterable[str | os.PathLike], last: str | os.PathLike | None,
            hint: str | None) -> None:
    """Move the staged set into ``dest`` in place of ``old`` (see :func:`replace_files`)."""
    staging = folder / _NEW
    try:
        new = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if not p.is_dir() or p.is_symlink())
        if last is not None:
            last = _rel(last)
            if last not in new:
                raise ValueError(f"{last!r} (to move in last) is not in the staged set")
            new = [rel for rel in new if rel != last] + [last]
        wanted = list(dict.fromkeys(_rel(rel) for rel in old))
        if last in wanted:  # the index leaves first and comes back last
            wanted = [last] + [rel for rel in wanted if rel != last]
        old = [rel for rel in wanted if os.path.lexists(dest / rel) and (not (dest / rel).is_dir() or
                                                                           (dest / rel).is_symlink())]
        made = []  # the folders the new files need that are not there yet, outermost first
        for rel in new:
            parents = [p for p in reversed(Path(rel).parents)][1:]  # without "."
            for p in [Path("."), *parents]:
                if p.as_posix() not in made and not (dest / p).exists():
                    made.append(p.as_posix())
        record = {"dest": str(dest.resolve()), "new": new, "old": old, "made": made}
        part = folder / f"{_RECORD}.part"
        with open(part, "w", encoding="utf-8") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(part, folder / _RECORD)  # the record appears whole or not at all (not os.replace: nothing is there)
        _fsync(folder)
    except BaseException:
        _discard(folder)
        raise
    try:
        for rel in old:
            (folder / _OLD / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(dest / rel, folder / _OLD / rel)
        for rel in new:
            if os.path.lexists(dest / rel):  # appeared meanwhile (not one of ``old``): never overwritten
                raise _exists(dest / rel, hint)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, dest / rel)
        for changed in dict.fromkeys((dest / rel).parent for rel in (*old, *new)):
            _fsync(changed)  # the renames on disk before the record goes
    except BaseException as error:
        try:
            problems = _roll_back(folder, dest, record)
        except BaseException:  # a second Ctrl-C: the record stays, the next run finishes the roll-back
            logger.error("%s: interrupted while putting the earlier files back; they are kept in %s and the next run "
                         "writing %s moves them back", dest, folder / _OLD, dest)
            raise
        if problems:
            raise _restore_failed(folder, dest, problems) from error
        _discard(folder)
        raise
    _discard(folder)


@contextmanager
def replace_files(dest: str | os.PathLike, old: Iterable[str | os.PathLike] = (), last: str | os.PathLike | None = None,
                  hint: str | None = None) -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends, the files written there replace ``old`` in ``dest``, all or
    nothing.

    ::

        with replace_files(out_dir, old=["index.csv", *earlier_files], last="index.csv") as staging:
            ...write the complete new set under staging (same relative paths as in out_dir)...

    When the block returns, every file under the staging folder goes to the same relative path in ``dest``:
    first the files of ``old`` that exist (relative paths: the earlier set this one replaces, including files no
    longer part of it; missing ones are skipped) are moved aside into a hidden folder, then the new files are
    moved in, ``last`` (the index naming the others: ``datalist.json``, ``slices.csv``, ``split.csv``) last; the
    set-aside files are deleted after that. Other files in ``dest`` are left alone, and a new file whose name is
    taken by a file not in ``old`` (one that appeared meanwhile) is refused (:class:`~mednet.errors.DataError`,
    "output already exists"; ``hint`` the advice) rather than overwritten. Each move is one ``os.replace`` (the
    staging folder is next to ``dest``, on its file system, or inside ``dest`` where ``dest`` is a mount point),
    so ``dest`` never holds a partly written file.

    **On failure** — an exception in the block (nothing has moved: the staging folder is deleted), or any
    exception while files move, Ctrl-C (``KeyboardInterrupt``) and a refused name included — the new files moved
    in are removed and the old ones moved back, so ``dest`` holds the old set exactly as it was; the hidden folder
    is deleted once everything is back, and the exception re-raised. If a file cannot be put back, the hidden
    folder is kept with those files and :class:`~mednet.errors.DataError` names it and says to move them back by
    hand. A second Ctrl-C during that roll-back leaves it to the next run (below).

    **When killed outright** (``SIGKILL``, the OOM killer, a power cut) the hidden folder
    ``.<dest name>.tmp-<8 hex>`` stays next to ``dest``, with a record of the moves once they began. The next
    :func:`replace_files` on ``dest`` — and the commands using it, as they start — calls
    :func:`recover_replacements`: it rolls an interrupted replacement back (``dest`` gets the old set whole
    again) and deletes the folder; a run killed while still staging leaves a folder that is just deleted. The name
    matches :func:`is_temp_name`, so listings that skip temporary files skip it too.

    Durability: the folders files moved into or out of are flushed (``fsync``) once, after the last move, not once
    per file (10,000 DermaMNIST PNGs would take 10,000 flushes); the record of the moves is flushed before the
    first. The staged files themselves are not flushed here: a writer whose files must survive a power cut writes
    them through :func:`atomic_path` (which flushes each), as the demo cohort does for its volumes.

    Args:
        dest: the folder the set lives in (created if missing).
        old: relative paths, in ``dest``, of the files the new set retires.
        last: relative path of the staged file to move in last (it must be staged).
        hint: the advice of the "output already exists" refusal; default "choose another path or pass --overwrite".

    Raises:
        DataError: a new file's name is taken by a file not in ``old``; old files could not be put back after a
            failure (naming the folder that keeps them); a stale replacement of ``dest`` could not be recovered.
    """
    dest = Path(dest).resolve()  # where the hidden folder goes, whatever the working folder does meanwhile
    recover_replacements(dest)
    folder, fd = _open_replacement(dest)
    try:
        try:
            yield folder / _NEW
        except BaseException:
            _discard(folder)
            raise
        _commit(folder, dest, old, last, hint)
    finally:
        os.close(fd)  # releases the lock; a folder still there is now stale, for the next run to recover


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
