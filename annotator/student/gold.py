"""Human gold labels for evaluating a student (and its teacher), and for stratifying export splits.

The file is read by the audit's reader (``annotator.audit.humans.load_humans``: long, wide or simple
``item_id,label``; one annotator is enough here). Gold = the per-item majority of the human labels by the one
majority rule (``majority_vote``): **a tied vote has no gold label**; such items are counted and left out of
every gold-based score, as in the audit. Multi-label cells list labels separated by ``;`` or ``|``; the gold set
is every label chosen by more than half of the item's annotators (when none is, the majority label over all
choices; a tie there leaves the item without gold). Labels are matched to the dataset's label names ignoring
case and surrounding spaces.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from annotator.audit.humans import load_humans, majority_vote
from annotator.errors import InputDataError

_SPLIT = re.compile(r"\s*[;|]\s*")


@dataclass
class GoldLabels:
    labels: dict[str, list[str]]  # item_id -> gold label(s) (single-label: one element)
    path: str
    format: str
    n_annotators: int
    ties: int = 0  # items whose human vote tied: no gold label
    unknown_labels: dict[str, int] = field(default_factory=dict)  # gold labels outside the label set

    def single(self) -> dict[str, str]:
        return {k: v[0] for k, v in self.labels.items() if v}


def _multi_label_gold(sets: list[set[str]]) -> list[str] | None:
    """Labels chosen by more than half of the annotators; else the majority label over all choices (tie: None)."""
    counts = Counter(lab for s in sets for lab in s)
    chosen = sorted(lab for lab, c in counts.items() if c * 2 > len(sets))
    if chosen:
        return chosen
    top = majority_vote(lab for s in sets for lab in s)
    return None if top is None else [top]


def load_gold(path: str | Path, label_names: list[str] | None = None, multi_label: bool = False) -> GoldLabels:
    """Read a gold/human label file and reduce it to one gold label (set) per item (ties: no gold)."""
    humans = load_humans(path)
    canon = {n.strip().lower(): n for n in (label_names or [])}
    unknown: Counter[str] = Counter()

    def norm(label: str) -> str:
        hit = canon.get(label.strip().lower())
        if hit is None and canon:
            unknown[label] += 1
        return hit or label.strip()

    gold: dict[str, list[str]] = {}
    ties = 0
    for item, by_ann in humans.ratings.items():
        if multi_label:
            chosen = _multi_label_gold([{norm(x) for x in _SPLIT.split(v) if x.strip()} for v in by_ann.values()])
        else:
            top = majority_vote(norm(v) for v in by_ann.values())
            chosen = None if top is None else [top]
        if chosen is None:
            ties += 1
        else:
            gold[item] = chosen
    if not gold:
        raise InputDataError(f"gold labels {path}: no item has a majority label (every vote is tied)")
    return GoldLabels(
        labels=gold,
        path=str(path),
        format=humans.format,
        n_annotators=len(humans.annotators),
        ties=ties,
        unknown_labels=dict(unknown),
    )
