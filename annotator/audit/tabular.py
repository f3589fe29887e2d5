"""Read a small table (CSV/TSV, JSONL/NDJSON, Parquet) with polars and normalise its cells to label strings."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from annotator.errors import InputDataError
from annotator.inputs import check_table_file
from annotator.records import normalize_id

ID_COLUMNS = ("item_id", "id")


def read_table(path: str | Path, what: str) -> pl.DataFrame:
    """Read ``path`` eagerly. CSV cells are read as strings (no type guessing). ``what`` names the file in errors."""
    p = Path(path)
    fmt = check_table_file(p, what)
    try:
        if fmt == "csv":
            sep = "\t" if p.suffix.lower() == ".tsv" else ","
            df = pl.read_csv(p, separator=sep, infer_schema=False, encoding="utf8")
        elif fmt == "jsonl":
            df = pl.read_ndjson(p, infer_schema_length=None)
        else:
            df = pl.read_parquet(p)
    except Exception as exc:  # polars raises several error types for unreadable files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "utf" in msg.lower():
            msg = "not valid UTF-8 text"
        raise InputDataError(f"cannot read {what} file {p}: {msg}") from None
    if df.height == 0:
        raise InputDataError(f"{what} file has no rows: {p}")
    return df


def find_id_column(columns: list[str]) -> str | None:
    for name in ID_COLUMNS:
        if name in columns:
            return name
    return None


# A label cell follows the same rule as an id cell (one implementation): a string, surrounding whitespace removed,
# integral numbers without a fraction; None, NaN and blank mean missing.
to_label = normalize_id


def few(values: list[str], k: int = 5) -> str:
    """The first ``k`` values for a message, and how many more there are: ``'a', 'b' and 3 more``."""
    shown = ", ".join(repr(v) for v in values[:k])
    return shown + (f" and {len(values) - k} more" if len(values) > k else "")


def to_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x
