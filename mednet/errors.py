"""The one error type for bad input data: it always names the file and the problem."""

from __future__ import annotations

import os

__all__ = ["DataError"]


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
