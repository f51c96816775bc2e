"""Atomic writes (:mod:`mednet.io`): temporary names that fit next to any legal target name, the clean-up of
temporary files that interrupted writes left behind, and the all-or-nothing replacement of a set of files
(:func:`mednet.file_sets.replace_files`) under failures, Ctrl-C and SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

import mednet.file_sets as file_sets
from mednet.errors import DataError
from mednet.file_sets import recover_replacements, replace_files
from mednet.io import TEMP_MARKER, atomic_path, is_temp_name, remove_stale_temp_files, temp_name, write_json_atomic

NAME_MAX = 255  # ext4 / tmpfs / XFS: the file systems the tests run on


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TEMP_MARKER in p.name)


@pytest.mark.parametrize("name", [
    "a" * 245 + ".json",                       # 250 bytes: the temporary name would have been 264
    "é" * 122 + "ab.nii.gz",                   # 253 bytes of two-byte characters, a two-part suffix
    "b" * 255,                                 # the longest legal name, no suffix
])
def test_a_target_name_near_the_length_limit_is_written(tmp_path: Path, name: str) -> None:
    """A legal file name of 241–255 bytes failed with ENAMETOOLONG: the temporary name adds 14 characters."""
    assert len(os.fsencode(name)) <= NAME_MAX
    tmp = temp_name(tmp_path / name)
    assert len(os.fsencode(tmp.name)) <= NAME_MAX and tmp.parent == tmp_path
    assert is_temp_name(tmp.name)  # still recognisable as a leftover
    if "." in name:
        assert tmp.name.endswith(name[name.index("."):])  # the suffix kept: writers pick the format by it
    path = write_json_atomic({"ok": 1}, tmp_path / name)
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": 1}
    assert _leftovers(tmp_path) == []


def test_short_names_keep_their_whole_stem(tmp_path: Path) -> None:
    tmp = temp_name(tmp_path / "model.pt")
    assert tmp.name.startswith(".model.tmp-") and tmp.suffix == ".pt" and is_temp_name(tmp.name)


def test_a_symlinked_target_is_replaced_by_a_file_and_the_linked_file_is_left_alone(tmp_path: Path) -> None:
    """What atomic_path's docstring says: the rename replaces the link itself."""
    real = tmp_path / "real.json"
    real.write_text("{}", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json_atomic({"x": 1}, link)
    assert not link.is_symlink() and json.loads(link.read_text(encoding="utf-8")) == {"x": 1}
    assert real.read_text(encoding="utf-8") == "{}"
    assert "symbolic link is replaced by a regular file" in " ".join(atomic_path.__doc__.split())


def test_stale_temporary_files_are_removed_and_nothing_else(tmp_path: Path, caplog) -> None:
    """Leftovers of writes killed outright (SIGKILL, power cut) match exactly the temp_name pattern; files that
    merely look similar, and anything in sub-folders (an evaluation being written), are kept."""
    stale = [".model.tmp-1a2b3c4d.pt", ".metrics.tmp-deadbeef.csv", ".sub-01_seg.tmp-00ff00ff.nii.gz",
             ".model.tmp-0123abcd", "..tmp-89abcdef.json", temp_name(tmp_path / ("c" * 250 + ".pt")).name]
    kept = ["model.pt", "notes.tmp-1a2b3c4d.txt", ".model.tmp-XYZXYZXY.pt", ".model.tmp-1a2b3c.pt",
            ".model.tmp-1A2B3C4D.pt", ".model.tmp-1a2b3c4d.pt.bak.old", "settings.json"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".dir.tmp-1a2b3c4d").mkdir()  # not a file: not one of ours
    (tmp_path / "eval-test-1").mkdir()
    (tmp_path / "eval-test-1" / ".metrics.tmp-1a2b3c4d.json").write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="mednet.io"):
        removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, ".dir.tmp-1a2b3c4d", "eval-test-1"])
    assert (tmp_path / "eval-test-1" / ".metrics.tmp-1a2b3c4d.json").is_file()
    for name in stale:
        assert f"{tmp_path / name}: removed the temporary file of a write that was interrupted" in caplog.text
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_every_temp_name_is_recognised(tmp_path: Path) -> None:
    for name in ("model.pt", "x.tar.gz", "a.b.c", "model", ".hidden", "sub-01_seg.nii.gz", "ü model.json"):
        assert is_temp_name(temp_name(tmp_path / name).name), name


