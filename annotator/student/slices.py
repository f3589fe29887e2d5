"""Slice columns of a student's items (``--eval-by``, ``--train-where``, ``--test-where``) and the items' roles.

A column is read by the audit's one reader (:func:`annotator.audit.slices.read_slice_column`): from the gold file
when it has the column, else from the input file of the run the dataset was exported from (``export.json``
``run_dir`` -> run.json ``config.input.path``). An unknown column is refused with the columns that exist.

Roles: the train and validation items are the export's train/validation splits, filtered by ``--train-where``;
the held-out ("test") items are the test split (else validation), or with ``--test-where`` every exported item
matching it that is not a train/validation item, whatever its split (zero-shot cross-lingual: train on
``language != el``, test on every ``language == el`` item).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from annotator.audit.slices import MISSING, read_slice_column
from annotator.errors import InputDataError
from annotator.records import read_manifest
from annotator.student.where import Where, WhereError
from annotator.tables import read_table

log = logging.getLogger(__name__)

TEST_WHERE_SCOPE = "test-where"  # the held-out scope's name when --test-where chose it


@dataclass
class SliceColumn:
    name: str
    values: dict[str, str | None]  # item id -> value
    source: str  # the file it was read from

    def of(self, item_id: str) -> str:
        return self.values.get(item_id) or MISSING


def _run_dir(ds_dir: Path, why: str) -> Path:
    try:
        return Path(json.loads((ds_dir / "export.json").read_text(encoding="utf-8"))["run_dir"])
    except (OSError, ValueError, KeyError):
        raise WhereError(f"{why}: {ds_dir / 'export.json'} (written by annotator export) names no run_dir") from None


def available_columns(run_dir: Path, gold: Path | None) -> list[str] | None:
    """The columns a slice can be read from: the gold file's and the run input file's (None: that file is gone)."""
    cols = [] if gold is None else list(read_table(gold, "human annotations").columns)
    manifest = read_manifest(run_dir)
    path = (manifest.config.get("input") or {}).get("path") if manifest is not None else None
    if path:
        if not Path(path).is_file():
            return None
        cols += read_table(path, "run input").columns
    return sorted(set(cols))


def read_column(column: str, ds_dir: Path, gold: Path | None, option: str) -> SliceColumn:
    """Item id -> value of ``column`` for ``option`` (e.g. ``--eval-by``); unknown columns listed in the error."""
    run_dir = _run_dir(ds_dir, f"{option} {column}")
    known = available_columns(run_dir, gold)
    if known is not None and column not in known:  # (a gone input file: read_slice_column says so)
        places = " and ".join(p for p in ("the gold file" if gold else "", "the run's input file") if p)
        listed = ", ".join(known) if known else "none found"
        raise InputDataError(f"{option}: unknown column {column!r}; columns of {places}: {listed}")
    values, source = read_slice_column(column, run_dir, gold)
    return SliceColumn(column, values, source)


class Selection(BaseModel):
    """``--train-where`` / ``--test-where`` as applied: the expressions, where their columns came from, the counts."""

    train_where: str | None = None
    test_where: str | None = None
    sources: dict[str, str] = Field(default_factory=dict, description="Column -> the file it was read from.")
    train_items: int
    validation_items: int
    test_items: int
    test_values: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Column -> value -> held-out items with it."
    )
    train_values: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Column -> value -> train items with it."
    )


@dataclass
class Roles:
    """Item positions by role; ``held_name`` is the held-out scope (metrics ``eval_split``)."""

    train: list[int]
    validation: list[int]
    held: list[int]
    held_name: str | None


def _rows(idx: list[int], ids: list[str], columns: dict[str, SliceColumn]) -> list[dict[str, str | None]]:
    return [{c: col.values.get(ids[i]) for c, col in columns.items()} for i in idx]


def _filtered(where: Where | None, idx: list[int], rows: list[dict[str, str | None]], what: str) -> list[int]:
    return idx if where is None else [idx[k] for k in where.select(rows, what)]


def _test_where(where: Where, ids: list[str], used: set[int], columns: dict[str, SliceColumn]) -> list[int]:
    every = list(range(len(ids)))
    hits = _filtered(where, every, _rows(every, ids, columns), "exported rows")
    held = [i for i in hits if i not in used]
    if not held:
        raise WhereError(
            f"{where.option} {where.text!r}: its {len(hits)} rows are all train/validation rows; leave them out of "
            "training with --train-where (e.g. the opposite condition)"
        )
    if len(held) < len(hits):
        log.info("%s: %d matching train/validation rows stay out of the test", where.option, len(hits) - len(held))
    return held


def assign_roles(
    ids: list[str],
    splits: list[str],
    eval_split: str | None,
    train_where: Where | None,
    test_where: Where | None,
    columns: dict[str, SliceColumn],
) -> Roles:
    """Train/validation: their splits filtered by ``train_where``; held-out: see the module docstring."""
    by_split = {s: [i for i, x in enumerate(splits) if x == s] for s in ("train", "validation")}
    train = _filtered(train_where, by_split["train"], _rows(by_split["train"], ids, columns), "train-split rows")
    val = by_split["validation"]
    if train_where is not None:
        val = [i for i in val if train_where.matches(_rows([i], ids, columns)[0])]
    if test_where is not None:
        return Roles(train, val, _test_where(test_where, ids, set(train) | set(val), columns), TEST_WHERE_SCOPE)
    held = [i for i, x in enumerate(splits) if x == eval_split] if eval_split else []
    if eval_split == "validation":
        held = val
    return Roles(train, val, held, eval_split)


def selection(
    roles: Roles, ids: list[str], train_where: Where | None, test_where: Where | None, columns: dict[str, SliceColumn]
) -> Selection:
    """What the filters did, for metrics.json and the model card."""

    def counts(idx: list[int]) -> dict[str, dict[str, int]]:
        return {c: dict(Counter(col.of(ids[i]) for i in idx).most_common()) for c, col in columns.items()}

    return Selection(
        train_where=None if train_where is None else train_where.text,
        test_where=None if test_where is None else test_where.text,
        sources={c: col.source for c, col in columns.items()},
        train_items=len(roles.train),
        validation_items=len(roles.validation),
        test_items=len(roles.held),
        test_values=counts(roles.held),
        train_values=counts(roles.train),
    )
