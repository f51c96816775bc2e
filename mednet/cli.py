"""The command-line runner of every mednet tool (``python -m data_prep.X``, ``python -m mednet.app.X``).

:func:`run_cli` exposes a library function's keyword arguments as ``--flags`` with python-fire (the parser
MONAI's own ``python -m monai.bundle`` uses), and turns the project's user errors
(:class:`~mednet.errors.DataError`, :class:`~mednet.errors.OptionError`) into the same single
``mednet error: <path>: <problem>`` line the bundles print (:func:`mednet.bundle_support.error_line`), exit
status 2, instead of a traceback. ``MEDNET_TRACEBACK=1`` keeps the traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from mednet.errors import DataError, OptionError

__all__ = ["run_cli"]


def run_cli(fn: Callable) -> None:
    """Run ``fn`` as a command line: ``--name value`` per keyword argument; user errors end with one line."""
    import fire

    from mednet.bundle_support import error_line

    @functools.wraps(fn)
    def command(*args, **kwargs) -> None:  # fire would otherwise print (or browse) the return value
        try:
            fn(*args, **kwargs)
        except (DataError, OptionError) as e:
            if os.environ.get("MEDNET_TRACEBACK", "") not in ("", "0"):
                raise
            print(error_line(e), file=sys.stderr, flush=True)
            sys.exit(2)

    fire.Fire(command)
