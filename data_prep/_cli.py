"""Shared command-line plumbing for the ``python -m data_prep.X`` tools (python-fire, like MONAI's bundle CLI)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from mednet.errors import DataError


def run_cli(fn: Callable) -> None:
    """Expose ``fn``'s keyword arguments as ``--flags``; bad input ends with one clear line, not a traceback."""
    import fire

    @functools.wraps(fn)
    def command(*args, **kwargs) -> None:  # fire would otherwise print (or browse) the return value
        try:
            fn(*args, **kwargs)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    fire.Fire(command)
