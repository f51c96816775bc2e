"""Glue that MONAI bundle configs call: clear errors, run banners, metric selection, input listing.

MONAI wraps any exception raised while a config is instantiated in ``RuntimeError("Failed to evaluate …")``
chains, printed as 80–160-line tracebacks in which the useful line is buried. :func:`install_error_hook`
(called first in every mednet bundle's ``initialize``) prints one line instead, ``mednet error: <path>:
<problem>``, for the user-facing errors of :func:`user_error`. Set ``MEDNET_TRACEBACK=1`` to get the full
traceback. It also makes ``SIGTERM`` (Slurm's time limit, torchrun's teardown) unwind the run like an exception,
so that the atomic writers remove their temporary files.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import FrameType, TracebackType

from mednet.errors import DataError
from mednet.errors import OptionError

__all__ = ["install_error_hook", "install_sigterm_exit", "user_error", "error_line", "end_progress_bars", "root_cause", "select_metrics",
           "report_paths", "recorded_setting", "recorded_patch_size"]

logger = logging.getLogger("mednet")

_USER_ERRORS = (DataError, OptionError)
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
    the deepest exception would lose the path, and MONAI's wrappers above it say nothing useful. Without one, only
    a deepest ``FileNotFoundError`` that names its file (``.filename``: ``[Errno 2] No such file or directory:
    'x.json'``) is a user's mistake worth one line; any other exception — a plain ``ValueError`` too (``$int('x')``
    in a config gave ``invalid literal for int()`` with no path and no traceback) — is a bug and keeps its
    traceback.

    With ``--num_workers`` > 0 the error happens in a DataLoader worker, and torch re-raises it in the main
    process as a ``RuntimeError`` holding the worker's traceback as text (a ``DataError`` cannot be rebuilt from
    one string): the user error's line is then read from that text.
    """
    chain = list(_chain(exc))
    if any(isinstance(e, KeyboardInterrupt) for e in chain):  # Ctrl-C: the user's own act, not a bug
        return _interrupted()
    for e in chain:
        if isinstance(e, _USER_ERRORS):
            return e
        in_worker = _WORKER_ERROR.findall(str(e)) if "Original Traceback" in str(e) else []
        if in_worker:  # last printed = outermost of the worker's chain
            return DataError(None, in_worker[-1])
    deepest = chain[-1]
    return deepest if isinstance(deepest, FileNotFoundError) and deepest.filename else None


def _interrupted() -> DataError:
    """Ctrl-C's one line: what was interrupted and, for a training run that completed an epoch, how to continue
    it (the folders this process trains hold its lock, :func:`mednet.runs.acquire_run_lock`)."""
    from mednet.runs import RESUME_FILE, held_run_dirs

    resumable = [run for run in held_run_dirs() if (run / RESUME_FILE).is_file()]
    if resumable:  # the newest: the run just interrupted
        return DataError(None, f"interrupted (Ctrl-C); continue the training run with --run_dir "
                               f"{shlex.quote(str(resumable[-1]))}")
    started = held_run_dirs()
    return DataError(None, "interrupted (Ctrl-C)" + (f"; {started[0]} completed no epoch: start again" if started
                                                     else ""))


def end_progress_bars() -> None:
    """Close the progress bars still open (an exception left them mid-line), so that the error starts a line of its
    own — also in a log file, where a bar's carriage returns do not end its line."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with MONAI's and Ignite's progress bars
        return
    bars = list(getattr(tqdm, "_instances", []))
    for bar in bars:
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar of a broken stream: nothing to tidy
            pass
    if bars:
        print(file=sys.stderr, flush=True)


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


def _all_handlers() -> list[logging.Handler]:
    """Every handler of the root logger and of every named logger there is now."""
    handlers = list(logging.getLogger().handlers)
    for logger_ in list(logging.Logger.manager.loggerDict.values()):
        handlers += getattr(logger_, "handlers", [])  # a PlaceHolder has none
    return handlers


def _filter_all_handlers() -> None:
    """Give every handler there is now the :class:`_UserErrorTracebacks` filter (once)."""
    for handler in _all_handlers():
        if not any(isinstance(f, _UserErrorTracebacks) for f in handler.filters):
            handler.addFilter(_UserErrorTracebacks())


def _unfilter_all_handlers() -> None:
    for handler in _all_handlers():
        for f in [f for f in handler.filters if isinstance(f, _UserErrorTracebacks)]:
            handler.removeFilter(f)


def _filtering_record_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A log-record factory that, for a record carrying a user error, first filters every handler there is.

    MONAI's ``StatsHandler`` logs each exception with its traceback (``logger.exception``) before re-raising it,
    on a logger it creates when the engine is built (``monai.apps.get_logger``: its own stdout handler, not
    propagated) — after the hook was installed, so a filter given to the handlers of that moment missed it and a
    bad image inside an evaluator printed two tracebacks on stdout. The record is made before any handler sees
    it, so handlers added since are filtered in time.
    """

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and user_error(exc) is not None:
            _filter_all_handlers()
        return record

    factory.mednet = True  # type: ignore[attr-defined]
    return factory


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    """``SIGTERM`` as an exception: 143, the status a shell reports for a process killed by it (128 + 15)."""
    raise SystemExit(128 + signum)


