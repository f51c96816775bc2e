"""Running mednet's MONAI bundles from Python, exactly as ``python -m monai.bundle run`` would."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from monai.bundle import ConfigWorkflow

from mednet.bundle_support import install_error_hook
from mednet.overrides import check_overrides
from mednet.runs import command_overrides, held_locks, release_run_locks_since

__all__ = ["repo_root", "bundle_config", "bundle_config_files", "config_file_argument", "run_bundle", "CONFIG_BASES"]

#: configs that are overrides of another config of the same bundle (model-zoo style), merged after it
CONFIG_BASES = {"evaluate": ("inference",), "calibrate": ("inference",), "distill": ("train",)}


def repo_root() -> Path:
    """The checkout holding ``bundles/`` (bundle configs use paths relative to it)."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (candidate / "bundles" / "common" / "runtime.json").is_file():
            return candidate
    raise FileNotFoundError("cannot find the mednet checkout (a folder with bundles/common/runtime.json); run from it")


def bundle_config(bundle: str, name: str) -> Path:
    """``bundles/<bundle>/configs/<name>.json`` of the checkout."""
    return repo_root() / "bundles" / bundle / "configs" / f"{name}.json"


def bundle_config_files(bundle: str, name: str) -> list[Path]:
    """The config files that make up job ``name``, in merge order: ``evaluate`` → ``[inference.json, evaluate.json]``."""
    return [bundle_config(bundle, n) for n in (*CONFIG_BASES.get(name, ()), name)]


def config_file_argument(bundle: str, name: str) -> str:
    """The ``--config_file`` value of job ``name``: one path, or MONAI's list form ``"['a.json','b.json']"``."""
    files = bundle_config_files(bundle, name)
    return str(files[0]) if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"


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

    The overrides are checked first (:func:`mednet.overrides.check_overrides`, the check ``python -m monai.bundle
    run`` gets from the bundle's ``initialize``, which cannot see them here): an unknown name or a bad value
    raises :class:`mednet.overrides.OptionError` before anything is read. The bundle runs from the checkout root,
    so relative paths in ``overrides`` are relative to it: pass absolute paths. Returns the finished workflow
    (its parsed content holds e.g. ``output_dir``).

    For the run's duration the bundle's error hook and ``SIGTERM`` handling are in place
    (:func:`mednet.bundle_support.install_error_hook`, which the bundle's ``initialize`` would otherwise install
    for good); they are undone when it ends, however it ends, so the caller's own later errors keep their
    tracebacks. Errors reach the caller as exceptions.
    """
    root = repo_root()
    meta = root / "bundles" / bundle / "configs" / "metadata.json"
    logging_conf = root / "bundles" / bundle / "configs" / "logging.conf"
    config_file = [str(f) for f in bundle_config_files(bundle, config)]
    restore = install_error_hook()  # before initialize's own call, which is then a no-op; undone below
    locks = held_locks()
    try:
        with _cwd(root), command_overrides(overrides):  # for the run's settings.json (nested overrides)
            check_overrides(config_file, overrides)
            wf = ConfigWorkflow(config_file=config_file, meta_file=str(meta), logging_file=str(logging_conf),
                                workflow_type="train" if config == "train" else "infer", **overrides)
            wf.initialize()
            wf.run()
            wf.finalize()
    finally:
        release_run_locks_since(locks)  # a failed run's folder is not kept locked for the rest of the process
        restore()
    return wf
