"""Sampling-design columns shared by the annotation sheets (``annotator sample``) and the audit's readers.

A sheet drawn with unequal probabilities records each item's inclusion probability ``pi`` in the column
``inclusion_prob``; the audit weights item ``i`` by ``1 / pi_i`` to estimate the run-wide accuracy (the Hajek
ratio estimator: ``sum(w_i * correct_i) / sum(w_i)``; Sarndal, Swensson & Wretman 1992, section 5.7).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from annotator.audit.tabular import to_float
from annotator.errors import InputDataError
from annotator.records import normalize_id

INCLUSION_COLUMN = "inclusion_prob"
LONG_SHEET = "sheet_long.csv"
"""The long annotation sheet: one row per assigned rating (``annotator sample``, a cascade's human queue)."""
WIDE_SHEET = "sheet_wide.csv"
"""The wide annotation sheet: one row per item, one column per annotator."""


def read_inclusion_probs(df: pl.DataFrame, id_col: str, path: str | Path) -> dict[str, float]:
    """``{item_id: pi}`` from the ``inclusion_prob`` column (empty dict when the column is absent).

    Every row needs a value in (0, 1], and all rows of one item the same value."""
    if INCLUSION_COLUMN not in df.columns:
        return {}
    out: dict[str, float] = {}
    for n, (raw_id, raw_p) in enumerate(zip(df[id_col].to_list(), df[INCLUSION_COLUMN].to_list()), start=2):
        item, p = normalize_id(raw_id), None if isinstance(raw_p, bool) else to_float(raw_p)
        if item is None:
            continue
        if p is None or not 0.0 < p <= 1.0:
            raise InputDataError(
                f"human annotations {path}: row {n} (item {item!r}) has {INCLUSION_COLUMN} {raw_p!r}; it must be a "
                f"probability in (0, 1] (written by `annotator sample`), or drop the column"
            )
        if item in out and abs(out[item] - p) > 1e-9:
            raise InputDataError(
                f"human annotations {path}: item {item!r} has two different {INCLUSION_COLUMN} values "
                f"({out[item]:g} and {p:g}); one item has one inclusion probability"
            )
        out[item] = p
    return out
