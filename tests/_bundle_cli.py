"""``python -m monai.bundle run`` of a mednet bundle config in a subprocess, as a user types it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mednet.app.bundles import config_file_argument

REPO = Path(__file__).resolve().parents[1]


def run_bundle_cli(bundle: str, config: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run job ``config`` (``train``, ``evaluate`` = inference.json + evaluate.json, ``inference``) of ``bundle``
    from the checkout root; with ``check`` a non-zero exit fails the test with the command's output tail."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file_argument(bundle, config), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    env.pop("MEDNET_TRACEBACK", None)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def bundle_error_line(bundle: str, config: str, **overrides: object) -> str:
    """The ``mednet error:`` line that ``python -m monai.bundle run`` prints for this job's error, from an in-process
    run (:func:`mednet.app.bundles.run_bundle`, the same configs, checks and error hook's choice of exception)
    instead of a subprocess: no interpreter start, ≈ 10 s less per case on 2 cores. One subprocess per config
    keeps the command-line path itself tested (tests/test_bundle_errors.py, the smoke paths)."""
    import pytest

    from mednet.app.bundles import run_bundle
    from mednet.bundle_support import error_line, user_error

    with pytest.raises(Exception) as info:
        run_bundle(bundle, config, **overrides)
    shown = user_error(info.value)
    assert shown is not None, f"a bug, not a user error: {info.value!r}"
    return error_line(shown)


def command_in_process(fn, *args: str) -> subprocess.CompletedProcess:
    """``python -m <module of fn> ARGS`` for a :func:`mednet.cli.run_cli` command, run in this process: the same
    flag check, error line and exit status (2 for a user error), without an interpreter start (≈ 10 s on 2 cores).
    One real subprocess per command keeps the ``python -m`` entry itself tested."""
    import contextlib
    import io
    from unittest import mock

    from mednet.cli import run_cli

    out, err, code = io.StringIO(), io.StringIO(), 0
    with mock.patch.object(sys, "argv", [fn.__module__, *args]), mock.patch.dict(os.environ), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        os.environ.pop("MEDNET_TRACEBACK", None)
        try:
            run_cli(fn)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess([fn.__module__, *args], code, out.getvalue(), err.getvalue())
