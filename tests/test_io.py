"""Atomic writes (:mod:`mednet.io`): temporary names that fit next to any legal target name, and the clean-up of
temporary files that interrupted writes left behind."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from mednet.io import (TEMP_MARKER, atomic_path, is_temp_name, remove_stale_temp_files, temp_name,
                       write_json_atomic)

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
