"""Human gold labels for evaluating a student (and its teacher).

Accepted files (CSV/TSV/JSONL/Parquet, read with the audit module's shared loader):

* long   - ``item_id, annotator, label`` (one row per rating, missing rows allowed);
* wide   - ``item_id`` (or ``id``) plus one column per annotator (empty cells = missing);
* simple - ``item_id`` (or ``id``) plus ``label`` (no annotator column): the gold label directly;
  a wide file with a ``gold`` or ``majority`` column is read the same way, from that column.

Gold = per-item majority of the human labels. **Ties are broken alphabetically** (the smallest
label name wins), so the gold set is deterministic; the number of ties is reported. Multi-label
cells list labels separated by ``;`` or ``|``; the gold set is every label chosen by more than
half of the item's annotators (an empty set falls back to the most chosen label, ties alphabetical).
Labels are matched to the dataset's label names ignoring case and surrounding spaces.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from annotator.audit.tabular import find_id_column, read_table, to_label
from annotator.errors import InputDataError

_SPLIT = re.compile(r"\s*[;|]\s*")


@dataclass
class GoldLabels:
    labels: dict[str, list[str]]  # item_id -> gold label(s) (single-label: one element)
    path: str
    format: str
    n_annotators: int
    ties: int = 0
    unknown_labels: dict[str, int] = field(default_factory=dict)  # gold labels outside the label set

    def single(self) -> dict[str, str]:
        return {k: v[0] for k, v in self.labels.items() if v}


def _ratings_simple(path: str | Path, df, id_col: str, col: str) -> dict[str, dict[str, str]]:
    ratings: dict[str, dict[str, str]] = {}
    for n, (raw_id, raw) in enumerate(zip(df[id_col].to_list(), df[col].to_list())):
        item, label = to_label(raw_id), to_label(raw)
        if item is None:
            raise InputDataError(f"gold labels {path}: row {n + 2} has no {id_col}")
        if label is not None:
            ratings.setdefault(item, {})[f"row{n}"] = label
    return ratings


def load_gold(path: str | Path, label_names: list[str] | None = None, multi_label: bool = False) -> GoldLabels:
    """Read a gold/human label file and reduce it to one gold label (set) per item."""
    df = read_table(path, "gold labels")
    cols = df.columns
    id_col = find_id_column(cols)
    if id_col is None:
        raise InputDataError(
            f"gold labels {path}: no item_id or id column (found: {', '.join(cols)}); use item_id,label or "
            "item_id,annotator,label"
        )
    explicit = next((c for c in ("gold", "majority") if c in cols), None)
    if "annotator" not in cols and (explicit or "label" in cols or "labels" in cols):
        col = explicit or ("label" if "label" in cols else "labels")
        ratings, fmt, n_ann = _ratings_simple(path, df, id_col, col), "simple", 1
    else:
        from annotator.audit.humans import load_humans

        try:
            humans = load_humans(path)
            ratings, fmt, n_ann = humans.ratings, humans.format, len(humans.annotators)
        except InputDataError as exc:
            # The audit needs >= 2 annotators; a gold file with one is fine here.
            if "at least 2" not in str(exc):
                raise
            label_col = "label" if "label" in cols else next((c for c in cols if c != id_col), None)
            if label_col is None:
                raise
            ratings, fmt, n_ann = _ratings_simple(path, df, id_col, label_col), "single-annotator", 1

    canon = {n.strip().lower(): n for n in (label_names or [])}
    unknown: Counter[str] = Counter()

    def norm(label: str) -> str:
        hit = canon.get(label.strip().lower())
        if hit is None and canon:
            unknown[label] += 1
        return hit or label.strip()

    gold: dict[str, list[str]] = {}
    ties = 0
    for item, by_ann in ratings.items():
        if not by_ann:
            continue
        if multi_label:
            sets = [{norm(x) for x in _SPLIT.split(v) if x.strip()} for v in by_ann.values()]
            votes = Counter(lab for s in sets for lab in s)
            chosen = sorted(lab for lab, c in votes.items() if c * 2 > len(sets))
            if not chosen and votes:
                top = max(votes.values())
                chosen = [min(lab for lab, c in votes.items() if c == top)]
            gold[item] = chosen
        else:
            votes = Counter(norm(v) for v in by_ann.values())
            top = max(votes.values())
            best = sorted(lab for lab, c in votes.items() if c == top)
            ties += len(best) > 1
            gold[item] = [best[0]]
    if not gold:
        raise InputDataError(f"gold labels {path}: no labels found")
    return GoldLabels(
        labels=gold, path=str(path), format=fmt, n_annotators=n_ann, ties=ties, unknown_labels=dict(unknown)
    )
