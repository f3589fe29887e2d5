"""The one table reader: CSV/TSV, JSONL/NDJSON and Parquet files through polars, with one set of rules.

* The format comes from the extension (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``/``.json``, ``.parquet``/``.pq``)
  unless the caller names it; ``.tsv`` is tab-separated.
* CSV cells are read as text (no type guessing), as UTF-8.
* A missing file, a directory, an empty file, an unknown extension and an unreadable file (not UTF-8, a broken
  JSON line, a ragged CSV line) are one :class:`~annotator.errors.InputDataError` line naming the file by its role
  (``what``: "input", "human annotations", ...).

Pipeline inputs are streamed (:func:`scan_table`, flat memory for millions of rows); the small files of an audit or
a student (human labels, teacher tables, slice columns, sheets) are read whole (:func:`read_table`).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from annotator.errors import InputDataError

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""File extension -> format."""


def table_format(path: Path, what: str, fmt: str = "auto") -> str:
    """Check that ``path`` is a non-empty file; return its format (csv, jsonl or parquet).

    ``what`` names the file in messages ("input", "human annotations", ...); ``fmt`` overrides the extension.
    """
    if not path.exists():
        raise InputDataError(f"{what} file not found: {path}")
    if path.is_dir():
        raise InputDataError(f"{what} path is a directory, expected a file: {path}")
    if path.stat().st_size == 0:
        raise InputDataError(f"{what} file is empty: {path}")
    if fmt != "auto":
        return fmt
    detected = FORMATS.get(path.suffix.lower())
    if detected is None:
        raise InputDataError(
            f"cannot tell the format of {what} file {path} from its extension: use .csv, .tsv, .jsonl or "
            ".parquet (for a pipeline input, or set input.format)"
        )
    return detected


def _separator(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def unreadable(exc: Exception, path: Path, what: str) -> InputDataError:
    """The one line for a file polars could not read (polars raises several error types)."""
    msg = str(exc).strip()
    first = msg.splitlines()[0] if msg else type(exc).__name__
    if "utf-8" in msg.lower() or "utf8" in msg.lower():
        first = "not valid UTF-8 text. Re-encode it, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`"
    return InputDataError(f"cannot read {what} file {path}: {first}")


def scan_table(path: Path, what: str, fmt: str = "auto", text_columns: tuple[str, ...] = ()) -> pl.LazyFrame:
    """A lazy (streamed) scan of a table file; ``text_columns`` of a JSONL file are read as strings whatever
    their first values look like (ids: an int id column with a string id after row 1000 must not break type
    inference). Read errors surface when the frame is collected: turn them into one line with :func:`unreadable`.
    """
    fmt = table_format(path, what, fmt)
    if fmt == "csv":
        # polars' streaming CSV source reads ahead in chunks sized from the file (~300 MB of decoded rows
        # buffered for a 200 MB file, whatever the consumer's pace); 1 MiB chunks keep that near 40 MB at the
        # same speed. Read per scan, so setting it here works; a value set by the user wins.
        os.environ.setdefault("POLARS_CSV_CHUNK_SIZE", str(1 << 20))
        return pl.scan_csv(path, separator=_separator(path), infer_schema=False, encoding="utf8")
    if fmt == "jsonl":
        return pl.scan_ndjson(
            path, infer_schema_length=1000, schema_overrides={c: pl.String for c in text_columns} or None
        )
    return pl.scan_parquet(path)


def read_table(path: str | Path, what: str, allow_empty: bool = False) -> pl.DataFrame:
    """Read a small table file whole. A file without rows is an error unless ``allow_empty``."""
    p = Path(path)
    fmt = table_format(p, what)
    try:
        if fmt == "csv":
            df = pl.read_csv(p, separator=_separator(p), infer_schema=False, encoding="utf8")
        elif fmt == "jsonl":
            df = pl.read_ndjson(p, infer_schema_length=None)
        else:
            df = pl.read_parquet(p)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise unreadable(exc, p, what) from None
    if df.height == 0 and not allow_empty:
        raise InputDataError(f"{what} file has no rows: {p}")
    return df
