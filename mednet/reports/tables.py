"""Small, dependency-free table writers (CSV via pandas, GitHub Markdown by hand: no `tabulate` needed).

Every file is written atomically (:func:`mednet.io.atomic_path`): a report rewritten during a run is never
seen half-written.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from mednet.io import atomic_path, nan_to_none, write_text_atomic

__all__ = ["markdown_table", "write_table", "write_csv", "write_json"]


def _fmt(v: object, digits: int) -> str:
    """A cell: floats rounded; NaN, None and pandas' NA (a missing value of any dtype) as "—"."""
    if v is None or v is pd.NA:
        return "—"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """GitHub-flavoured Markdown for ``df`` (index dropped), floats rounded to ``digits``."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def write_table(df: pd.DataFrame, stem: str | os.PathLike, digits: int = 3, title: str = "",
                footer: str = "") -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.md`` (``title`` heading, the table, then ``footer``); returns both paths."""
    stem = Path(stem)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    write_csv(df, csv_path)
    write_text_atomic((f"## {title}\n\n" if title else "") + markdown_table(df, digits) + footer, md_path)
    return csv_path, md_path


def write_csv(df: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> Path:
    """``df.to_csv(path)`` written atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)
    return Path(path)


def write_json(obj: object, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Pretty JSON, written atomically; NaN written as null so every JSON reader accepts it.

    ``overwrite=False`` refuses an existing file (:class:`~mednet.errors.DataError`).
    """
    return write_text_atomic(json.dumps(nan_to_none(obj), indent=2) + "\n", path, overwrite=overwrite)
