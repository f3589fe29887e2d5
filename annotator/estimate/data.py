"""Join a human sample with one teacher run into the arrays :mod:`annotator.estimate.stats` works on.

* The population: every item of the run with an ok teacher label (failed rows are outside it and counted).
* An item's human label: the majority of its human ratings (:func:`annotator.audit.humans.majority_vote`); a tie
  is split evenly between the tied labels (two of four humans say ``a``, two ``b``: the item counts 1/2 to each),
  so no drawn item is lost and the target is "the share humans would give, ties split".
* The design: the ``inclusion_prob`` column written by ``annotator sample``, else a simple random sample of the
  population (every item ``n / N``). When the labelled items imply fewer population items than the run has
  (``sum 1/pi < N``: some drawn items were never labelled), the probabilities are scaled by that response rate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotator.audit.dataset import _check_labels, resolve_labels
from annotator.audit.design import INCLUSION_COLUMN
from annotator.audit.humans import HumanAnnotations, majority_vote
from annotator.audit.slices import MISSING, read_slice_column
from annotator.audit.tabular import few
from annotator.audit.teacher import TeacherAnnotations
from annotator.errors import InputDataError

RANDOM = "random sample"
DESIGN = "inclusion probabilities"
IMPLIED_SIZE_TOLERANCE = 0.05  # warn when sum(1/pi) is further than this from the population size
MAX_IMPLIED_RATIO = 10.0  # sum(1/pi) more than this many times the population: not a sample of this run


@dataclass
class Joined:
    """One teacher's population and the human sample inside it."""

    labels: list[str]
    label_source: str
    ids: list[str]  # the population, in the run's order
    F: np.ndarray  # population x labels, the teacher's one-hot labels
    rows: np.ndarray  # the human items' positions in ``ids``
    Y: np.ndarray  # human items x labels, the human label (ties split)
    prob: np.ndarray  # human items' inclusion probabilities
    design: str
    failed: int  # teacher rows that failed (outside the population)
    tied: int  # human items whose vote tied
    notes: list[str] = field(default_factory=list)


def human_label(ratings: dict[str, str], code: dict[str, int], k: int) -> np.ndarray:
    """The item's human label as a vector over the label set: the majority, or a tie split evenly."""
    out = np.zeros(k)
    top = majority_vote(ratings.values())
    if top is not None:
        out[code[top]] = 1.0
        return out
    counts = Counter(ratings.values())
    best = max(counts.values())
    tied = [lab for lab, c in counts.items() if c == best]
    out[[code[lab] for lab in tied]] = 1.0 / len(tied)
    return out


def _human_items(humans: HumanAnnotations, teacher: TeacherAnnotations, notes: list[str]) -> list[str]:
    """The human items in the population; an error when none is, notes for those left out."""
    unknown = [i for i in humans.ratings if i not in teacher.ids]
    queued = [i for i in humans.ratings if i in teacher.left_to_humans]
    failed = [i for i in humans.ratings if i in teacher.ids and i not in teacher.labels and i not in queued]
    inside = [i for i in humans.ratings if i in teacher.labels]
    if len(unknown) == len(humans.ratings):
        raise InputDataError(
            f"human annotations {humans.path}: none of its {len(humans.ratings)} item ids is in the teacher run "
            f"{teacher.path} (e.g. {few(unknown, 3)}){_case_hint(unknown, teacher.ids)}; give the humans file of "
            "this run's items (same id column)"
        )
    if not inside:
        why = (
            "left every human-labelled item to its human queue"
            if queued and not failed
            else ("failed on every human-labelled item" + (" it did not leave to its human queue" if queued else ""))
        )
        raise InputDataError(f"the teacher {teacher.path} {why}; nothing to estimate")
    if unknown:
        notes.append(
            f"{len(unknown)} human item(s) are not in the run and were left out: {few(unknown)}"
            + _case_hint(unknown, teacher.ids)
        )
    if failed:
        notes.append(f"{len(failed)} human item(s) the teacher failed on are outside the population: {few(failed)}")
    if teacher.left_to_humans:
        notes.append(
            f"a cascade run: its {len(teacher.left_to_humans):,} rows left to humans have no teacher label and are "
            f"outside the population ({len(queued)} of the human items are among them), so the shares describe the "
            "rows the cascade kept, not the corpus (the rows it escalated are the hard ones). For the whole corpus "
            "give --teacher OUTPUT_DIR/stages/NAME, the first stage's directory (it labelled every row)"
        )
    return inside


def _case_hint(unknown: list[str], ids: set[str]) -> str:
    """A hint when ids outside the run differ from run ids only in upper/lower case (ids are case-sensitive)."""
    folded = {i.casefold() for i in ids}
    near = [i for i in unknown if i.casefold() in folded]
    return (
        (
            f" ({len(near)} of them are run ids written in other upper/lower case: ids are case-sensitive, write "
            "them as the run does)"
        )
        if near
        else ""
    )