# ------------------------------------------------------------------------ replace_files: a set of files, all or nothing
OLD_SET = {"index.csv": b"old index", "a/1.bin": b"old 1", "a/2.bin": b"old 2", "b/gone.bin": b"old, not in the new set"}
NEW_SET = {"index.csv": b"new index", "a/1.bin": b"new 1", "a/2.bin": b"new 2", "a/3.bin": b"new 3", "c/4.bin": b"new 4"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_set(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def _hidden(tmp_path: Path) -> list[str]:
    """Every staging / set-aside folder or temporary file left anywhere under ``tmp_path``."""
    return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if TEMP_MARKER in p.name)


def _replace(dest: Path, with_old: bool = True) -> None:
    with replace_files(dest, old=list(OLD_SET) if with_old else [], last="index.csv") as staging:
        _write_set(staging, NEW_SET)


def _moves_in(monkeypatch, fail_at: int | None = None, error: BaseException | None = None,
              fail_restore_of: str | None = None) -> list[tuple[str, str]]:
    """Record every move (os.replace, or the os.link that starts a move to a name that must be free) as (kind,
    relative name), kind "aside" / "in" / "back"; raise ``error`` on the ``fail_at``-th move in, and an OSError when
    ``fail_restore_of`` is moved back."""
    calls = []

    def recording(real):
        def move(src, dst, *args, **kwargs):
            src, dst = Path(src), Path(dst)
            kind = "in" if "new" in src.parts[-4:] else "back" if "old" in src.parts[-4:] else "aside"
            if dst.name != "replacing.json":  # not the record's own rename
                calls.append((kind, dst.name))
            if kind == "in" and sum(k == "in" for k, _ in calls) == fail_at:
                raise error
            if kind == "back" and dst.name == fail_restore_of:
                raise OSError("Permission denied")
            return real(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "replace", recording(os.replace))
    monkeypatch.setattr(os, "link", recording(os.link))
    return calls


def test_replace_files_swaps_the_set_index_last_and_keeps_other_files(tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "out"
    _write_set(dest, {**OLD_SET, "mine.txt": b"not part of any set"})
    calls = _moves_in(monkeypatch)
    _replace(dest)
    monkeypatch.undo()
    assert _tree(dest) == {**NEW_SET, "mine.txt": b"not part of any set"}  # b/gone.bin retired, mine.txt kept
    assert calls[0] == ("aside", "index.csv") and calls[-1] == ("in", "index.csv")  # the index leaves first, comes last
    assert [k for k, _ in calls] == ["aside"] * 4 + ["in"] * 5
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()], ids=["OSError", "Ctrl-C"])
@pytest.mark.parametrize("fail_at", [2, 5], ids=["second file", "index"])
@pytest.mark.parametrize("with_old", [True, False], ids=["over an old set", "new"])
def test_a_failure_while_moving_in_leaves_the_old_set_exactly(tmp_path: Path, monkeypatch, error, fail_at: int,
                                                              with_old: bool) -> None:
    """os.replace fails (or Ctrl-C arrives) on the n-th file moved in: the new files already in are taken out, the
    old ones put back byte for byte, folders the new set created are removed, and no hidden folder is left."""
    dest = tmp_path / "out"
    _write_set(dest, {**(OLD_SET if with_old else {}), "mine.txt": b"mine"})
    before = _tree(dest)
    calls = _moves_in(monkeypatch, fail_at=fail_at, error=error)
    with pytest.raises(type(error)):
        _replace(dest, with_old=with_old)
    monkeypatch.undo()
    assert sum(k == "in" for k, _ in calls) == fail_at
    assert _tree(dest) == before
    assert sorted(p.name for p in dest.iterdir()) == sorted({"mine.txt", *(("a", "b", "index.csv") if with_old else ())})
    assert _hidden(tmp_path) == []
    _replace(dest, with_old=with_old)  # nothing of the failed run is in the way of the next
    assert _tree(dest) == {**NEW_SET, "mine.txt": b"mine"}


