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