def install_sigterm_exit() -> Callable[[], None]:
    """Make ``SIGTERM`` raise ``SystemExit(143)`` in the main thread; returns the function that undoes it.

    By default ``SIGTERM`` (Slurm's time limit, torchrun tearing down its workers, ``kill``) ends the process at
    once: no ``finally`` runs, and an atomic write in progress leaves its ``.model.tmp-….pt`` file next to the
    run's files. Raised as an exception, it unwinds the run, each writer removes its temporary file, and the
    process still ends with the status a shell reports for SIGTERM (143). Only where Python lets it (the main
    thread) and where nobody set a handler of their own (the default one is replaced, nothing else).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None  # ours already, or the caller's: theirs decides
    signal.signal(signal.SIGTERM, _raise_system_exit)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is _raise_system_exit:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return restore


def install_error_hook() -> Callable[[], None]:
    """Print user-facing errors (:func:`user_error`) as one line on stderr instead of a MONAI/Ignite traceback;
    returns the function that undoes it (:func:`mednet.app.bundles.run_bundle` calls it when the run ends, so a
    Python caller's own later errors keep their tracebacks).

    Installed as ``sys.excepthook`` — the process still exits with status 1 — rather than by catching in the
    configs, because MONAI's ``run`` offers no place to catch errors raised by ``run``/``finalize``. Log records
    carrying such an error's traceback are dropped by every handler, including those created later
    (:func:`_filtering_record_factory`). Installing twice is a no-op (the second call's undo does nothing); with
    ``MEDNET_TRACEBACK`` set (not ``0``) only the ``SIGTERM`` handling (:func:`install_sigterm_exit`) is installed.
    """
    restore_signal = install_sigterm_exit()
    if os.environ.get("MEDNET_TRACEBACK", "") not in ("", "0") or getattr(sys.excepthook, "mednet", False):
        return restore_signal
    previous = sys.excepthook
    previous_factory = logging.getLogRecordFactory()
    _filter_all_handlers()
    factory = _filtering_record_factory(previous_factory)
    logging.setLogRecordFactory(factory)

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        shown = user_error(exc)
        if shown is None:
            previous(exc_type, exc, tb)
            return
        end_progress_bars()
        print(error_line(shown), file=sys.stderr, flush=True)

    hook.mednet = True  # type: ignore[attr-defined]
    sys.excepthook = hook

    def restore() -> None:
        if sys.excepthook is hook:  # not if someone replaced it since
            sys.excepthook = previous
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous_factory)
        _unfilter_all_handlers()
        restore_signal()

    return restore


def _recorded(path: Path) -> dict:
    """The JSON object in a run's record ``path``; ``{}`` when the run has no such record."""
    from mednet.io import read_json_object

    return read_json_object(path) or {}


def recorded_setting(checkpoint: str | os.PathLike, key: str, default: object) -> object:
    """``key`` as the run's ``calibration.json`` records it (the referral settings its threshold was last fitted
    for), else as training recorded it in ``settings.json`` beside ``checkpoint``, else ``default``.

    For a config's default that must follow the run rather than the bundle: calibrate.json's referral target
    (``target_accuracy``, ``referral_min_accepted``, ``referral_confidence``) — a literal 0.95 refitted a run
    trained for 0.9 to 0.95, and its ``settings.json`` then disagreed with its ``calibration.json``. Runs trained
    before a setting was recorded get ``default`` (what training then used).

    Raises:
        DataError: ``settings.json`` is unreadable.
    """
    from mednet.calibration.run_calibration import calibrated_referral_settings
    from mednet.runs import SETTINGS_FILE

    run = Path(checkpoint).parent
    # the referral settings the served threshold was fitted for: an earlier refit's --target_accuracy 0.99 is kept
    value = calibrated_referral_settings(run).get(key)
    if value is None:
        value = _recorded(run / SETTINGS_FILE).get(key)
    return default if value is None else value


def recorded_patch_size(checkpoint: str | os.PathLike, default: int = 16) -> int:
    """The patch size the run of ``checkpoint`` trained on (its ``patch_stats.json``), else ``default`` with a
    warning: the brain evaluation's grid protocol evaluates patches of the training size (a ``--patch_size 32``
    run was evaluated on 16×16 grid patches without a word).

    Raises:
        DataError: ``patch_stats.json`` is unreadable or records a patch size that is not a positive integer.
    """
    path = Path(checkpoint).parent / "patch_stats.json"
    params = _recorded(path).get("params")
    size = params.get("patch_size") if isinstance(params, Mapping) else None
    if size is None:
        logger.warning("%s records no patch size: the grid evaluation uses %d×%d patches (give --patch_size "
                       "to choose)", path, default, default)
        return default
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(path, f"params.patch_size {size!r} is not a positive integer")
    return size


def select_metrics(metrics: Mapping, include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> dict:
    """Sub-dict of ``metrics`` (e.g. the one key metric, or all the others) for MONAI workflow arguments."""
    exclude = set(exclude)
    keys = list(include) if include is not None else [k for k in metrics if k not in exclude]
    return {k: metrics[k] for k in keys}


def report_paths(output_dir: str | os.PathLike, what: str = "report") -> str:
    """Log and return a one-line pointer to a run's outputs (the last thing a bundle prints).

    Logged where logging shows INFO (a bundle's ``logging.conf`` sends it to stdout), printed otherwise (a
    workflow run from Python without logging set up): never both, so the line appears once.
    """
    msg = f"mednet: {what} written to {Path(output_dir).resolve()}"
    if _shows_info(logger):
        logger.info(msg)
    else:
        print(msg, flush=True)
    return msg


def _shows_info(log: logging.Logger) -> bool:
    """Whether an INFO record of ``log`` reaches a handler that emits it (Python's last-resort handler, used when
    none is configured, shows only warnings)."""
    if not log.isEnabledFor(logging.INFO):
        return False
    current: logging.Logger | None = log
    while current is not None:
        if any(h.level <= logging.INFO for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False
