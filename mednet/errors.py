"""The project's two user-facing error types: bad input data (:class:`DataError`, naming the file) and bad
options (:class:`OptionError`, naming the option). Both reach the user as one ``mednet error:`` line
(:mod:`mednet.bundle_support`, :mod:`mednet.cli`)."""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["DataError", "OptionError"]


class DataError(ValueError):
    """Bad input data.

    The message is always ``"<path>: <problem>"`` so a user with hundreds of volumes knows which file to fix.

    Args:
        path: the offending file (or directory / datalist entry).
        problem: what is wrong with it, in words a user understands.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class OptionError(ValueError):
    """Unknown options, or options of the wrong type or value, for a bundle run.

    Like :class:`DataError` the message starts with what to fix:
    ``"--epoch: unknown option for train.json (did you mean --epochs?)"``; several problems are joined by ``"; "``
    so that one run reports all of them at once.

    Args:
        problems: ``{"--option": "what is wrong with it"}``.
    """

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("; ".join(f"{option}: {problem}" for option, problem in self.problems.items()))
