"""Scores of a student next to its teacher, against human gold labels (the IPTC teacher-student comparison)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from annotator.audit import classification


class Scores(BaseModel):
    n: int
    accuracy: float | None = Field(None, description="Single-label: accuracy; multi-label: exact-set match.")
    macro_f1: float | None = None
    micro_f1: float | None = Field(None, description="Multi-label only.")
    per_label_f1: dict[str, float] = Field(default_factory=dict)


class ThresholdRow(BaseModel):
    threshold: float
    n: int = Field(description="Items whose confidence is >= threshold.")
    coverage: float = Field(description="n / items with gold in the scope.")
    teacher_accuracy: float | None = None
    student_accuracy: float | None = None


class EvalBlock(BaseModel):
    scope: str
    items: int
    with_gold: int
    student: Scores | None = Field(None, description="Student vs human gold.")
    teacher: Scores | None = Field(None, description="Teacher vs human gold, same items.")
    student_vs_teacher: Scores | None = Field(None, description="Student vs teacher labels (distillation fidelity).")
    teacher_confidence_thresholds: list[ThresholdRow] = Field(
        default_factory=list, description="Accuracy vs gold on the items the teacher was at least this confident on."
    )
    student_confidence_thresholds: list[ThresholdRow] = Field(
        default_factory=list, description="Same, selecting by the student's own (calibrated) probability."
    )
    teacher_confidence_note: str | None = Field(
        None, description="Why the teacher table is empty (e.g. one sample per item: every confidence is 1.0)."
    )
    student_confidence_note: str | None = None


def fmt3(x: float | None) -> str:
    """A score in a table cell: three decimals, ``-`` for none."""
    return "-" if x is None else f"{x:.3f}"


def pair_cell(sc: Scores | None) -> str:
    """``accuracy / macro-F1`` in a table cell (``-`` for none)."""
    return "-" if sc is None else f"{fmt3(sc.accuracy)} / {fmt3(sc.macro_f1)}"


def _r(x: float) -> float:
    return round(float(x), 4)


def score(gold: Sequence[Any], pred: Sequence[Any], label_names: list[str], multi_label: bool) -> Scores:
    """Single-label: ``gold``/``pred`` are label names (scored by ``annotator.audit.classification``, as the
    audit scores its teacher). Multi-label: lists of label names."""
    n = len(gold)
    if n == 0:
        return Scores(n=0)
    if multi_label:
        from sklearn.metrics import accuracy_score, f1_score
        from sklearn.preprocessing import MultiLabelBinarizer

        extra = sorted({lab for s in [*gold, *pred] for lab in s} - set(label_names))
        mlb = MultiLabelBinarizer(classes=[*label_names, *extra])
        y_true, y_pred = mlb.fit_transform(gold), mlb.transform(pred)
        per = f1_score(y_true, y_pred, average=None, zero_division=0)
        present = [i for i in range(len(mlb.classes_)) if y_true[:, i].any() or y_pred[:, i].any()]
        return Scores(
            n=n,
            accuracy=_r(accuracy_score(y_true, y_pred)),
            macro_f1=_r(sum(per[i] for i in present) / len(present)) if present else 0.0,
            micro_f1=_r(f1_score(y_true, y_pred, average="micro", zero_division=0)),
            per_label_f1={mlb.classes_[i]: _r(per[i]) for i in present},
        )
    labels = [lab for lab in label_names if lab in set(gold) | set(pred)]
    labels += sorted((set(gold) | set(pred)) - set(labels))
    cm = classification.confusion_from_labels(gold, pred, labels)
    summary = classification.summary(cm)
    return Scores(
        n=n,
        accuracy=_r(summary["accuracy"]),
        macro_f1=_r(summary["macro_f1"]),
        per_label_f1={lab: _r(f) for lab, f in zip(labels, classification.per_class(cm)["f1"])},
    )


def _accuracy(gold: Sequence[Any], pred: Sequence[Any], multi_label: bool) -> float | None:
    if not gold:
        return None
    if multi_label:
        return _r(sum(set(g) == set(p) for g, p in zip(gold, pred)) / len(gold))
    return _r(sum(g == p for g, p in zip(gold, pred)) / len(gold))


def threshold_rows(
    conf: Sequence[float],
    gold: Sequence[Any],
    teacher: Sequence[Any],
    student: Sequence[Any],
    thresholds: Sequence[float],
    multi_label: bool,
) -> list[ThresholdRow]:
    rows = []
    for t in thresholds:
        idx = [i for i, c in enumerate(conf) if c >= t - 1e-9]
        g = [gold[i] for i in idx]
        rows.append(
            ThresholdRow(
                threshold=t,
                n=len(idx),
                coverage=_r(len(idx) / len(gold)) if gold else 0.0,
                teacher_accuracy=_accuracy(g, [teacher[i] for i in idx], multi_label),
                student_accuracy=_accuracy(g, [student[i] for i in idx], multi_label),
            )
        )
    return rows


@dataclass(frozen=True)
class Labelled:
    """One item as scored: its id, the teacher's and the student's label (names, or lists when multi-label) and
    their confidences."""

    id: str
    teacher: Any
    teacher_conf: float | None
    student: Any
    student_conf: float


def evaluate_scope(
    scope: str,
    rows: Sequence[Labelled],
    gold: dict[str, Any] | None,
    label_names: list[str],
    multi_label: bool,
    thresholds: Sequence[float],
) -> EvalBlock:
    """Metrics over ``rows``; gold-based ones only where the item has a gold label."""
    block = EvalBlock(scope=scope, items=len(rows), with_gold=0)
    if rows:
        block.student_vs_teacher = score([r.teacher for r in rows], [r.student for r in rows], label_names, multi_label)
    keep = [r for r in rows if gold and r.id in gold]
    block.with_gold = len(keep)
    if not gold or not keep:
        return block
    g = [gold[r.id] for r in keep]
    t = [r.teacher for r in keep]
    s = [r.student for r in keep]
    block.student = score(g, s, label_names, multi_label)
    block.teacher = score(g, t, label_names, multi_label)
    tc = [r.teacher_conf for r in keep]
    block.teacher_confidence_note = constant_confidence_note(tc, "teacher")
    if block.teacher_confidence_note is None:
        tc_known = [float(c) for c in tc]  # type: ignore[arg-type]
        block.teacher_confidence_thresholds = threshold_rows(tc_known, g, t, s, thresholds, multi_label)
    sc = [float(r.student_conf) for r in keep]
    block.student_confidence_note = constant_confidence_note(sc, "student")
    if block.student_confidence_note is None:
        block.student_confidence_thresholds = threshold_rows(sc, g, t, s, thresholds, multi_label)
    return block


def constant_confidence_note(conf: Sequence[float | None], who: str) -> str | None:
    """Why a confidence-threshold table would say nothing: confidences missing or all equal, else None."""
    if any(c is None for c in conf):
        return f"the {who} recorded no confidence for some items: no threshold table"
    distinct = {round(float(c), 6) for c in conf}  # type: ignore[arg-type]
    if len(distinct) == 1:
        value = next(iter(distinct))
        sure = who == "teacher" and value == 1
        why = " (a teacher with samples: 1 is always sure; use samples >= 3 for a vote share)" if sure else ""
        return (
            f"every {who} confidence on these {len(conf)} item(s) is {value:g}{why}: every threshold keeps the "
            "same items, no table"
        )
    return None
