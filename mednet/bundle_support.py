"""Glue that MONAI bundle configs call: clear errors, run banners, metric selection, input listing.

MONAI wraps any exception raised while a config is instantiated in ``RuntimeError("Failed to instantiate
…")`` chains printed as long tracebacks. :func:`install_error_hook` (called first in every mednet bundle's
``initialize``) prints the root cause instead when it is a user-facing input problem (:class:`DataError`,
an unknown option ``ValueError``, a missing file): one line naming the file and the problem. Set
``MEDNET_TRACEBACK=1`` to get the full traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from mednet.data.errors import DataError

__all__ = ["install_error_hook", "root_cause", "select_metrics", "list_inputs", "report_paths"]

logger = logging.getLogger("mednet")

_USER_ERRORS = (DataError, ValueError, FileNotFoundError, KeyError)
_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")


def root_cause(exc: BaseException) -> BaseException:
    """Follow ``__cause__`` / ``__context__`` to the first exception raised."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def install_error_hook() -> None:
    """Print user-facing input errors as one clear line instead of a MONAI/Ignite traceback."""
    if os.environ.get("MEDNET_TRACEBACK"):
        return
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        cause = root_cause(exc)
        if isinstance(cause, _USER_ERRORS):
            print(f"mednet error: {cause}", file=sys.stderr)
            print("(set MEDNET_TRACEBACK=1 for the full traceback)", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    sys.excepthook = hook


def select_metrics(metrics: Mapping, include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> dict:
    """Sub-dict of ``metrics`` (e.g. the one key metric, or all the others) for MONAI workflow arguments."""
    exclude = set(exclude)
    keys = list(include) if include is not None else [k for k in metrics if k not in exclude]
    return {k: metrics[k] for k in keys}


def list_inputs(input: str | os.PathLike, mask: str | os.PathLike | None = None, split: str = "test") -> list[dict]:
    """Volumes to segment: a file, a DICOM series folder, a folder of volumes, or a datalist JSON.

    Returns ``[{"image": path[, "mask": path]}, …]``. A folder holding ``.dcm`` files is one DICOM series; a
    folder of image files gives one item per file (and per DICOM sub-folder). For a datalist, ``split`` is
    read (labels, if present, are ignored by inference).
    """
    from mednet.data.datalist import load_datalist

    path = Path(input)
    if not path.exists():
        raise DataError(path, "input does not exist")
    if path.suffix == ".json":
        return [{"image": it["image"], **({"mask": it["mask"]} if "mask" in it else {})} for it in load_datalist(path, split)]
    if path.is_dir() and not any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
        items = sorted(str(p) for p in path.iterdir() if p.name.lower().endswith(_IMAGE_SUFFIXES) or
                       (p.is_dir() and any(q.suffix.lower() == ".dcm" for q in p.iterdir())))
        if not items:
            raise DataError(path, f"no volumes ({', '.join(_IMAGE_SUFFIXES)} or DICOM folders) found")
        if mask is not None:
            raise DataError(mask, "--mask applies to a single input volume, not a folder (use a datalist with 'mask' entries)")
        return [{"image": p} for p in items]
    return [{"image": str(path), **({"mask": str(mask)} if mask else {})}]


def report_paths(output_dir: str | os.PathLike, what: str = "report") -> str:
    """Log and return a one-line pointer to a run's outputs (the last thing a bundle prints)."""
    msg = f"mednet: {what} written to {Path(output_dir).resolve()}"
    logger.info(msg)
    print(msg, flush=True)
    return msg
