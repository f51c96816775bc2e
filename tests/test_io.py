"""Atomic writes (:mod:`mednet.io`): temporary names that fit next to any legal target name, the clean-up of
temporary files that interrupted writes left behind, and the all-or-nothing replacement of a set of files
(:func:`~mednet.io.replace_files`) under failures, Ctrl-C and SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from mednet.errors import DataError
from mednet.io import (TEMP_MARKER, atomic_path, is_temp_name, recover_replacements, remove_stale_temp_files,
                       replace_files, temp_name, write_json_atomic)

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
    """Record every os.replace as (kind, relative name), kind "aside" / "in" / "back"; raise ``error`` on the
    ``fail_at``-th move in, and an OSError when ``fail_restore_of`` is moved back."""
    real, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        src, dst = Path(src), Path(dst)
        kind = "in" if "new" in src.parts[-4:] else "back" if "old" in src.parts[-4:] else "aside"
        calls.append((kind, dst.name))
        if kind == "in" and sum(k == "in" for k, _ in calls) == fail_at:
            raise error
        if kind == "back" and dst.name == fail_restore_of:
            raise OSError("Permission denied")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
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
from mednet.io import replace_files
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


def test_only_replacement_folders_of_this_destination_are_cleaned(tmp_path: Path) -> None:
    """Hidden folders that merely look like leftovers (no lock file naming ``dest``: another tool's, another
    destination's) are kept; an empty one named after ``dest`` that a run killed at its very start left is removed."""
    dest = tmp_path / "out"
    foreign = tmp_path / ".out.tmp-deadbeef"
    (foreign / "new").mkdir(parents=True)
    (foreign / "new" / "x.bin").write_bytes(b"someone else's")
    empty = tmp_path / ".out.tmp-0123abcd"
    empty.mkdir()
    os.utime(empty, (0, 0))
    with replace_files(tmp_path / "other") as staging:  # a sibling destination's replacement, stale once killed
        (staging / "y.bin").write_bytes(b"y")
        sibling = staging.parent
        assert recover_replacements(dest) == [] and sibling.is_dir()
    assert recover_replacements(dest) == []
    assert (foreign / "new" / "x.bin").read_bytes() == b"someone else's" and not empty.exists()
