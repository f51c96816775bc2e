"""A run of :func:`mednet.file_sets.replace_files` killed outright (SIGKILL) while its new files move in, for the
tests of the commands that replace file sets (slices, demo cohort, DermaMNIST): they check that the next run puts
the earlier set back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: replaces ``dest``'s files ``names`` (other bytes) and kills itself once ``kill_at`` new files are in place
_SCRIPT = """
import os, signal, sys
from pathlib import Path
from mednet.file_sets import replace_files
dest, kill_at, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
real, moved = os.replace, []
def replace(src, dst):
    if "new" in Path(src).parts[-4:]:  # a staged file moving in
        moved.append(dst)
        if len(moved) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
with replace_files(dest, old=names, last=names[-1]) as staging:
    for name in names:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(b"half-replaced")
"""


def kill_while_moving_in(dest: Path, names: list[str], kill_at: int) -> subprocess.CompletedProcess:
    """Run the replacement of ``dest``'s ``names`` (the last one moved in last) in a subprocess that SIGKILLs
    itself after ``kill_at`` files; returns the finished process (return code -9)."""
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", _SCRIPT, str(dest), str(kill_at), *names], cwd=repo,
                          capture_output=True, text=True, timeout=300)
