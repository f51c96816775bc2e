"""Running mednet's MONAI bundles from Python, exactly as ``python -m monai.bundle run`` would."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from monai.bundle import ConfigWorkflow

__all__ = ["repo_root", "bundle_config", "run_bundle"]


def repo_root() -> Path:
    """The checkout holding ``bundles/`` (bundle configs use paths relative to it)."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (candidate / "bundles" / "common" / "runtime.json").is_file():
            return candidate
    raise FileNotFoundError("cannot find the mednet checkout (a folder with bundles/common/runtime.json); run from it")


def bundle_config(bundle: str, name: str) -> Path:
    """``bundles/<bundle>/configs/<name>.json`` of the checkout."""
    return repo_root() / "bundles" / bundle / "configs" / f"{name}.json"


@contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_bundle(bundle: str, config: str, **overrides: object) -> ConfigWorkflow:
    """Run ``config`` of ``bundle`` (initialize → run → finalize) with ``--key value`` overrides.

    Paths in ``overrides`` are made absolute first, since the bundle runs from the checkout root.
    Returns the finished workflow (its parsed content holds e.g. ``output_dir``).
    """
    root = repo_root()
    meta = root / "bundles" / bundle / "configs" / "metadata.json"
    logging_conf = root / "bundles" / bundle / "configs" / "logging.conf"
    with _cwd(root):
        wf = ConfigWorkflow(config_file=str(bundle_config(bundle, config)), meta_file=str(meta),
                            logging_file=str(logging_conf), workflow_type="train" if config == "train" else "infer",
                            **overrides)
        wf.initialize()
        wf.run()
        wf.finalize()
    return wf