def _design(humans: HumanAnnotations, items: list[str], population: int, notes: list[str]) -> tuple[np.ndarray, str]:
    if not humans.inclusion_prob:
        return np.full(len(items), len(items) / population), RANDOM
    prob = np.array([humans.inclusion_prob[i] for i in items], dtype=float)
    implied = float((1.0 / prob).sum())
    if not implied <= MAX_IMPLIED_RATIO * population:
        raise InputDataError(
            f"human annotations {humans.path}: its {INCLUSION_COLUMN} values imply a population of {implied:.3g} "
            f"items (sum of 1/{INCLUSION_COLUMN}), more than {MAX_IMPLIED_RATIO:g} times the {population:,} items of "
            "the teacher run: they are not the probabilities of a sample of this run. Give the sheet `annotator "
            f"sample` wrote for this run, or drop the {INCLUSION_COLUMN} column (a simple random sample)"
        )
    scaled, rate = response_scaled(prob, population)
    if rate < 1.0:
        notes.append(
            f"the labelled items imply {implied:,.0f} of the run's {population:,} items: about {1 - rate:.0%} of the "
            f"drawn items were not labelled (or the sample was drawn from another run). The {INCLUSION_COLUMN} values "
            f"are scaled by the response rate {rate:.3f}, taking the unlabelled items as missing at random within "
            "their stratum; label the rest of the sheet if that is doubtful"
        )
    elif implied > (1.0 + IMPLIED_SIZE_TOLERANCE) * population:
        notes.append(
            f"the inclusion probabilities imply {implied:,.0f} items but the run has {population:,} with an ok "
            "label: was the sample drawn from this run? (the estimate weights the items by 1/inclusion_prob as "
            "given)"
        )
    return scaled, DESIGN


def response_scaled(prob: np.ndarray, population: int) -> tuple[np.ndarray, float]:
    """The labelled items' inclusion probabilities and the response rate ``r = sum(1/pi) / N`` when it is below
    ``1 - IMPLIED_SIZE_TOLERANCE`` (drawn items left unlabelled): ``pi * r`` is the probability that an item was
    drawn AND labelled when every stratum answered at the same rate. The estimate (a ratio of weighted sums) does
    not change; the variance's finite-population correction ``1 - pi`` does: with the drawn ``pi`` it would be too
    small (a sample drawn at 60% and half labelled covered 84% instead of 95%, in simulation). Else ``(prob, 1)``."""
    rate = float((1.0 / prob).sum()) / population
    return (prob * rate, rate) if rate < 1.0 - IMPLIED_SIZE_TOLERANCE else (prob, 1.0)


def join(humans: HumanAnnotations, teacher: TeacherAnnotations, labels: list[str] | None = None) -> Joined:
    """The arrays of one teacher: population labels, the human items in it, their labels and probabilities."""
    label_set, label_source = resolve_labels(humans, teacher, labels)
    if len(label_set) < 2:
        raise InputDataError(
            f"the label set ({label_source}) has one label only ({few(label_set)}): its share is 1 by definition. "
            "A share needs at least 2 labels: give --labels a,b,... or a run with several labels"
        )
    code = {lab: i for i, lab in enumerate(label_set)}
    _check_labels(humans, teacher, code.get, label_set, label_source)
    notes: list[str] = []
    items = _human_items(humans, teacher, notes)
    ids = list(teacher.labels)
    k = len(label_set)
    F = np.zeros((len(ids), k))
    F[np.arange(len(ids)), [code[teacher.labels[i]] for i in ids]] = 1.0
    position = {item: r for r, item in enumerate(ids)}
    Y = np.array([human_label(humans.ratings[i], code, k) for i in items]).reshape(len(items), k)
    tied = int((Y.max(axis=1) < 1.0).sum())
    if tied:
        notes.append(f"{tied} human item(s) have a tied vote; each counts evenly to its tied labels")
    prob, design = _design(humans, items, len(ids), notes)
    return Joined(
        labels=label_set,
        label_source=label_source,
        ids=ids,
        F=F,
        rows=np.array([position[i] for i in items], dtype=np.int64),
        Y=Y,
        prob=prob,
        design=design,
        failed=len(teacher.failed),
        tied=tied,
        notes=notes,
    )


def same_labels(t: TeacherAnnotations, base: TeacherAnnotations, first: Joined, explicit: bool) -> None:
    """Several teachers are compared label by label on the first one's label set: refuse a teacher ``t`` whose labels
    (or run.json label set, unless --labels chose the set) differ from it (``first``: the first teacher's join)."""
    listed = set(t.manifest_labels or ()) if not explicit and first.label_source == "run.json" else set()
    extra = sorted((set(t.labels.values()) | listed) - set(first.labels))
    missing = sorted(set(first.labels) - listed) if listed else []
    if extra or missing:
        differs = "; ".join(
            x for x in (f"has {few(extra)}" if extra else "", f"lacks {few(missing)}" if missing else "") if x
        )
        raise InputDataError(
            f"teacher {t.path} {differs} against the label set of {base.path} ({first.label_source}: "
            f"{', '.join(first.labels[:8])}{', ...' if len(first.labels) > 8 else ''}); teachers are compared label by "
            "label on one label set: give --labels with every label to estimate, or teachers of the same labels"
        )


def slice_of(columns: list[str], teacher: Path, ids: list[str]) -> tuple[list[str], str]:
    """The slice of every item in ``ids``, read from the run's input file (several columns: their values joined by
    `` / ``; an item without a value has ``(missing)``), and the file read."""
    per_column = [read_slice_column(col, teacher) for col in columns]
    names = [" / ".join(values.get(i) or MISSING for values, _ in per_column) for i in ids]
    return names, per_column[0][1]
