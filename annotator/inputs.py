"""Pipeline input: the ``input:`` section of a pipeline (:class:`InputConfig`) and its streaming reader (CSV,
JSONL/NDJSON, Parquet through :mod:`annotator.tables`).

Rows are yielded in batches so a million-row file is processed with flat memory.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from annotator.choices import InputFormat
from annotator.errors import InputDataError
from annotator.records import normalize_id
from annotator.tables import scan_table, unreadable

log = logging.getLogger(__name__)


class InputConfig(BaseModel):
    """Where rows come from. CSV, JSONL/NDJSON and Parquet are read (streamed) with polars."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    format: InputFormat = InputFormat.auto
    id_column: str = "id"
    text_column: str = "text"
    max_chars: int | None = Field(
        default=None, gt=0, description="Rows whose text is longer are recorded as failed instead of being sent."
    )
    limit: int | None = Field(default=None, gt=0, description="Only process the first N rows.")


@dataclass(slots=True)
class InputRow:
    """One input row: its position, id, text and every other column (for templates)."""

    index: int
    id: str | None
    text: str | None
    columns: dict[str, Any]


def _explain(exc: Exception, path: Path) -> InputDataError:
    return unreadable(exc, path, "input")


def open_input(cfg: InputConfig) -> pl.LazyFrame:
    """Validate that the file is readable and has the configured columns; return a lazy frame."""
    lf = scan_table(cfg.path, "input", cfg.format.value, text_columns=(cfg.id_column,))
    try:
        columns = lf.collect_schema().names()
    except Exception as exc:  # polars raises several error types for unreadable files
        raise _explain(exc, cfg.path) from None
    missing = [c for c in (cfg.id_column, cfg.text_column) if c not in columns]
    if missing:
        which = ", ".join(f"'{m}'" for m in missing)
        raise InputDataError(
            f"{cfg.path}: missing column {which} (found: {', '.join(columns) or 'none'}). "
            "Set input.id_column / input.text_column in the pipeline file."
        )
    _check_text_type(cfg, lf.collect_schema()[cfg.text_column])
    if cfg.limit:
        lf = lf.head(cfg.limit)
    return lf


def _check_text_type(cfg: InputConfig, dtype: pl.DataType) -> None:
    """The text column must hold text: strings (or categoricals, or nothing at all). Any other type (binary,
    list, struct, bool, numbers, dates) would reach the teacher as a Python repr such as ``b'...'``, so it is
    refused rather than guessed at."""
    if dtype == pl.String or dtype == pl.Null or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return
    raise InputDataError(
        f"{cfg.path}: text column {cfg.text_column!r} has type {dtype}, not text. Convert it to strings in the "
        "file, or point input.text_column at a text column."
    )


def count_rows(cfg: InputConfig) -> int:
    """Number of input rows (streamed count).

    Every column is decoded on the way (``pl.all().count()``), so a file that is not UTF-8 or has ragged CSV
    lines fails here, before any teacher call, instead of midway through the run.
    """
    lf = open_input(cfg)
    try:
        n = lf.select(pl.len(), pl.all().count()).collect(engine="streaming").row(0)[0]
    except Exception as exc:
        raise _explain(exc, cfg.path) from None
    if n == 0:
        raise InputDataError(f"input file has no rows: {cfg.path}")
    log.debug("input %s: %d rows", cfg.path, n)
    return int(n)


def cut_by_limit(cfg: InputConfig) -> bool:
    """Whether ``input.limit`` leaves rows of the file out (an output made under it is not the whole result)."""
    return cfg.limit is not None and count_rows(cfg.model_copy(update={"limit": None})) > cfg.limit


def check_ids(cfg: InputConfig) -> int:
    """Check every id (as :func:`~annotator.records.normalize_id` reads it) before any teacher call: present and
    unique. Streams the id column into a temporary on-disk SQLite table, so memory stays flat for any row count.
    Returns the number of rows checked.
    """
    lf = open_input(cfg).select(pl.col(cfg.id_column))
    db = sqlite3.connect("")  # a private temporary database on disk, deleted on close
    try:
        db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY, idx INTEGER NOT NULL)")
        index = 0
        try:
            for batch in lf.collect_batches(chunk_size=8192):
                for raw in batch.to_series(0):
                    _check_one_id(db, cfg, normalize_id(raw), index)
                    index += 1
        except InputDataError:
            raise
        except Exception as exc:  # polars' read errors
            raise _explain(exc, cfg.path) from None
        log.debug("input %s: %d ids present and unique (column %r)", cfg.path, index, cfg.id_column)
        return index
    finally:
        db.close()


def _check_one_id(db: sqlite3.Connection, cfg: InputConfig, row_id: str | None, index: int) -> None:
    if row_id is None:
        raise InputDataError(f"{cfg.path}: row {index + 1} has no id ({cfg.id_column!r} is empty)")
    try:
        db.execute("INSERT INTO ids VALUES (?, ?)", (row_id, index))
    except sqlite3.IntegrityError:
        first = db.execute("SELECT idx FROM ids WHERE id = ?", (row_id,)).fetchone()[0]
        raise InputDataError(
            f"{cfg.path}: duplicate id {row_id!r} (rows {first + 1} and {index + 1}); ids must be unique "
            "(ids are compared as text without surrounding spaces)"
        ) from None


def iter_rows(cfg: InputConfig, batch_size: int = 2048) -> Iterator[InputRow]:
    """Stream rows in input order."""
    lf = open_input(cfg)
    index = 0
    try:
        for batch in lf.collect_batches(chunk_size=batch_size):
            for rec in batch.iter_rows(named=True):
                raw_id = rec.get(cfg.id_column)
                text = rec.get(cfg.text_column)
                yield InputRow(
                    index=index,
                    id=normalize_id(raw_id),
                    text=None if text is None else str(text),
                    columns=rec,
                )
                index += 1
    except Exception as exc:  # polars' read errors (the consumer's exceptions are not raised in here)
        raise _explain(exc, cfg.path) from None
