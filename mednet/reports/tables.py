"""Small, dependency-free table writers (CSV via pandas, GitHub Markdown by hand: no `tabulate` needed)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

__all__ = ["markdown_table", "write_table", "write_json"]


def _fmt(v: object, digits: int) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """GitHub-flavoured Markdown for ``df`` (index dropped), floats rounded to ``digits``."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def write_table(df: pd.DataFrame, stem: str | os.PathLike, digits: int = 3, title: str = "") -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.md``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    df.to_csv(csv_path, index=False)
    md_path.write_text((f"## {title}\n\n" if title else "") + markdown_table(df, digits))
    return csv_path, md_path


def write_json(obj: object, path: str | os.PathLike) -> Path:
    """Pretty JSON; NaN written as null so every JSON reader accepts it."""
    def clean(o):
        if isinstance(o, float) and math.isnan(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    path = Path(path)
    path.write_text(json.dumps(clean(obj), indent=2) + "\n")
    return path
