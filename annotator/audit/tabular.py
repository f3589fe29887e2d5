"""Cells of the audit's tables (read by :func:`annotator.tables.read_table`): item id columns, labels, numbers."""

from __future__ import annotations

import math
from typing import Any

from annotator.records import normalize_id

ID_COLUMNS = ("item_id", "id")


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
