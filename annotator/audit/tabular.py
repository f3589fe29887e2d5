"""Read a small table (CSV/TSV, JSONL/NDJSON, Parquet) with polars and normalise its cells to label strings."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from annotator.errors import InputDataError
from annotator.inputs import check_table_file

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


def to_label(value: Any) -> str | None:
    """A cell as a label string; None for missing. Integral floats become ints ("3.0" stays "3.0" as text)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None


def to_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x