def test_a_failure_in_the_block_moves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    _write_set(dest, OLD_SET)
    with pytest.raises(KeyboardInterrupt):
        with replace_files(dest, old=list(OLD_SET), last="index.csv") as staging:
            _write_set(staging, NEW_SET)
            raise KeyboardInterrupt
    assert _tree(dest) == OLD_SET and _hidden(tmp_path) == []


def test_a_name_taken_meanwhile_is_refused_not_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    _write_set(dest, {"a/3.bin": b"appeared meanwhile"})
    with pytest.raises(DataError, match=re.escape(str(dest / "a" / "3.bin")) + ": output already exists"):
        _replace(dest, with_old=False)
    assert _tree(dest) == {"a/3.bin": b"appeared meanwhile"} and _hidden(tmp_path) == []


def test_an_old_file_that_cannot_be_put_back_stays_in_the_named_folder(tmp_path: Path, monkeypatch, caplog) -> None:
    """The roll-back itself fails for one file: the hidden folder keeping it is not deleted, the error names it and
    says to move it back by hand; the next run on the folder (here recover_replacements) moves it back."""
    dest = tmp_path / "out"
    _write_set(dest, OLD_SET)
    _moves_in(monkeypatch, fail_at=3, error=OSError("No space left on device"), fail_restore_of="2.bin")
    with caplog.at_level(logging.ERROR, logger="mednet"), pytest.raises(DataError) as raised:
        _replace(dest)
    monkeypatch.undo()
    kept = Path(raised.value.path)
    assert kept.is_dir() and TEMP_MARKER in kept.parent.name and kept.parent.parent == tmp_path
    assert "move them back by hand" in str(raised.value) and str(dest / "a" / "2.bin") in str(raised.value)
    assert isinstance(raised.value.__cause__, OSError) and "No space left" in str(raised.value.__cause__)
    assert (kept / "a" / "2.bin").read_bytes() == b"old 2" and str(kept / "a" / "2.bin") in caplog.text
    assert _tree(dest) == {k: v for k, v in OLD_SET.items() if k != "a/2.bin"}  # no new file left in
    assert recover_replacements(dest) == [kept.parent]
    assert _tree(dest) == OLD_SET and _hidden(tmp_path) == []


_KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from mednet.file_sets import replace_files
dest, kill_at = Path(sys.argv[1]), int(sys.argv[2])
real, moved = os.replace, []
def replace(src, dst):
    if "new" in Path(src).parts[-4:]:
        moved.append(dst)
        if len(moved) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
