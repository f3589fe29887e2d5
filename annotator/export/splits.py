"""Seeded, stratified train/validation/test splits that never fail on small classes.

Algorithm (documented behaviour, relied on by ``annotator export``):

1. Global split sizes come from the fractions by largest-remainder rounding, so they always add
   up to the number of items (e.g. 72 items at 0.8/0.1/0.1 -> 58/7/7).
2. Each stratum (class) gets ``n_class * fraction`` items of every split, rounded down; the
   leftover items are handed out by largest fractional remainder (ties broken by the seeded RNG)
   while respecting the global sizes ("controlled rounding"). Small classes therefore never make
   the split fail, unlike ``train_test_split(stratify=...)`` which refuses classes with < 2 items.
3. Graceful fallback for tiny classes: every class that has at least one item gets at least one
   *train* item (the student must see it). When rounding put all of a class's items into
   validation/test, one of them is swapped with a train item of the largest class, which keeps the
   global sizes exact. A class with a single item therefore always lands in train.
4. Inside a class the items are shuffled with ``random.Random(seed)`` before being dealt out, so a
   given seed always gives the same split.

Multi-label items are stratified by their rarest label (a light form of iterative
stratification); items with no label form their own stratum. Rephrase/QA exports split by
source item (one stratum), so all rows derived from one input row stay in the same split.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

from annotator.errors import AnnotatorError

SPLIT_NAMES_3 = ("train", "validation", "test")
SPLIT_NAMES_2 = ("train", "test")


class SplitSpecError(AnnotatorError):
    """A malformed ``--split`` value."""


def parse_split_spec(spec: str) -> dict[str, float]:
    """Parse ``"0.8,0.1,0.1"`` (train,validation,test) or ``"0.9,0.1"`` (train,test).

    Percentages (``"80,10,10"``) are accepted too. Returns split name -> fraction, fractions sum to 1.
    """
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) not in (2, 3) or any(not p for p in parts):
        raise SplitSpecError(
            f"bad --split {spec!r}: give 3 fractions train,validation,test (e.g. 0.8,0.1,0.1) or 2 (train,test)"
        )
    try:
        values = [float(p.rstrip("%")) for p in parts]
    except ValueError:
        raise SplitSpecError(f"bad --split {spec!r}: fractions must be numbers, e.g. 0.8,0.1,0.1") from None
    if any(v < 0 or math.isnan(v) or math.isinf(v) for v in values):
        raise SplitSpecError(f"bad --split {spec!r}: fractions must be >= 0")
    total = sum(values)
    if math.isclose(total, 100.0, abs_tol=1e-6):
        values = [v / 100.0 for v in values]
    elif not math.isclose(total, 1.0, abs_tol=1e-6):
        raise SplitSpecError(f"bad --split {spec!r}: fractions must add up to 1 (or 100), got {total:g}")
    if values[0] <= 0:
        raise SplitSpecError(f"bad --split {spec!r}: the train fraction must be > 0")
    names = SPLIT_NAMES_3 if len(values) == 3 else SPLIT_NAMES_2
    return dict(zip(names, values))


def _largest_remainder(n: int, fractions: Sequence[float]) -> list[int]:
    raw = [n * f for f in fractions]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def stratified_assign(
    strata: Sequence[Hashable],
    fractions: dict[str, float],
    seed: int = 42,
) -> list[str]:
    """Assign each item (given by its stratum key) to a split name; see the module docstring."""
    names = list(fractions)
    fr = [fractions[s] for s in names]
    n = len(strata)
    if n == 0:
        return []
    rng = random.Random(seed)
    targets = _largest_remainder(n, fr)

    by_class: dict[Hashable, list[int]] = defaultdict(list)
    for idx, key in enumerate(strata):
        by_class[key].append(idx)
    # Deterministic class order regardless of hash seeds.
    classes = sorted(by_class, key=lambda k: (-len(by_class[k]), str(k)))

    alloc = {c: [math.floor(len(by_class[c]) * f) for f in fr] for c in classes}
    left_class = {c: len(by_class[c]) - sum(alloc[c]) for c in classes}
    left_split = [targets[j] - sum(alloc[c][j] for c in classes) for j in range(len(names))]

    cells = [(c, j) for c in classes for j in range(len(names))]
    tiebreak = {cell: rng.random() for cell in cells}
    cells.sort(key=lambda cell: (-(len(by_class[cell[0]]) * fr[cell[1]] - alloc[cell[0]][cell[1]]), tiebreak[cell]))
    for c, j in cells:
        if left_class[c] > 0 and left_split[j] > 0 and fr[j] > 0:
            alloc[c][j] += 1
            left_class[c] -= 1
            left_split[j] -= 1
    # Whatever controlled rounding could not place: any split that still has room.
    for c in classes:
        while left_class[c] > 0:
            j = max(range(len(names)), key=lambda k: (left_split[k], fr[k]))
            alloc[c][j] += 1
            left_class[c] -= 1
            left_split[j] -= 1

    # Every class with items gets at least one train item (swap with the largest class).
    for c in classes:
        if alloc[c][0] == 0 and sum(alloc[c]) > 0:
            donors = [d for d in classes if d != c and alloc[d][0] > 1]
            if not donors:
                continue
            donor = max(donors, key=lambda d: (alloc[d][0], -classes.index(d)))
            j = max(range(1, len(names)), key=lambda k: alloc[c][k])
            alloc[c][j] -= 1
            alloc[c][0] += 1
            alloc[donor][0] -= 1
            alloc[donor][j] += 1

    out = [""] * n
    for c in classes:
        idxs = list(by_class[c])
        rng.shuffle(idxs)
        pos = 0
        for j, name in enumerate(names):
            for idx in idxs[pos : pos + alloc[c][j]]:
                out[idx] = name
            pos += alloc[c][j]
    return out


def multilabel_strata(label_sets: Sequence[Sequence[str]]) -> list[str]:
    """Stratum per multi-label item: its rarest label (ties: alphabetical); ``""`` for no label."""
    freq = Counter(label for labels in label_sets for label in set(labels))
    return [min(labels, key=lambda l: (freq[l], l)) if labels else "" for labels in label_sets]


def split_counts(assignment: Sequence[str], names: Sequence[str]) -> dict[str, int]:
    c = Counter(assignment)
    return {name: c.get(name, 0) for name in names}
