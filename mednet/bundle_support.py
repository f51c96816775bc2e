"""Glue that MONAI bundle configs call: clear errors, run banners, metric selection, input listing.

MONAI wraps any exception raised while a config is instantiated in ``RuntimeError("Failed to evaluate …")``
chains, printed as 80–160-line tracebacks in which the useful line is buried. :func:`install_error_hook`
(called first in every mednet bundle's ``initialize``) prints one line instead, ``mednet error: <path>:
<problem>``, for the user-facing errors of :func:`user_error`. Set ``MEDNET_TRACEBACK=1`` to get the full
traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

from mednet.errors import DataError
from mednet.errors import OptionError

__all__ = ["install_error_hook", "user_error", "error_line", "root_cause", "select_metrics", 
           "report_paths"]

logger = logging.getLogger("mednet")

_USER_ERRORS = (DataError, OptionError)
_FALLBACK_ERRORS = (ValueError, FileNotFoundError)
_TRACEBACK_HINT = "(MEDNET_TRACEBACK=1 shows the traceback)"
_WORKER_ERROR = re.compile(  # a user error's last traceback line, as torch copies a DataLoader worker's traceback
    "^(?:" + "|".join(re.escape(f"{t.__module__}.{t.__qualname__}") for t in _USER_ERRORS) + r"): (.+)$", re.M)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or during (``__cause__`` / ``__context__``), innermost last."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def root_cause(exc: BaseException) -> BaseException:
    """Follow ``__cause__`` / ``__context__`` to the first exception raised."""
    *_, first = _chain(exc)
    return first


def user_error(exc: BaseException) -> BaseException | None:
    """The exception of ``exc``'s chain to show the user as one line, or None for a bug (full traceback).

    The **outermost** :class:`DataError` / :class:`OptionError`: mednet raises those *from* the low-level error
    (``EOFError``, ``UnpicklingError``, ``JSONDecodeError``…) to say which file or option is wrong and how, so
    the deepest exception would lose the path, and MONAI's wrappers above it say nothing useful. Without one,
    the deepest ``ValueError`` / ``FileNotFoundError`` (e.g. MONAI's "Cannot find the config file") still
    makes a clearer line than a traceback; anything else is a bug and keeps its traceback.

    With ``--num_workers`` > 0 the error happens in a DataLoader worker, and torch re-raises it in the main
    process as a ``RuntimeError`` holding the worker's traceback as text (a ``DataError`` cannot be rebuilt from
    one string): the user error's line is then read from that text.
    """
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, _USER_ERRORS):
            return e
        in_worker = _WORKER_ERROR.findall(str(e)) if "Original Traceback" in str(e) else []
        if in_worker:  # last printed = outermost of the worker's chain
            return DataError(None, in_worker[-1])
    return chain[-1] if isinstance(chain[-1], _FALLBACK_ERRORS) else None


def error_line(exc: BaseException) -> str:
    """``mednet error: <message>`` on one line (newlines and indentation inside the message collapsed)."""
    message = re.sub(r"\s*\n\s*", " ", str(exc)).strip() or type(exc).__name__
    return f"mednet error: {message} {_TRACEBACK_HINT}"


class _UserErrorTracebacks(logging.Filter):
    """Drops log records that carry a user-facing error's traceback (:func:`user_error`): the error hook prints
    that error as its one line; other exceptions (bugs) keep their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or user_error(exc) is None


def install_error_hook() -> None:
    """Print user-facing errors (:func:`user_error`) as one line on stderr instead of a MONAI/Ignite traceback.

    Installed as ``sys.excepthook`` — the process still exits with status 1 — rather than by catching in the
    configs, because MONAI's ``run`` offers no place to catch errors raised by ``run``/``finalize``. Installing
    twice is a no-op; with ``MEDNET_TRACEBACK`` set (not ``0``) nothing is installed. The log handlers present
    then also drop records carrying such an error's traceback (:class:`_UserErrorTracebacks`).
    """
    if os.environ.get("MEDNET_TRACEBACK", "") not in ("", "0") or getattr(sys.excepthook, "mednet", False):
        return
    previous = sys.excepthook
    # MONAI's StatsHandler logs every exception with its traceback (logger.exception) before re-raising it, once
    # per engine: a bad validation image printed three tracebacks above the one line
    handlers = list(logging.getLogger().handlers)
    for logger_ in list(logging.Logger.manager.loggerDict.values()):
        handlers += getattr(logger_, "handlers", [])
    for handler in handlers:
        if not any(isinstance(f, _UserErrorTracebacks) for f in handler.filters):
            handler.addFilter(_UserErrorTracebacks())

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        shown = user_error(exc)
        if shown is None:
            previous(exc_type, exc, tb)
            return
        print(error_line(shown), file=sys.stderr, flush=True)

    hook.mednet = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def select_metrics(metrics: Mapping, include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> dict:
    """Sub-dict of ``metrics`` (e.g. the one key metric, or all the others) for MONAI workflow arguments."""
    exclude = set(exclude)
    keys = list(include) if include is not None else [k for k in metrics if k not in exclude]
    return {k: metrics[k] for k in keys}


def report_paths(output_dir: str | os.PathLike, what: str = "report") -> str:
    """Log and return a one-line pointer to a run's outputs (the last thing a bundle prints)."""
    msg = f"mednet: {what} written to {Path(output_dir).resolve()}"
    logger.info(msg)
    print(msg, flush=True)
    return msg