with replace_files(dest, old={old!r}, last="index.csv") as staging:
    for rel, data in {new!r}.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
    if kill_at == 0:
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
@pytest.mark.parametrize("kill_at", [0, 3], ids=["while staging", "while moving in"])
def test_what_a_killed_run_left_is_cleaned_by_the_next(tmp_path: Path, kill_at: int, caplog) -> None:
    """A process killed outright (SIGKILL) leaves its hidden folder: killed while staging, the next run deletes it;
    killed with 2 new files moved in, the next run first puts the old set back (byte for byte), then replaces it."""
    import signal
    import subprocess
    import sys

    dest = tmp_path / "out"
    _write_set(dest, OLD_SET)
    script = _KILLED_RUN.format(old=list(OLD_SET), new=NEW_SET)
    proc = subprocess.run([sys.executable, "-c", script, str(dest), str(kill_at)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]
    assert len(left) == 1 and is_temp_name(left[0].name)
    if kill_at:
        assert _tree(dest) != OLD_SET  # half replaced
    with caplog.at_level(logging.INFO, logger="mednet"):
        assert recover_replacements(dest) == left
    assert _tree(dest) == OLD_SET and _hidden(tmp_path) == []
    assert ("moved the 4 earlier file(s) back" if kill_at else "removed the staging folder") in caplog.text
    _replace(dest)
    assert _tree(dest) == NEW_SET and _hidden(tmp_path) == []


def test_a_replacement_in_progress_is_not_taken_for_a_stale_one(tmp_path: Path) -> None:
    """Its lock is held: another run's clean-up (another process, or this one) leaves it alone."""
    dest = tmp_path / "out"
    with replace_files(dest) as staging:
        (staging / "x.bin").write_bytes(b"x")
        if os.name == "posix":
            assert recover_replacements(dest) == [] and (staging / "x.bin").is_file()
    assert _tree(dest) == {"x.bin": b"x"} and _hidden(tmp_path) == []


def _killed_while_moving(dest: Path, monkeypatch, old: dict[str, bytes] = OLD_SET) -> Path:
    """Leave what a run killed outright with 2 new files moved in leaves (in this process: its roll-back
    interrupted): ``dest`` half replaced, the hidden folder with its record, unlocked. Returns that folder."""
    _write_set(dest, old)
    _moves_in(monkeypatch, fail_at=3, error=OSError("killed"))
    monkeypatch.setattr(file_sets, "_roll_back", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _replace(dest, with_old=bool(old))
    monkeypatch.undo()
    assert _tree(dest) not in (old, NEW_SET)  # half replaced
    left = [p for place in (dest.parent, dest) for p in place.iterdir()
            if p.name.startswith(f".{dest.name}{TEMP_MARKER}") and (p / "replacing.json").is_file()]
    assert len(left) == 1
    return left[0]


def test_only_replacement_folders_of_this_destination_are_cleaned(tmp_path: Path, monkeypatch) -> None:
    """The destination named in a stale folder decides: a killed replacement of the sibling ``out2`` (a name
    sharing ``out``'s prefix, its folder unlocked) survives the recovery of ``out`` and is rolled back by that of
    ``out2``; a hidden folder named after ``dest`` with no lock file but files in it (another tool's) is kept."""
    dest, sibling = tmp_path / "out", tmp_path / "out2"
    stale = _killed_while_moving(sibling, monkeypatch, old={"index.csv": b"sibling's old index"})
    half = _tree(sibling)
    foreign = tmp_path / ".out.tmp-deadbeef"
    (foreign / "new").mkdir(parents=True)
    (foreign / "new" / "x.bin").write_bytes(b"someone else's")
    _write_set(dest, OLD_SET)
    assert recover_replacements(dest) == []
    assert _tree(dest) == OLD_SET and _tree(sibling) == half and (stale / "replacing.json").is_file()
    assert (foreign / "new" / "x.bin").read_bytes() == b"someone else's"
    assert recover_replacements(sibling) == [stale]
    assert _tree(sibling) == {"index.csv": b"sibling's old index"} and not stale.exists()
    assert _tree(dest) == OLD_SET


def test_a_folder_inside_dest_of_a_destination_with_the_same_name_is_not_taken_for_its_own(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    """``out/out``'s replacement folder lies in ``out`` and is named ``.out.tmp-…``, as ``out``'s own would be when
    made inside it. With its lock file unreadable (name matching the only clue left), the record's destination
    decides: the recovery of ``out`` leaves it, that of ``out/out`` rolls it back."""
    dest = tmp_path / "out"
    inner = dest / "out"
    stale = _killed_while_moving(inner, monkeypatch)
    assert stale.parent == dest
    (stale / "replace.lock").write_text("", encoding="utf-8")  # its content lost
    half = _tree(dest)
    assert recover_replacements(dest) == []
    assert _tree(dest) == half
    assert recover_replacements(inner) == [stale]
    assert _tree(inner) == OLD_SET and _hidden(tmp_path) == []


def test_two_replacements_of_one_folder_move_their_files_one_after_the_other(tmp_path: Path, monkeypatch) -> None:
    """A moved the old set aside and is about to move its files in when B (another thread: another lock holder,
    as another process would be) commits: B waits for A, then replaces A's set whole. Before, B went through,
    and A, finding B's file in its way, rolled back over B's set: a mix of both."""
    import fcntl
    import threading

    dest = tmp_path / "out"
    _write_set(dest, {"index.csv": b"old", "f1": b"old"})
    paused, go, b_waits, moves = threading.Event(), threading.Event(), threading.Event(), []
    real_replace, real_flock = os.replace, fcntl.flock

    def replace(src, dst, *args, **kwargs):
        if "new" in Path(src).parts[-4:]:  # a move in
            if threading.current_thread().name == "A" and not paused.is_set():
                paused.set()
                go.wait(10)
            moves.append((threading.current_thread().name, Path(dst).name))
        return real_replace(src, dst, *args, **kwargs)

    def flock(fd, op):
        if threading.current_thread().name == "B" and op == fcntl.LOCK_EX:  # blocking: a wait for the lock
            b_waits.set()
        return real_flock(fd, op)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(fcntl, "flock", flock)
    errors = {}

    def run(files: dict[str, bytes]) -> None:
        try:
            with replace_files(dest, old=["index.csv", "f1"], last="index.csv") as staging:
                _write_set(staging, files)
        except Exception as e:  # noqa: BLE001 - reported by the assertions
            errors[threading.current_thread().name] = e

    a = threading.Thread(target=run, name="A", args=({"index.csv": b"A", "f1": b"A"},))
    b = threading.Thread(target=run, name="B", args=({"index.csv": b"B", "f1": b"B", "f3": b"B"},))
    a.start()
    assert paused.wait(10)
    b.start()
    b_waits.wait(5)
    go.set()
    a.join(10)
    b.join(10)
    assert errors == {}
    assert _tree(dest) == {"index.csv": b"B", "f1": b"B", "f3": b"B"}
    assert [who for who, _ in moves] == ["A"] * 2 + ["B"] * 3
    assert _hidden(tmp_path) == []


def _taken_just_before(monkeypatch, target: Path, data: bytes = b"written by another program") -> None:
    """Another program writes ``target`` just before this one's move to it (any of the calls that could do it)."""
    for name in ("link", "replace", "rename"):
        real = getattr(os, name)

        def move(src, dst, *args, _real=real, **kwargs):
            if Path(dst) == target and not os.path.lexists(target):
                target.write_bytes(data)
            return _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, name, move)


def test_an_old_file_is_not_put_back_over_a_file_that_took_its_name(tmp_path: Path, monkeypatch) -> None:
    """Rolling back, the old ``a/2.bin`` finds its name taken (by a program taking no lock): that file is kept,
    the old one stays aside and the error names the folder keeping it."""
    dest = tmp_path / "out"
    _write_set(dest, OLD_SET)
    _moves_in(monkeypatch, fail_at=3, error=OSError("No space left on device"))
    _taken_just_before(monkeypatch, dest / "a" / "2.bin", b"theirs")
    with pytest.raises(DataError, match="another file has taken the name") as raised:
        _replace(dest)
    monkeypatch.undo()
    kept = Path(raised.value.path)
    assert (dest / "a" / "2.bin").read_bytes() == b"theirs" and (kept / "a" / "2.bin").read_bytes() == b"old 2"
    assert _tree(dest) == {**OLD_SET, "a/2.bin": b"theirs"}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names the flushed descriptors through /proc")
@pytest.mark.parametrize("fails", [False, True], ids=["success", "roll-back"])
def test_what_is_flushed_before_the_record_is_written_and_before_it_goes(tmp_path: Path, monkeypatch,
                                                                         fails: bool) -> None:
    """The staged files are on disk (one syncfs/sync: they move onto free names, which no file system flushes)
    before the record naming their moves is written; the lock file's content before its rename; the folders the
    files moved into or back to before the record is removed."""
    dest = tmp_path / "out"
    _write_set(dest, OLD_SET)
    events = []
    real_fsync, real_unlink = os.fsync, os.unlink
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(file_sets, "_syncfs", lambda fd: events.append(("sync",)) or 0)
    monkeypatch.setattr(os, "sync", lambda: events.append(("sync",)))
    monkeypatch.setattr(os, "unlink", lambda path, *a, **k: events.append(("unlink", str(path)))
                        or real_unlink(path, *a, **k))
    for name in ("replace", "rename", "link"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda src, dst, *a, _real=real, **k: events.append(("move", str(src), str(dst)))
                            or _real(src, dst, *a, **k))
    if fails:
        calls = _moves_in(monkeypatch, fail_at=3, error=OSError("No space left on device"))
        with pytest.raises(OSError):
            _replace(dest)
        assert _tree(dest) == OLD_SET and [k for k, _ in calls].count("back") == 4
    else:
        _replace(dest)
        assert _tree(dest) == NEW_SET
    monkeypatch.undo()

    def first(match) -> int:
        return next(i for i, e in enumerate(events) if match(e))

    def last(match) -> int:
        return max(i for i, e in enumerate(events) if match(e))

    lock_in = first(lambda e: e[0] == "move" and e[2].endswith("/replace.lock"))
    assert first(lambda e: e[0] == "fsync" and e[1].endswith("replace.lock.part")) < lock_in
    record_in = first(lambda e: e[0] == "move" and e[2].endswith("/replacing.json"))
    assert first(lambda e: e == ("sync",)) < record_in
    record_out = first(lambda e: e[0] == "unlink" and e[1].endswith("/replacing.json"))
    for folder in (dest, dest / "a"):
        assert last(lambda e: e[0] == "move" and Path(e[2]).parent == folder) < \
            last(lambda e, f=str(folder): e == ("fsync", f)) < record_out


def test_without_working_file_locks_replacements_go_on_as_on_windows(tmp_path: Path, monkeypatch, caplog) -> None:
    """flock failing with something other than "held" (ENOLCK, ENOSYS on some network file systems) is no
    error, and is not taken for a live replacement's lock either: a stale folder is recovered; said once."""
    import errno
    import fcntl

    dest = tmp_path / "out"
    stale = _killed_while_moving(dest, monkeypatch)

    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(file_sets, "_flock_warned", False)
    with caplog.at_level(logging.DEBUG, logger="mednet.file_sets"):
        assert recover_replacements(dest) == [stale]
        assert _tree(dest) == OLD_SET
        _replace(dest)
    assert _tree(dest) == NEW_SET and _hidden(tmp_path) == []
    assert caplog.text.count("file locks are not available here") == 1


def test_a_lock_held_by_another_process_is_what_keeps_a_folder(tmp_path: Path, monkeypatch) -> None:
    """BlockingIOError, and only it, says "held"."""
    import errno
    import fcntl

    dest = tmp_path / "out"
    stale = _killed_while_moving(dest, monkeypatch)
    real = fcntl.flock

    def flock(fd, op):
        if op & fcntl.LOCK_NB and os.readlink(f"/proc/self/fd/{fd}").endswith("replace.lock"):
            raise BlockingIOError(errno.EWOULDBLOCK, "held")
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    half = _tree(dest)
    assert recover_replacements(dest) == [] and _tree(dest) == half and stale.is_dir()


def test_a_completed_replacement_is_never_rolled_back(tmp_path: Path, monkeypatch, caplog) -> None:
    """The record of a successful replacement cannot be removed: it is marked complete, and the next run only
    deletes the folder (before, the failure was swallowed and the next run rolled the success back)."""
    dest = tmp_path / "out"
    _write_set(dest, OLD_SET)
    real = os.unlink

    def unlink(path, *args, **kwargs):
        if str(path).endswith("/replacing.json"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with caplog.at_level(logging.WARNING, logger="mednet.file_sets"):
        _replace(dest)
    monkeypatch.undo()
    assert _tree(dest) == NEW_SET and "marked it complete" in caplog.text
    left = [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]
    assert len(left) == 1 and json.loads((left[0] / "replacing.json").read_text(encoding="utf-8"))["complete"]
    assert recover_replacements(dest) == left
    assert _tree(dest) == NEW_SET and _hidden(tmp_path) == []


def test_a_record_that_can_be_neither_removed_nor_marked_is_reported(tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "out"
    _write_set(dest, OLD_SET)
    real_unlink, real_open = os.unlink, open

    def unlink(path, *args, **kwargs):
        if str(path).endswith("/replacing.json"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    def no_second_record(file, *args, **kwargs):
        if str(file).endswith("replacing.json.part") and os.path.exists(Path(file).with_name("replacing.json")):
            raise OSError(28, "No space left on device", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr("builtins.open", no_second_record)
    with pytest.raises(DataError, match="is complete, but its record") as raised:
        _replace(dest)
    monkeypatch.undo()
    assert _tree(dest) == NEW_SET
    assert TEMP_MARKER in Path(raised.value.path).name and "delete this folder by hand" in str(raised.value)


def test_an_empty_leftover_folder_is_removed_at_once_but_not_one_being_created(tmp_path: Path) -> None:
    """Inside ``dest`` (where the hidden folder goes for a mount point) an empty leftover made ``dest`` look
    non-empty for a minute; removed at once now. One holding a lock file being made, locked by its creator, is
    left alone, and removed once that creator is gone."""
    import fcntl

    dest = tmp_path / "out"
    dest.mkdir()
    (dest / ".out.tmp-0123abcd").mkdir()
    creating = dest / ".out.tmp-89abcdef"
    creating.mkdir()
    fd = os.open(creating / "replace.lock.part", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert recover_replacements(dest) == [dest / ".out.tmp-0123abcd"]
        assert [p.name for p in dest.iterdir()] == [creating.name]
    finally:
        os.close(fd)
    assert recover_replacements(dest) == [creating] and not any(dest.iterdir())


def test_a_folder_removed_as_it_is_created_is_made_again(tmp_path: Path, monkeypatch) -> None:
    """Another run's clean-up removes a replacement folder that is still empty: its creator starts again."""
    dest = tmp_path / "out"
    _write_set(dest, OLD_SET)
    real, removed = os.open, []

    def open_(path, flags, *args, **kwargs):
        if str(path).endswith("replace.lock.part") and not removed:
            removed.append(Path(path).parent)
            Path(path).parent.rmdir()
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    _replace(dest)
    monkeypatch.undo()
    assert removed and _tree(dest) == NEW_SET and _hidden(tmp_path) == []


def test_a_run_killed_while_this_one_staged_is_rolled_back_before_this_one_moves(tmp_path: Path, monkeypatch) -> None:
    """The recovery at the start of a replacement cannot see a run killed later, while this one stages for hours:
    the moves start with another recovery (under the destination's lock), so this set is never mixed with the
    killed one's, nor undone by a later roll-back of it."""
    dest = tmp_path / "out"
    ours = {"index.csv": b"ours", "a/1.bin": b"ours"}
    with replace_files(dest, old=[*OLD_SET, *NEW_SET], last="index.csv") as staging:
        _write_set(staging, ours)
        _killed_while_moving(dest, monkeypatch)
    assert _tree(dest) == ours and _hidden(tmp_path) == []
    assert recover_replacements(dest) == [] and _tree(dest) == ours
