"""Load human annotations (the one reader of gold/human label files, for ``audit``, ``export`` and ``train-student``).

Formats: long (``item_id, annotator, label``), wide (``item_id`` or ``id`` plus one column per annotator), simple
(``item_id, label`` with no annotator column, or a wide file whose only label column is ``gold`` or ``majority``:
one annotator) and a Label Studio JSON export (read as long format, see ``annotator.audit.label_studio``).
``majority_vote`` is the one majority rule: a tie has no majority.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from annotator.audit.design import INCLUSION_COLUMN, read_inclusion_probs
from annotator.audit.label_studio import is_label_studio_export, read_label_studio
from annotator.audit.tabular import few, find_id_column, to_label
from annotator.errors import InputDataError
from annotator.records import normalize_id
from annotator.tables import read_table

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

# Columns of a wide file that are never annotators.
NON_ANNOTATOR_COLUMNS = frozenset(
    {
        "text",
        "title",
        "content",
        "input",
        "body",
        "sentence",
        "gold",
        "majority",
        "comment",
        "comments",
        "notes",
        "note",
        "meta",
        "metadata",
        "source",
        "url",
        "lang",
        "language",
        INCLUSION_COLUMN,
    }
)


T = TypeVar("T", bound=Hashable)


def majority_vote(votes: Iterable[T]) -> T | None:
    """The value chosen most often, or None when two or more values tie for the most votes (or no votes)."""
    counts = Counter(votes).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


@dataclass
class HumanAnnotations:
    """``ratings[item_id][annotator] = label``; items and annotators keep the file's order."""

    ratings: dict[str, dict[str, str]]
    annotators: list[str]
    format: str
    path: str
    ignored_columns: list[str] = field(default_factory=list)
    dropped_annotators: list[str] = field(default_factory=list)
    """Annotators in the file whose every rating is empty (left out of every metric; the audit report says so)."""
    inclusion_prob: dict[str, float] = field(default_factory=dict)  # sampling design (``annotator sample``)

    @property
    def n_ratings(self) -> int:
        return sum(len(r) for r in self.ratings.values())


Ratings = dict[str, dict[str, str]]


def _read_long(df: pl.DataFrame, id_col: str, path: str | Path) -> tuple[Ratings, list[str]]:
    """Long format: one (item, annotator, label) per row; an empty label is no rating."""
    ratings: Ratings = {}
    annotators: list[str] = []
    dupes: list[str] = []
    for n, (raw_id, raw_ann, raw_label) in enumerate(
        zip(df[id_col].to_list(), df["annotator"].to_list(), df["label"].to_list()), start=2
    ):
        item, ann, label = normalize_id(raw_id), to_label(raw_ann), to_label(raw_label)
        if item is None:
            raise InputDataError(f"human annotations {path}: row {n} has no {id_col}")
        if ann is None:
            raise InputDataError(f"human annotations {path}: row {n} (item {item!r}) has no annotator")
        row = ratings.setdefault(item, {})
        if ann not in annotators:
            annotators.append(ann)
        if label is None:
            continue
        if ann in row and row[ann] != label:
            dupes.append(f"{ann}/{item}")
        row[ann] = label
    if dupes:
        raise InputDataError(
            f"human annotations {path}: the same annotator gave one item different labels: {few(dupes)}"
        )
    return ratings, annotators


def _wide_columns(
    columns: list[str], id_col: str, path: str | Path, not_annotators: tuple[str, ...]
) -> tuple[str, list[str]]:
    """Not long format: ``("simple", [label column])`` (item_id,label or a lone gold/majority column: one
    annotator) or ``("wide", annotator columns)``."""
    ann_cols = [
        c for c in columns if c != id_col and c.lower() not in NON_ANNOTATOR_COLUMNS and c not in not_annotators
    ]
    if "annotator" in columns:
        raise InputDataError(
            f"human annotations {path}: looks like long format but has no 'label' column "
            f"(long format needs {id_col}, annotator, label)"
        )
    simple: str | None = next((c for c in ("label", "labels") if c in columns), None)
    if simple is None and not ann_cols:
        simple = next((c for c in columns if c.lower() in ("gold", "majority")), None)
    if simple is not None:
        return "simple", [simple]
    return "wide", ann_cols


def _read_wide(df: pl.DataFrame, id_col: str, ann_cols: list[str], path: str | Path) -> Ratings:
    """Wide (or simple) format: one row per item, one label column per annotator; empty cells are no rating."""
    ids = [normalize_id(v) for v in df[id_col].to_list()]
    if any(i is None for i in ids):
        raise InputDataError(f"human annotations {path}: row {ids.index(None) + 2} has no {id_col}")
    seen: set[str] = set()
    repeated = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value,arg-type]
    if repeated:
        raise InputDataError(f"human annotations {path}: repeated item ids in wide format: {few(repeated)}")
    cols = {c: df[c].to_list() for c in ann_cols}
    ratings: Ratings = {}
    for r, item in enumerate(ids):
        row = ratings.setdefault(item, {})  # type: ignore[arg-type]
        for c in ann_cols:
            label = to_label(cols[c][r])
            if label is not None:
                row[c] = label
    return ratings


def load_humans(path: str | Path, not_annotators: tuple[str, ...] = ()) -> HumanAnnotations:
    """Read a human label file in any of the formats above (one annotator is allowed). ``not_annotators``: more
    columns that are never annotators in wide format (e.g. the ``audit --by`` column)."""
    label_studio = is_label_studio_export(path)
    df = read_label_studio(path) if label_studio else read_table(path, "human annotations")
    columns = df.columns
    id_col = find_id_column(columns)
    if id_col is None:
        raise InputDataError(
            f"human annotations {path}: no item id column. Use long format (columns item_id, annotator, label) "
            f"or wide format (an item_id or id column plus one column per annotator); found: {', '.join(columns)}"
        )
    if "annotator" in columns and "label" in columns:
        fmt = "long"
        ignored = [c for c in columns if c not in (id_col, "annotator", "label")]
        ratings, annotators = _read_long(df, id_col, path)
    else:
        fmt, annotators = _wide_columns(columns, id_col, path, not_annotators)
        ignored = [c for c in columns if c != id_col and c not in annotators]
        ratings = _read_wide(df, id_col, annotators, path)
    ratings = {k: v for k, v in ratings.items() if v}
    dropped = [a for a in annotators if not any(a in r for r in ratings.values())]
    annotators = [a for a in annotators if a not in dropped]
    if dropped:
        log.warning("human annotations %s: annotator(s) with no rating at all left out: %s", path, few(dropped))
    if not ratings:
        raise InputDataError(f"human annotations {path}: no labels found (every label cell is empty)")
    return HumanAnnotations(
        ratings=ratings,
        annotators=annotators,
        format="label-studio" if label_studio else fmt,
        path=str(path),
        ignored_columns=ignored,
        dropped_annotators=dropped,
        inclusion_prob=read_inclusion_probs(df, id_col, path),
    )
