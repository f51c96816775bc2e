"""Replacing a set of files all or nothing: :func:`replace_files` and :func:`recover_replacements`.

A set of files that must change together (a cohort's volumes and its ``datalist.json``, slice files and
``slices.csv``, DermaMNIST's PNGs and ``split.csv``, a synthetic dermoscopy set and its metadata) is staged whole in
a hidden folder, then swapped in under a lock on the destination, with the earlier set moved back on any failure,
and moved back by the next run (:func:`recover_replacements`) if the process was killed outright in between.
Single files are written with :func:`mednet.io.atomic_path` instead. Hand-written: neither the standard library
nor MONAI has a multi-file transaction, and a half-replaced set (new images under an old label table) is silent
label corruption.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mednet.errors import DataError
from mednet.io import TEMP_MARKER, _exists, _fsync, _name_max, is_temp_name  # shared with the single-file writers

__all__ = ["replace_files", "recover_replacements"]

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------ replacing a set of files, all or nothing
try:  # advisory file locks: POSIX (Linux, macOS); Windows has none (see :func:`recover_replacements`)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: in a replacement's folder: created first and removed last, locked (``flock``) while its writer lives; it names
#: the destination
_LOCK = "replace.lock"
#: in a replacement's folder: written and flushed before the first file moves, removed once the new set is in place
#: (or the old set back): while it is there, the replacement is unfinished and must be rolled back — unless it says
#: ``"complete"`` (its removal after a successful replacement failed: the old set is garbage, nothing to undo)
_RECORD = "replacing.json"
#: in a replacement's folder: the new set, as the writer stages it; the old set, once moved aside
_NEW, _OLD = "new", "old"

_flock_warned = False


def _no_flock(path: Path, error: OSError) -> None:
    """``flock`` failed with something other than "held by another process" (``ENOSYS``/``ENOLCK`` on some network
    file systems, ``EBADF`` where NFS emulates it): go on without that lock, as on Windows; said once (debug)."""
    global _flock_warned
    if not _flock_warned:
        _flock_warned = True
        logger.debug("%s: file locks are not available here (%s); replacements go on without them, so two commands "
                     "must not write one folder at once", path, error)


def _rel(path: str | os.PathLike) -> str:
    """``path`` as a relative POSIX path inside the destination; a ValueError for an absolute path or ``..``."""
    rel = Path(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel == Path("."):
        raise ValueError(f"{path!r}: expected a relative path inside the destination folder")
    return rel.as_posix()


def _same_dest(recorded: object, dest: Path) -> bool:
    return isinstance(recorded, str) and os.path.normcase(recorded) == os.path.normcase(str(dest.resolve()))


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (two hard links, as a move by link + unlink leaves it midway)."""
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except OSError:
        return False


def _lock_dest(folder: Path) -> str | None:
    """The destination named by ``folder``'s lock file; None if there is none or it cannot be read."""
    try:
        return json.loads((folder / _LOCK).read_text(encoding="utf-8")).get("dest")
    except (OSError, ValueError, AttributeError):
        return None


def _read_record(folder: Path, dest: Path) -> dict | None:
    """``folder``'s record, None if it has none; unreadable or incomplete: a DataError."""
    try:
        record = json.loads((folder / _RECORD).read_text(encoding="utf-8"))
        if not record.get("complete"):
            record["new"], record["old"]  # noqa: B018 - both must be there
        return record
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(folder / _RECORD, f"cannot read the record of an interrupted replacement of {dest} ({e}); "
                                          f"move the files in {folder / _OLD} back into {dest} by hand, then delete "
                                          f"{folder}") from e


def _try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock; None if another process holds it (or it is gone).
    Without ``fcntl`` (Windows), or where ``flock`` fails otherwise than "held" (some network file systems), the
    file is only opened: nothing tells a live replacement from a stale one there."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held: only this says so (as in mednet.runs)
            os.close(fd)
            return None
        except OSError as e:
            _no_flock(path, e)
    return fd


