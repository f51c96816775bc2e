"""The command-line runner of every mednet tool (``python -m data_prep.X``, ``python -m mednet.app.X``).

:func:`run_cli` exposes a library function's keyword arguments as ``--flags`` with python-fire (the parser
MONAI's own ``python -m monai.bundle`` uses), and turns the project's user errors
(:class:`~mednet.errors.DataError`, :class:`~mednet.errors.OptionError`) into the same single
``mednet error: <path>: <problem>`` line the bundles print (:func:`mednet.bundle_support.error_line`), exit
status 2, instead of a traceback. ``MEDNET_TRACEBACK=1`` keeps the traceback.

Before fire sees them, the flags are checked against the function's signature (:func:`check_cli_flags`), as the
bundles' overrides are (:mod:`mednet.overrides`): fire itself runs the job with the flags it understands and only
then complains about the rest (a misspelt ``--overwite`` after the outputs were written), reads
``--overwrite false`` as the true string ``"false"``, and leaves ``--subjects abc`` to fail deep inside.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import PurePath

from mednet.errors import DataError, OptionError

__all__ = ["run_cli", "check_cli_flags"]

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _scalar_types(fn: Callable) -> dict[str, set[type]]:
    """``{parameter: {bool/int/float/str, ...}}`` from ``fn``'s annotations (``int | None`` → ``{int}``);
    parameters whose annotation holds anything else (lists, tuples, paths) are not type-checked."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: check names only
        hints = {}
    out: dict[str, set[type]] = {}
    for name, hint in hints.items():
        args = typing.get_args(hint) or (hint,)
        kinds = {a for a in args if a is not type(None)}
        if kinds and kinds <= {bool, int, float, str}:
            out[name] = kinds
    return out


def _optional_parameters(fn: Callable) -> set[str]:
    """Parameters that take None: annotated ``X | None`` or defaulting to None."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    params = inspect.signature(fn).parameters
    return ({n for n, h in hints.items() if type(None) in typing.get_args(h)}
            | {n for n, p in params.items() if p.default is None})


def _text_parameters(fn: Callable) -> set[str]:
    """Parameters annotated as text or a path only (``str``, ``os.PathLike``, ``Path``, optionally ``| None``):
    their value is handed to fire quoted, so that ``--out 2024``, ``--out 1_000`` or ``--out a,b`` stay the text
    typed (fire would otherwise parse them as a number or a tuple and the function fail with a traceback)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return set()
    text = (str, os.PathLike, PurePath)
    out = set()
    for name, hint in hints.items():
        args = [a for a in (typing.get_args(hint) or (hint,)) if a is not type(None)]
        if args and all(isinstance(a, type) and issubclass(a, text) for a in args):
            out.add(name)
    return out


def _convert(flag: str, value: str, kinds: set[type], optional: bool = True) -> str:
    """``value`` checked against ``kinds`` (``none``/``null`` only where the parameter takes None: ``optional``);
    returns the text fire should parse (booleans as ``True``/``False``)."""
    if kinds == {bool}:
        low = value.strip().lower()
        if low in _TRUE or low in _FALSE:
            return "True" if low in _TRUE else "False"
        raise OptionError({flag: f"expected True or False, got {value!r}"})
    if str in kinds or value.strip().lower() in ("none", "null") and optional and not kinds <= {bool}:
        return value
    for kind in (int, float):
        if kind in kinds:
            try:
                kind(value)
                return value
            except ValueError:
                pass
    names = " or ".join(k.__name__ for k in (int, float) if k in kinds)
    raise OptionError({flag: f"expected {'an' if names.startswith('int') else 'a'} {names}, got {value!r}"})


