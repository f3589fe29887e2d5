"""Join human and teacher labels on item id, resolve the label set, and encode everything as integer codes.

Every metric module works on these arrays: ``H`` (items x annotators, -1 = missing), ``teacher`` (items),
``counts`` (items x labels: how many humans chose each label) and ``majority`` (-1 = tied vote).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from annotator.audit.humans import HumanAnnotations, majority_vote
from annotator.audit.tabular import few, to_float
from annotator.audit.teacher import TeacherAnnotations
from annotator.choices import Level
from annotator.errors import InputDataError

LEVELS = tuple(lv.value for lv in Level)


@dataclass
class AuditData:
    labels: list[str]
    level: str
    values: np.ndarray  # numeric value of each label (interval), else the label's rank
    label_source: str
    items: list[str]
    annotators: list[str]
    H: np.ndarray
    teacher: np.ndarray
    confidence: np.ndarray
    counts: np.ndarray
    majority: np.ndarray
    coverage: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    inclusion_prob: np.ndarray | None = None  # per item, when the human sheet records its sampling design

    @property
    def n_labels(self) -> int:
        return len(self.labels)


def onehot(codes: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(codes), k), dtype=np.int64)
    ok = codes >= 0
    out[np.flatnonzero(ok), codes[ok]] = 1
    return out


SINGLE_ANNOTATOR_WARNING = (
    "one human annotator: agreement statistics (human vs human, teacher vs each human, the alternative "
    "annotator test) need two or more; teacher-vs-gold accuracy, F1, kappa and calibration are reported"
)


def _majority(codes: np.ndarray) -> int:
    """The item's majority label code by the one majority rule (``majority_vote``); -1 for a tie."""
    top = majority_vote(int(c) for c in codes if c >= 0)
    return -1 if top is None else top


def _sort_labels(labels: set[str]) -> list[str]:
    nums = {lab: to_float(lab) for lab in labels}
    if all(v is not None for v in nums.values()):
        return sorted(labels, key=lambda lab: (nums[lab], lab))
    return sorted(labels)


def resolve_labels(
    humans: HumanAnnotations, teacher: TeacherAnnotations, labels: list[str] | None
) -> tuple[list[str], str]:
    if labels:
        dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dupes:
            raise InputDataError(f"--labels repeats {few(dupes)}")
        return list(labels), "--labels"
    if teacher.manifest_labels:
        return list(teacher.manifest_labels), "run.json"
    observed = {lab for r in humans.ratings.values() for lab in r.values()} | set(teacher.labels.values())
    return _sort_labels(observed), "observed"


def build(
    humans: HumanAnnotations,
    teacher: TeacherAnnotations,
    level: str = "nominal",
    labels: list[str] | None = None,
) -> AuditData:
    """Join ``humans`` and ``teacher`` on item id and encode both as label codes (see the module docstring)."""
    if level not in LEVELS:
        raise InputDataError(f"--level must be one of {', '.join(LEVELS)}; got {level!r}")
    label_set, label_source = resolve_labels(humans, teacher, labels)
    if len(label_set) < 2:
        raise InputDataError(f"the label set needs at least 2 labels; got {few(label_set)}")
    values, lookup = _label_codes(label_set, level)
    _check_labels(humans, teacher, lookup, label_set, label_source)
    warnings: list[str] = []
    items, failed_on_human = _evaluated_items(humans, teacher, warnings)
    annotators = _rated_annotators(humans, items, warnings)
    H = _human_codes(humans, items, annotators, lookup)
    counts = np.zeros((len(items), len(label_set)), dtype=np.int64)
    for c in range(len(annotators)):
        ok = H[:, c] >= 0
        np.add.at(counts, (np.flatnonzero(ok), H[ok, c]), 1)
    majority = np.array([_majority(row) for row in H], dtype=np.int64)
    per_item = counts.sum(axis=1)
    if len(annotators) >= 2 and not (per_item >= 2).any():
        raise InputDataError("no item was labelled by two or more human annotators, so agreement is undefined")
    coverage = _coverage(humans, teacher, len(failed_on_human), per_item, majority)
    if coverage["tied_majority_items"]:
        warnings.append(
            f"{coverage['tied_majority_items']} item(s) have a tied human vote (no majority label); they are left "
            "out of the teacher-vs-majority metrics and calibration"
        )
    probs = np.array([humans.inclusion_prob[i] for i in items], dtype=float) if humans.inclusion_prob else None
    return AuditData(
        labels=label_set,
        level=level,
        values=values,
        label_source=label_source,
        items=items,
        annotators=annotators,
        H=H,
        teacher=np.array([lookup(teacher.labels[i]) for i in items], dtype=np.int64),
        confidence=np.array([teacher.confidence.get(i, np.nan) for i in items], dtype=float),
        counts=counts,
        majority=majority,
        coverage=coverage,
        warnings=warnings,
        inclusion_prob=probs,
    )


Lookup = Callable[[str], "int | None"]