@contextmanager
def _dest_locked(dest: Path) -> Iterator[bool]:
    """Hold the exclusive lock (``flock``, blocking) of the folder ``dest`` itself, creating it if missing; yields
    whether this call created it.

    Every commit of a replacement and every recovery of ``dest`` runs under it, so they run one after the other: a
    commit never moves files while another one (or a roll-back) is half done, and each sees the files the one
    before left. Commits are short (renames), so waiting is the right answer. Locking the folder rather than a lock
    file next to it leaves nothing behind and works where the hidden folder goes inside ``dest`` (a mount point).
    A roll-back may remove a ``dest`` its replacement created, under a waiter's feet: a lock then taken on the
    removed folder is retried on the new one.
    """
    for _ in range(1000):
        created = False
        try:
            dest.mkdir(parents=True)
            created = True
        except FileExistsError:
            pass
        fd = None
        if fcntl is not None:
            try:
                fd = os.open(dest, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except FileNotFoundError:
                continue  # removed meanwhile: again
            except OSError:  # unreadable, or not a folder: the commit itself reports what is wrong
                pass
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BlockingIOError as e:  # pragma: no cover - a blocking flock does not say so
                os.close(fd)
                raise DataError(dest, f"could not lock ({e})") from e
            except OSError as e:
                _no_flock(dest, e)
            except BaseException:  # Ctrl-C while waiting
                os.close(fd)
                raise
            else:
                try:
                    current = os.path.samestat(os.fstat(fd), os.stat(dest))
                except OSError:
                    current = False
                if not current:  # locked a folder removed meanwhile
                    os.close(fd)
                    continue
        try:
            yield created
        finally:
            if fd is not None:
                os.close(fd)
        return
    raise DataError(dest, "could not lock: the folder keeps being removed and created again")  # pragma: no cover


def _flush_files(folder: Path, rels: Iterable[str]) -> None:
    """Put the staged files' contents on disk before the record of their moves is written.

    Needed because the old set is moved aside first: every new file is then renamed onto a free name, where ext4's
    flush-on-replace does not apply, and a power cut soon after success could leave zero-length new files with the
    old set deleted. One ``syncfs`` of ``folder``'s file system (Linux; ``sync`` where that call is missing: both
    wait for the writes there) instead of one ``fsync`` per file: 10,000 DermaMNIST PNGs would take 10,000 flushes.
    Elsewhere (macOS's ``sync`` only schedules the writes; Windows has none) each file is flushed.
    """
    if sys.platform.startswith("linux"):
        fd = os.open(folder, os.O_RDONLY)
        try:
            if _syncfs is not None and _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
        os.sync()
        return
    for rel in rels:
        if not (folder / rel).is_symlink():
            _fsync(folder / rel)


def _load_syncfs():
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (ImportError, OSError, AttributeError):  # no ctypes, no libc symbol (old glibc, musl builds)
        return None


_syncfs = _load_syncfs() if sys.platform.startswith("linux") else None


def _write_record(folder: Path, record: dict, over: bool = False) -> None:
    """Write ``folder``'s record whole (a flushed file renamed into place: ``os.rename``, nothing is there, or
    ``os.replace`` ``over`` an earlier record) and flush the folder."""
    part = folder / f"{_RECORD}.part"
    with open(part, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    (os.replace if over else os.rename)(part, folder / _RECORD)
    _fsync(folder)


def _discard(folder: Path, complete: bool = False) -> None:
    """Delete a replacement's folder whose old set is no longer needed: the record first (then it is garbage to
    every later run, whatever is left of it), the lock file last (what names it as ours). A record that cannot be
    removed keeps everything, unless it says ``complete`` (nothing in the folder is needed then: all but the record
    and the lock file go)."""
    try:
        (folder / _RECORD).unlink(missing_ok=True)
    except OSError as e:
        logger.warning("%s: could not remove (%s)", folder / _RECORD, e)
        if not complete:
            return  # keep everything: the record still says the old files are needed
        keep = {_RECORD, _LOCK}
    else:
        _fsync(folder)
        keep = {_LOCK}
    try:
        entries = [p for p in folder.iterdir() if p.name not in keep]
    except OSError:
        entries = []
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    if _RECORD in keep:
        return
    with contextlib.suppress(OSError):
        (folder / _LOCK).unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _complete(folder: Path, dest: Path) -> None:
    """A replacement succeeded: make that durable before anything of its folder goes — its record removed (then
    flushed), or, where it cannot be removed, rewritten as ``complete`` — so no later run ever rolls a completed
    replacement back."""
    try:
        (folder / _RECORD).unlink(missing_ok=True)
    except OSError as e:
        try:
            _write_record(folder, {"dest": str(dest), "complete": True}, over=True)
        except OSError:
            raise DataError(folder, f"the replacement of the files in {dest} is complete, but its record "
                                    f"{_RECORD} here could not be removed ({e}); delete this folder by hand before "
                                    f"the next run writing {dest}, which would otherwise put the earlier files "
                                    "back") from e
        logger.warning("%s: could not remove the record of a completed replacement (%s); marked it complete", folder, e)
        return
    _fsync(folder)


#: what ``os.link`` fails with on a file system without hard links (FAT, exFAT, some FUSE and network mounts)
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}


def _link_to_free(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, which must be free (an old file put back): ``os.link`` (refused with
    ``FileExistsError`` if ``dst`` exists: no gap between a check and the move for another writer to slip into)
    then ``os.unlink``. A kill in between leaves one file under both names; the roll-back recognises that
    (:func:`_same_file`). Where the file system has no hard links: a check, then ``os.replace`` — under the
    destination's lock no other replacement can write there meanwhile, only a program that takes no lock."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except (OSError, NotImplementedError) as e:
        if isinstance(e, OSError) and e.errno not in _NO_LINKS:  # a real failure (no space, …): the caller's
            raise
        if os.path.lexists(dst):
            raise FileExistsError(17, "File exists", str(dst)) from None
        os.replace(src, dst)
        return
    os.unlink(src)


def _roll_back(folder: Path, dest: Path, record: dict, keep_dest: bool = False) -> list[str]:
    """Take out the new files a replacement moved into ``dest`` and move the old ones back; the problems, if any.

    Works from what is on disk, so it serves a failing replacement, a later run recovering from a killed one, and
    a roll-back that was itself interrupted: a new file is in ``dest`` when it is no longer in the staging folder
    (``os.replace`` moves a file whole or not at all), an old one still to restore when it is in the aside folder
    (put back by a link then an unlink: a file under both names is back). A new file whose old version is no longer aside (or is the same file
    again) is left alone: that name holds the old file again (put back by an earlier roll-back, or by hand). An old
    file is never put back over a file that took its name meanwhile (kept aside, reported). The folders touched are
    flushed before returning, so the record (removed next) never outlives the moves it describes on disk.
    ``keep_dest``: never remove ``dest`` itself (the caller holds it locked and removes it if it must).
    """
    new, old = list(record["new"]), list(record["old"])
    aside_of = {rel: folder / _OLD / rel for rel in old}
    problems = []
    for rel in reversed(new):
        if os.path.lexists(folder / _NEW / rel):  # never moved in
            continue
        if rel in aside_of and (not os.path.lexists(aside_of[rel]) or _same_file(aside_of[rel], dest / rel)):
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
            try:
                _link_to_free(aside_of[rel], dest / rel)
            except FileExistsError:
                if not _same_file(aside_of[rel], dest / rel):
                    raise
                aside_of[rel].unlink()  # back already (killed between the link and the unlink)
        except FileExistsError:
            problems.append(f"{dest / rel}: could not move the earlier version back (another file has taken the "
                            f"name); it is in {aside_of[rel]}")
        except OSError as e:
            problems.append(f"{dest / rel}: could not move the earlier version back ({e}); it is in {aside_of[rel]}")
    made = [m for m in record.get("made", []) if not (keep_dest and m == ".")]
    for m in reversed(made):  # folders the replacement created, if left empty
        with contextlib.suppress(OSError):
            (dest / m if m != "." else dest).rmdir()
    for changed in dict.fromkeys([*((dest / rel).parent for rel in (*new, *old)),
                                  *((dest / m).parent for m in made)]):
        _fsync(changed)
    return problems


def _restore_failed(folder: Path, dest: Path, problems: list[str]) -> DataError:
    for problem in problems:
        logger.error("%s", problem)
    return DataError(folder / _OLD, f"{len(problems)} file(s) of {dest} could not be put back after its replacement "
                                    f"failed ({problems[0]}); the earlier files that are not back in {dest} are kept "
                                    "here: move them back by hand (the next run writing there also tries again)")


def _ours(folder: Path, dest: Path) -> bool | None:
    """Whether the hidden folder ``folder`` is a replacement folder of ``dest``: True if its lock file names
    ``dest``; without a readable lock file, if its name is ``dest``'s and its record (if any) names ``dest`` (a
    folder inside ``dest`` may be that of ``dest/<same name>``); None for a folder with no lock file yet (or no
    more) named after ``dest``, False otherwise."""
    named = folder.name.startswith(f".{dest.name}{TEMP_MARKER}")
    if not (folder / _LOCK).exists():
        return None if named else False
    recorded = _lock_dest(folder)
    if recorded is not None:
        return _same_dest(recorded, dest)
    if not named:
        return False
    try:
        record = json.loads((folder / _RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return True  # staging only: nothing to undo, whose ever it is
    except (OSError, ValueError):
        return True  # unreadable: reported by the recovery
    return not isinstance(record, dict) or "dest" not in record or _same_dest(record["dest"], dest)


def _candidates(dest: Path) -> list[tuple[Path, bool | None]]:
    """The hidden replacement folders of ``dest``, next to it and inside it, with :func:`_ours`'s answer."""
    found = []
    for parent in (dest.parent, dest):
        try:
            entries = sorted(parent.iterdir())
        except OSError:  # missing or unreadable: nothing of ours there
            continue
        for folder in entries:
            if is_temp_name(folder.name) and folder.is_dir() and not folder.is_symlink():
                ours = _ours(folder, dest)
                if ours is not False:
                    found.append((folder, ours))
    return found


def _remove_unborn(folder: Path) -> bool:
    """Remove a replacement folder killed before its lock file was in place or after it was removed: empty, or
    holding only the lock file being made (``replace.lock.part``) and that one unlocked.

    Removed at once (the 60 s once waited here protected a folder another process creates right now, between its
    ``mkdir`` and the lock file's rename): a part file being made is locked by its creator and left alone; a
    creator that finds its folder gone (or its part file locked by this clean-up) starts again with a new folder
    (:func:`_open_replacement`)."""
    try:
        entries = [p.name for p in folder.iterdir()]
    except OSError:
        return False
    if not entries:
        try:
            folder.rmdir()
        except OSError:  # a lock file appeared meanwhile: a live creator's
            return False
        return True
    if entries != [f"{_LOCK}.part"]:
        return False
    fd = _try_lock(folder / entries[0])
    if fd is None:  # its creator is alive
        return False
    try:
        (folder / entries[0]).unlink()
        folder.rmdir()
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _recover_locked(dest: Path, skip: Path | None = None) -> tuple[list[Path], bool]:
    """:func:`recover_replacements`' work, ``dest`` locked (:func:`_dest_locked`); also whether a replacement that
    created ``dest`` was rolled back (``dest`` is then left for the caller to remove, under its lock)."""
    done, made_dest = [], False
    for folder, ours in _candidates(dest):
        if folder == skip:
            continue
        if ours is None:  # no lock file
            if _remove_unborn(folder):
                done.append(folder)
            continue
        fd = _try_lock(folder / _LOCK)
        if fd is None:  # held: staging (a commit would hold ``dest``'s lock, which this process holds)
            logger.info("%s: left alone, another process is replacing files in %s with it", folder, dest)
            continue
        try:
            record = _read_record(folder, dest)
            if record is None:
                logger.info("%s: removed the staging folder of a run that was interrupted", folder)
            elif record.get("complete"):
                logger.info("%s: removed the folder of a completed replacement", folder)
            else:
                problems = _roll_back(folder, dest, record, keep_dest=True)
                if problems:
                    raise _restore_failed(folder, dest, problems)
                made_dest = made_dest or "." in record.get("made", [])
                logger.warning("%s: an earlier run was killed while replacing these files; moved the %d earlier "
                               "file(s) back (from %s)", dest, len(record["old"]), folder)
            _discard(folder, complete=bool(record and record.get("complete")))
            done.append(folder)
        finally:
            os.close(fd)
    return done, made_dest


def recover_replacements(dest: str | os.PathLike) -> list[Path]:
    """Finish what :func:`replace_files` runs on ``dest`` that were killed outright (``SIGKILL``, a power cut) left.

    A stale replacement folder (hidden, :func:`is_temp_name`, next to ``dest`` or inside it; its lock not held by a
    live process) is rolled back if its record says it was moving files (the new files it moved in are removed and
    the old ones moved back, so ``dest`` holds the old set whole), then deleted; one killed while its writer was
    still staging files, or after its replacement completed, is just deleted, and so is an empty one killed as it
    was created or deleted. Called by :func:`replace_files` and, before they check ``dest``, by the commands that
    use it (what they refuse or keep then reflects the old set, not a half-replaced one). A replacement another
    process is running (its lock held) is left alone. The work is done holding ``dest``'s own lock, so it waits for
    a replacement of ``dest`` that is moving files right now (a short wait) and never runs beside another recovery.
    Windows, and file systems where ``flock`` fails, have no locks here: every replacement folder is taken as stale,
    so two commands must not write one folder at once there.

    Returns:
        the replacement folders recovered and removed.

    Raises:
        DataError: a roll-back could not move every old file back (the folder, named, is kept: move them back by
            hand), or a record cannot be read.
    """
    dest = Path(dest).resolve()
    if not _candidates(dest):
        return []  # the usual case: nothing to lock, nothing created
    with _dest_locked(dest) as created:
        done, made_dest = _recover_locked(dest)
        if created or made_dest:  # not left behind by a recovery that had nothing to put there
            with contextlib.suppress(OSError):
                dest.rmdir()
                _fsync(dest.parent)
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
    for attempt in range(100):
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
        fd = None
        try:
            # locked under another name, then renamed (the lock goes with the file): a lock file in place is never an
            # unlocked one of a live replacement that another run's clean-up could take for stale
            part = folder / f"{_LOCK}.part"
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another run's clean-up took it for a dead creator's
                    raise FileNotFoundError(part) from None
                except OSError as e:
                    _no_flock(part, e)
            os.write(fd, json.dumps({"dest": str(dest.resolve()), "pid": os.getpid()}).encode("utf-8"))
            os.fsync(fd)  # the name of the destination survives a power cut with the lock file
            os.rename(part, folder / _LOCK)
            (folder / _NEW).mkdir()
        except FileNotFoundError:
            # an empty folder (or an unlocked part file) is what a killed run leaves: another run's clean-up removed
            # ours as we made it; start again with a new one
            if fd is not None:
                os.close(fd)
            shutil.rmtree(folder, ignore_errors=True)
            if attempt == 99:
                raise
            continue
        except BaseException:
            if fd is not None:
                os.close(fd)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder, fd
    raise AssertionError("unreachable")  # pragma: no cover


def _commit(folder: Path, dest: Path, old: Iterable[str | os.PathLike], last: str | os.PathLike | None,
            hint: str | None) -> None:
    """Move the staged set into ``dest`` in place of ``old`` (see :func:`replace_files`), holding ``dest``'s lock."""
    staging = folder / _NEW
    created = made_dest = False
    with contextlib.ExitStack() as locked:
        try:
            new = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")
                         if not p.is_dir() or p.is_symlink())
            if last is not None:
                last = _rel(last)
                if last not in new:
                    raise ValueError(f"{last!r} (to move in last) is not in the staged set")
                new = [rel for rel in new if rel != last] + [last]
            wanted = list(dict.fromkeys(_rel(rel) for rel in old))
            if last in wanted:  # the index leaves first and comes back last
                wanted = [last] + [rel for rel in wanted if rel != last]
            created = locked.enter_context(_dest_locked(dest))
            # a run killed while this one staged: its files out of the way first (what is "old" is decided after)
            _, made_dest = _recover_locked(dest, skip=folder)
            old = [rel for rel in wanted if os.path.lexists(dest / rel) and (not (dest / rel).is_dir() or
                                                                               (dest / rel).is_symlink())]
            made = ["."] if created or made_dest else []  # the folders the new files need that are not there yet
            for rel in new:
                for p in [p for p in reversed(Path(rel).parents)][1:]:  # outermost first, without "."
                    if p.as_posix() not in made and not (dest / p).exists():
                        made.append(p.as_posix())
            _flush_files(staging, new)  # the contents on disk before any name points at them
            record = {"dest": str(dest.resolve()), "new": new, "old": old, "made": made}
            _write_record(folder, record)  # appears whole or not at all, flushed before the first move
        except BaseException:
            if created or made_dest:  # nothing moved: no empty ``dest`` left behind
                with contextlib.suppress(OSError):
                    dest.rmdir()
            _discard(folder)
            raise
        try:
            for rel in old:
                (folder / _OLD / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(dest / rel, folder / _OLD / rel)
            for rel in new:
                # appeared meanwhile (not one of ``old``): never overwritten. A check, then the move: under
                # ``dest``'s lock no other replacement (the only writers of these sets) can take the name in between
                if os.path.lexists(dest / rel):
                    raise _exists(dest / rel, hint)
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, dest / rel)
            for changed in dict.fromkeys([*((dest / rel).parent for rel in (*old, *new)),
                                          *((dest / m).parent for m in made)]):
                _fsync(changed)  # the renames on disk before the record goes
        except BaseException as error:
            try:
                problems = _roll_back(folder, dest, record)
            except BaseException:  # a second Ctrl-C: the record stays, the next run finishes the roll-back
                logger.error("%s: interrupted while putting the earlier files back; they are kept in %s and the next "
                             "run writing %s moves them back", dest, folder / _OLD, dest)
                raise
            if problems:
                raise _restore_failed(folder, dest, problems) from error
            _discard(folder)
            raise
        _complete(folder, dest)  # under the lock: a recovery waiting for it sees a finished replacement
    _discard(folder, complete=True)


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
    "output already exists"; ``hint`` the advice) rather than overwritten — checked under ``dest``'s lock (below), so
    no other replacement can take the name between the check and the move; only a program that takes no lock
    could. Each move in or aside is one ``os.replace``; an old file is put back by ``os.link`` then ``os.unlink``
    (the link fails if the name is taken: never over a file that appeared meanwhile). The staging folder is next
    to ``dest``, on its file system, or inside ``dest`` where ``dest`` is a mount point or its parent cannot be
    written, so no move copies and ``dest`` never holds a partly written file.

    **Two runs at once**: staging needs no lock between them, but the moves (and any recovery) run holding an
    exclusive lock (``flock``) of the folder ``dest`` itself, so two replacements of one ``dest`` move their files
    one after the other — the later one takes the earlier one's files for what is there (``old`` names them, or
    its new files are refused as "output already exists") and never undoes them. Windows, and file systems where
    ``flock`` fails (some network mounts), have no such lock: there two commands must not write one folder at once.

    **On failure** — an exception in the block (nothing has moved: the staging folder is deleted), or any
    exception while files move, Ctrl-C (``KeyboardInterrupt``) and a refused name included — the new files moved
    in are removed and the old ones moved back, so ``dest`` holds the old set exactly as it was; the hidden folder
    is deleted once everything is back, and the exception re-raised. If a file cannot be put back, the hidden
    folder is kept with those files and :class:`~mednet.errors.DataError` names it and says to move them back by
    hand. A second Ctrl-C during that roll-back leaves it to the next run (below).

    **When killed outright** (``SIGKILL``, the OOM killer, a power cut) the hidden folder
    ``.<dest name>.tmp-<8 hex>`` stays next to ``dest`` (or inside it, where it was made there), with a record of
    the moves once they began. The next :func:`replace_files` on ``dest`` — and the commands using it, as they
    start — calls :func:`recover_replacements`: it rolls an interrupted replacement back (``dest`` gets the old set
    whole again) and deletes the folder; a run killed while still staging leaves a folder that is just deleted. The
    name matches :func:`is_temp_name`, so listings that skip temporary files skip it too. Once every new file is
    in, the record is removed (flushed) before anything else of the folder: if it cannot be, it is marked complete
    (a later run then just deletes the folder), and if that fails too a :class:`~mednet.errors.DataError` says the
    replacement is complete and names the folder to delete by hand.

    **Durability** (a power cut): the staged files are flushed before the record of the moves is written — the old
    set is moved aside first, so every new file is renamed onto a free name, where no file system flushes a file on
    rename (ext4 does only when a rename replaces a file), and without it a power cut soon after success could leave
    empty new files with the old set gone. On Linux one ``syncfs`` of the staging folder's file system (``sync``
    where that is missing) does it, not one ``fsync`` per file (10,000 DermaMNIST PNGs would take 10,000 flushes);
    elsewhere each file is flushed. The record is flushed before the first move; the folders files moved into or
    out of are flushed once, after the last move (or after a roll-back), before the record is removed.

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
    recover_replacements(dest)  # and again as the moves start, for a run killed while this one stages
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