def check_cli_flags(fn: Callable, argv: Sequence[str]) -> list[str]:
    """Check ``--flag value`` / ``--flag=value`` arguments against ``fn``'s keyword arguments; return them as
    ``--flag=value`` tokens for fire.

    * an unknown flag is refused with the nearest valid name (``-`` and ``_`` are the same, as in fire); a
      function taking ``**kwargs`` (e.g. options passed on to a bundle, checked there) accepts any name;
    * ``--flag`` alone, ``--flag true|false|1|0|yes|no`` for a boolean; ``--noflag`` / ``--no-flag`` /
      ``--no_flag`` set it False;
    * an ``int`` or ``float`` parameter must get a number (``None``/``none``/``null`` where it takes None);
    * a parameter without a default must be given.

    Raises:
        OptionError: every problem found, one entry per flag.
    """
    params = inspect.signature(fn).parameters
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    types = _scalar_types(fn)
    texts = _text_parameters(fn)
    optional = _optional_parameters(fn)
    problems: dict[str, str] = {}
    out: list[str] = []
    given: set[str] = set()
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token in ("-h", "--help"):
            return list(argv)  # fire prints the usage
        if not token.startswith("--") or len(token) == 2:
            problems[token] = "unexpected argument; options are given as --name value"
            continue
        flag, has_value, value = token[2:].partition("=")
        name = flag.replace("-", "_")
        negated = None
        if name not in names:
            for prefix in ("no_", "no"):
                if name.startswith(prefix) and name[len(prefix):] in names and types.get(name[len(prefix):]) == {bool}:
                    negated = name[len(prefix):]
                    break
        if negated is not None:
            if has_value:
                problems[f"--{flag}"] = "takes no value"
                continue
            out.append(f"--{negated}=False")
            given.add(negated)
            continue
        is_bool = types.get(name) == {bool}
        if not has_value:
            following = tokens[i] if i < len(tokens) else None
            if is_bool and (following is None or following.startswith("--")):
                value, has_value = "True", True  # a bare boolean flag switches it on
            elif following is not None and not (following.startswith("--") and len(following) > 2):
                value, has_value = following, True
                i += 1
        if name not in names:
            if not open_ended:
                match = difflib.get_close_matches(name, sorted(names), n=1)
                hint = f"did you mean --{match[0]}?" if match else f"options: --{', --'.join(sorted(names))}"
                problems[f"--{flag}"] = f"unknown option; {hint}"
                continue
            out.append(token if not has_value or "=" in token else f"--{flag}={value}")
            continue
        if not has_value:
            problems[f"--{flag}"] = "needs a value"
            continue
        given.add(name)
        try:
            value = _convert(f"--{flag}", value, types[name], name in optional) if name in types else value
        except OptionError as e:
            problems.update(e.problems)
            continue
        if name in optional and value.strip().lower() in ("none", "null"):
            value = "None"  # fire reads only this spelling as None (--max_per_volume none reached int() as text)
        elif name in texts:
            value = repr(value)  # fire parses a Python literal: quoted, it stays the text typed
        out.append(f"--{name}={value}")
    for name, p in params.items():
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name not in given:
            problems.setdefault(f"--{name}", "required")
    if problems:
        raise OptionError(problems)
    return out


def run_cli(fn: Callable) -> None:
    """Run ``fn`` as a command line: ``--name value`` per keyword argument; user errors end with one line."""
    import fire

    from mednet.bundle_support import end_progress_bars, error_line, user_error

    def fail(e: BaseException, shown: BaseException | None = None) -> None:
        if os.environ.get("MEDNET_TRACEBACK", "") not in ("", "0"):
            raise e
        end_progress_bars()
        print(error_line(shown or e), file=sys.stderr, flush=True)
        interrupted = any(isinstance(c, KeyboardInterrupt) for c in (e, e.__cause__, e.__context__))
        sys.exit(130 if interrupted else 2)

    @functools.wraps(fn)
    def command(*args, **kwargs) -> None:  # fire would otherwise print (or browse) the return value
        try:
            fn(*args, **kwargs)
        except (Exception, KeyboardInterrupt) as e:
            # a bundle run inside the command (run_bundle) raises MONAI's wrapper of the user error; run_bundle has
            # undone its error hook by then, so the one line is chosen here, as the bundle's hook would
            shown = user_error(e)
            if shown is None:
                raise
            fail(e, shown)

    try:
        argv = check_cli_flags(fn, sys.argv[1:])
    except OptionError as e:
        fail(e)
    fire.Fire(command, command=argv)