def _label_codes(label_set: list[str], level: str) -> tuple[np.ndarray, Lookup]:
    """Each label's value (interval: the number it spells, else its rank) and the label -> code lookup
    (interval: a label matches by its number too, so ``4`` and ``4.0`` are one rating)."""
    code = {lab: i for i, lab in enumerate(label_set)}
    if level != "interval":
        return np.arange(len(label_set), dtype=float), code.get
    floats = [to_float(lab) for lab in label_set]
    bad = [lab for lab, v in zip(label_set, floats) if v is None]
    if bad:
        raise InputDataError(f"--level interval needs numeric labels (ratings); not numbers: {few(bad)}")
    values = np.array(floats, dtype=float)
    by_value: dict[float, int] = {}
    for i, v in enumerate(values):
        by_value.setdefault(float(v), i)

    def lookup(lab: str) -> int | None:
        if lab in code:
            return code[lab]
        v = to_float(lab)
        return None if v is None else by_value.get(v)

    return values, lookup


def _check_labels(
    humans: HumanAnnotations, teacher: TeacherAnnotations, lookup: Lookup, label_set: list[str], label_source: str
) -> None:
    """Every human and teacher label must be in the label set (one error naming the first few that are not)."""
    where = f"the label set from {label_source} ({', '.join(label_set[:8])}{', ...' if len(label_set) > 8 else ''})"
    bad_h = Counter(lab for r in humans.ratings.values() for lab in r.values() if lookup(lab) is None)
    if bad_h:
        shown = ", ".join(f"{lab!r} ({n}x)" for lab, n in bad_h.most_common(5))
        raise InputDataError(
            f"human labels outside {where}: {shown}" + (f" and {len(bad_h) - 5} more" if len(bad_h) > 5 else "")
        )
    bad_t = Counter(lab for lab in teacher.labels.values() if lookup(lab) is None)
    if bad_t:
        shown = ", ".join(f"{lab!r} ({n}x)" for lab, n in bad_t.most_common(5))
        raise InputDataError(f"teacher labels outside {where}: {shown}")


def _evaluated_items(
    humans: HumanAnnotations, teacher: TeacherAnnotations, warnings: list[str]
) -> tuple[list[str], list[str]]:
    """The human-labelled items the teacher labelled, and those it failed on (a warning); every human item id
    must be in the teacher's output."""
    unknown = [i for i in humans.ratings if i not in teacher.ids]
    if unknown:
        raise InputDataError(
            f"{len(unknown)} of {len(humans.ratings)} human item ids are not in the teacher's output "
            f"({teacher.path}): {few(unknown)}. Check the id column, or annotate these items with the teacher."
        )
    queued = [i for i in humans.ratings if i in teacher.left_to_humans]
    failed_on_human = [i for i in humans.ratings if i not in teacher.labels and i not in teacher.left_to_humans]
    items = [i for i in humans.ratings if i in teacher.labels]
    if queued:
        warnings.append(
            f"{len(queued)} human-labelled item(s) excluded: the cascade left them to humans (it labels "
            f"no such row): {few(queued)}"
        )
    if failed_on_human:
        warnings.append(
            f"{len(failed_on_human)} human-labelled item(s) excluded because the teacher failed on them: "
            f"{few(failed_on_human)}"
        )
    if not items:
        raise InputDataError("the teacher has no successful label for any human-labelled item")
    return items, failed_on_human


def _rated_annotators(humans: HumanAnnotations, items: list[str], warnings: list[str]) -> list[str]:
    """The annotators with a rating on ``items`` (the others are ignored, with a warning)."""
    annotators = [a for a in humans.annotators if any(a in humans.ratings[i] for i in items)]
    dropped = [a for a in humans.annotators if a not in annotators]
    if dropped:
        warnings.append(f"annotator(s) with no rating on the evaluated items ignored: {few(dropped)}")
    if len(annotators) < 2:
        warnings.append(SINGLE_ANNOTATOR_WARNING)
    return annotators


def _human_codes(humans: HumanAnnotations, items: list[str], annotators: list[str], lookup: Lookup) -> np.ndarray:
    """``H``: items x annotators label codes, -1 where the annotator did not rate the item."""
    H = np.full((len(items), len(annotators)), -1, dtype=np.int64)
    for r, item in enumerate(items):
        for c, ann in enumerate(annotators):
            lab = humans.ratings[item].get(ann)
            if lab is not None:
                H[r, c] = lookup(lab)  # type: ignore[assignment]
    return H


def _coverage(
    humans: HumanAnnotations,
    teacher: TeacherAnnotations,
    failed_on_human: int,
    per_item: np.ndarray,
    majority: np.ndarray,
) -> dict[str, int]:
    """What was evaluated out of what was given (report.json ``coverage``)."""
    return {
        "human_items": len(humans.ratings),
        "human_ratings": humans.n_ratings,
        "teacher_items": len(teacher.ids),
        "teacher_failed": len(teacher.failed),
        "teacher_failed_on_human_items": failed_on_human,
        "teacher_only_items": len(teacher.ids - set(humans.ratings)),
        "evaluated_items": len(per_item),
        "items_with_2plus_ratings": int((per_item >= 2).sum()),
        "tied_majority_items": int((majority < 0).sum()),
        "min_ratings_per_item": int(per_item.min()),
        "max_ratings_per_item": int(per_item.max()),
    }
