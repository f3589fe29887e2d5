"""Seeded train/validation/test splits: by item id for exports, stratified subsamples for learning curves.

``assign_by_id`` (used by ``annotator export``) decides each item's split from a seeded hash of its id and
never looks at the teacher's labels, so every teacher run over the same input rows gets the same test set
and their students can be compared:

1. The universe is every input row of the run (failed rows included), so a teacher that failed on other
   rows than another teacher still puts each shared row in the same split.
2. Items are grouped by stratum (the human gold label when gold is given, one group otherwise) and sorted
   by ``sha256(f"{seed}:{item_id}")``; each group is dealt out in that order with split sizes from
   largest-remainder rounding of ``n_group * fraction`` (72 items at 0.8/0.1/0.1 -> 58/7/7).
3. Items are dropped (failed, low confidence) only after the assignment, so the split sizes of the export
   are those of the input minus the dropped rows.

``stratified_assign`` (used for learning-curve subsamples of the train split) stratifies on given keys with
controlled rounding and never fails on small classes: every class with an item keeps at least one item in the
first split (a class with a single item always lands there). Multi-label items are stratified by their
rarest label (``multilabel_strata``); items with no label form their own stratum.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence

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
    by_class: dict[Hashable, list[int]] = defaultdict(list)
    for idx, key in enumerate(strata):
        by_class[key].append(idx)
    # Deterministic class order regardless of hash seeds.
    classes = sorted(by_class, key=lambda k: (-len(by_class[k]), str(k)))
    sizes = {c: len(by_class[c]) for c in classes}
    alloc = _controlled_rounding(sizes, classes, fr, _largest_remainder(n, fr), rng)
    _first_split_covers_every_class(alloc, classes)
    return _deal(by_class, classes, names, alloc, rng, n)


def _controlled_rounding(
    sizes: Mapping[Hashable, int],
    classes: list[Hashable],
    fr: list[float],
    targets: list[int],
    rng: random.Random,
) -> dict[Hashable, list[int]]:
    """Items per (class, split): floors, then the largest remainders (random tie-break) within split targets."""
    alloc = {c: [math.floor(sizes[c] * f) for f in fr] for c in classes}
    left_class = {c: sizes[c] - sum(alloc[c]) for c in classes}
    left_split = [targets[j] - sum(alloc[c][j] for c in classes) for j in range(len(fr))]

    cells = [(c, j) for c in classes for j in range(len(fr))]
    tiebreak = {cell: rng.random() for cell in cells}
    cells.sort(key=lambda cell: (-(sizes[cell[0]] * fr[cell[1]] - alloc[cell[0]][cell[1]]), tiebreak[cell]))
    for c, j in cells:
        if left_class[c] > 0 and left_split[j] > 0 and fr[j] > 0:
            alloc[c][j] += 1
            left_class[c] -= 1
            left_split[j] -= 1
    # Whatever controlled rounding could not place: any split that still has room.
    for c in classes:
        while left_class[c] > 0:
            j = max(range(len(fr)), key=lambda k: (left_split[k], fr[k]))
            alloc[c][j] += 1
            left_class[c] -= 1
            left_split[j] -= 1
    return alloc


def _first_split_covers_every_class(alloc: dict[Hashable, list[int]], classes: list[Hashable]) -> None:
    """Every class with items gets at least one item in the first split (swap with the largest class)."""
    for c in classes:
        if alloc[c][0] == 0 and sum(alloc[c]) > 0:
            donors = [d for d in classes if d != c and alloc[d][0] > 1]
            if not donors:
                continue
            donor = max(donors, key=lambda d: (alloc[d][0], -classes.index(d)))
            j = max(range(1, len(alloc[c])), key=lambda k: alloc[c][k])
            alloc[c][j] -= 1
            alloc[c][0] += 1
            alloc[donor][0] -= 1
            alloc[donor][j] += 1


def _deal(
    by_class: Mapping[Hashable, list[int]],
    classes: list[Hashable],
    names: list[str],
    alloc: dict[Hashable, list[int]],
    rng: random.Random,
    n: int,
) -> list[str]:
    """Split name per item index: each class's items shuffled, then dealt out by its allocation."""
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
    return [min(labels, key=lambda lab: (freq[lab], lab)) if labels else "" for labels in label_sets]


def split_counts(assignment: Sequence[str], names: Sequence[str]) -> dict[str, int]:
    c = Counter(assignment)
    return {name: c.get(name, 0) for name in names}


def id_rank_key(item_id: str, seed: int) -> str:
    """The seeded hash that orders items for ``assign_by_id`` (hex digest; equal seeds give equal orders)."""
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def assign_by_id(
    ids: Sequence[str],
    fractions: dict[str, float],
    seed: int = 42,
    strata: Mapping[str, Hashable] | None = None,
) -> dict[str, str]:
    """Split name of every id in ``ids`` (the run's input rows); see the module docstring.

    ``strata`` maps item id -> stratum (e.g. the gold label); ids without one share a group of their own.
    The result depends only on the ids, the seed and the strata, never on the order or on any teacher label.
    """
    names = list(fractions)
    fr = [fractions[s] for s in names]
    groups: dict[Hashable, list[str]] = defaultdict(list)
    for item in dict.fromkeys(ids):
        key = None if strata is None or item not in strata else ("gold", strata[item])
        groups[key].append(item)
    out: dict[str, str] = {}
    for members in groups.values():
        members.sort(key=lambda i: (id_rank_key(i, seed), i))
        pos = 0
        for name, count in zip(names, _largest_remainder(len(members), fr)):
            for item in members[pos : pos + count]:
                out[item] = name
            pos += count
    return out
