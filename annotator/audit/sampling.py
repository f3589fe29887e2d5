"""Choose the items humans should label for an audit, and say how many are needed.

Designs (all seeded, drawn from the run's successfully labelled items):

* ``random``: simple random sample without replacement; every item has inclusion probability n/N.
* ``stratified``: strata are the teacher's labels; every label first gets an equal share of half the sample (all
  its items when it has fewer: rare classes are covered), the rest is proportional to the label's size.
* ``uncertain``: strata are bands of the teacher's confidence; low-confidence bands are oversampled (allocation
  proportional to ``N_h * (1 - mean confidence_h + 0.1)``, at least one draw per band).
* ``confidence``: Confidence-Driven Inference (Gligoric et al., NAACL 2025, sec. 3), for ``annotator estimate``:
  an item's inclusion probability is proportional to the estimated standard deviation of its teacher label's error,
  ``u_h = sqrt(e_h)``, mixed with the uniform rate: ``pi_h = n/N * ((1 - tau) u_h / mean(u) + tau)`` with
  ``tau = 0.2``. ``e_h`` is the share of wrong teacher labels at the stratum's confidence: ``1 - confidence`` (a
  calibrated teacher; at least 0.05, as a fully self-consistent answer can still be wrong), or, with ``--pilot``,
  the pilot's error rate at that confidence shrunk towards it (5 pseudo-items). Strata are the distinct confidence
  values (self-consistency vote shares), or bands of width 0.05 when there are more than 20; each gets at least one
  draw, so every item can be drawn (``pi > 0``), which the estimate's validity needs.

Every design gives each of its strata at least one draw (``--n`` must be at least the number of strata), so every
item of the run has a positive inclusion probability. Within a stratum ``h`` items are drawn without replacement,
so the inclusion probability is exactly ``pi_i = n_h / N_h``; it is written to the sheet (column
``inclusion_prob``) and the audit reports the accuracy weighted by ``1 / pi_i`` next to the raw one.

Overlap: ``annotators`` people, ``per_item`` of them per item, assigned round-robin over the shuffled items so
every annotator gets ``n * per_item / annotators`` items (+-1) and every pair of annotators shares items.

Planning (:func:`plan`) uses normal approximations, stated with every number it prints:

* accuracy: Wald half-width ``z * sqrt(deff * p (1 - p) / n)``, with ``p`` the expected accuracy (the run's mean
  confidence, or the accuracy on a pilot human file) and ``deff`` Kish's design effect of unequal weights
  ``n * sum(w^2) / sum(w)^2`` (Kish 1965, section 11.7);
* Krippendorff's alpha: the large-sample variance of the two-rater intraclass kappa for a binary category (Bloch
  & Kraemer 1989), ``var = (1 - a)/n * [(1 - a)(1 - 2a) + a(2 - a) / (2 p (1 - p))]``, applied, as Krippendorff
  (2004, section 11.4) recommends for sample sizes, to the rarest category (``p`` = its share among the teacher's
  labels of the drawn items, so a stratified draw that covers rare labels needs fewer items) against the rest;
  ``a`` is the alpha among the pilot's humans, or an assumed value. With more than 2 ratings per item the interval
  is narrower, so this is conservative.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from scipy import stats

from annotator.audit.design import INCLUSION_COLUMN, LONG_SHEET, WIDE_SHEET
from annotator.choices import Strategy
from annotator.errors import InputDataError
from annotator.guard import check_folder, has_keys
from annotator.records import iter_annotations, read_manifest
from annotator.rundir import atomic_write_files
from annotator.tables import read_table
from annotator.tasks import is_classification

if TYPE_CHECKING:
    from annotator.audit.dataset import AuditData

log = logging.getLogger(__name__)

STRATEGIES = tuple(s.value for s in Strategy)
CONFIDENCE_BANDS = (0.5, 0.7, 0.9)  # band edges: [0, .5), [.5, .7), [.7, .9), [.9, 1]
UNCERTAIN_FLOOR = 0.1
CDI_UNIFORM_SHARE = 0.2  # tau: the share of each item's inclusion probability that is uniform
CDI_MIN_ERROR = 0.05  # the error rate assumed at least, whatever the confidence
CDI_PILOT_PRIOR = 5.0  # pseudo-items of the assumed error rate added to a pilot stratum's counts
MAX_CONFIDENCE_STRATA = 20
MAX_ANNOTATORS = 1000  # a wide sheet has a column per annotator (and cascade.human_queue.annotators)
ALT_TEST_MIN_ITEMS = 30
LS_TASKS = "label_studio_tasks.json"
LS_CONFIG = "label_studio_config.xml"
DESIGN_FILE = "sample.json"
SHEET_FILES = (LONG_SHEET, WIDE_SHEET, LS_TASKS, LS_CONFIG, DESIGN_FILE)


@dataclass
class Candidate:
    """A successfully labelled item of the run."""

    id: str
    text: str
    label: str
    confidence: float | None


@dataclass
class Stratum:
    name: str
    size: int
    drawn: int
    inclusion_prob: float


@dataclass
class Sample:
    """Drawn items in sheet order, their inclusion probabilities, and the strata they came from."""

    strategy: str
    seed: int
    population: int
    items: list[Candidate]
    inclusion_prob: list[float]
    strata: list[Stratum] = field(default_factory=list)

    @property
    def design_effect(self) -> float:
        """Kish's design effect of the weights 1/pi (1.0 for an equal-probability sample)."""
        w = 1.0 / np.asarray(self.inclusion_prob)
        return float(len(w) * (w**2).sum() / w.sum() ** 2) if len(w) else 1.0


def load_candidates(run: str | Path) -> tuple[list[Candidate], list[str]]:
    """The run's successfully labelled single-label items, and its label set (run.json, else observed)."""
    candidates: list[Candidate] = []
    for rec in iter_annotations(run):
        if not is_classification(rec.task):
            raise InputDataError(f"run {run} is a '{rec.task}' task; sampling for an audit needs a label task")
        label = rec.single_label()
        if rec.status == "ok" and label is not None:
            candidates.append(Candidate(rec.id, rec.text, label, rec.confidence))
    if not candidates:
        raise InputDataError(f"run {run} has no successfully labelled items to sample from")
    manifest = read_manifest(run)
    labels = [lab.name for lab in manifest.labels] if manifest and manifest.labels else []
    return candidates, labels or sorted({c.label for c in candidates})


def allocate(sizes: list[int], weights: list[float], n: int, minimum: list[int]) -> list[int]:
    """Split ``n`` draws over strata: first ``minimum`` (capped by size), the rest proportional to ``weights``
    (largest share first when rounding leaves draws over), never more than a stratum's size."""
    alloc = [min(m, s) for m, s in zip(minimum, sizes)]
    while sum(alloc) > n:  # minimums too many for n: take from the biggest allocations, keep rare strata
        alloc[max(range(len(alloc)), key=lambda h: (alloc[h], sizes[h]))] -= 1
    remaining = n - sum(alloc)
    while remaining > 0:
        open_ = [h for h, s in enumerate(sizes) if alloc[h] < s]
        if not open_:
            break
        w = {h: max(weights[h], 0.0) for h in open_}
        total = sum(w.values())
        if total <= 0:
            w, total = {h: 1.0 for h in open_}, float(len(open_))
        quota = {h: remaining * w[h] / total for h in open_}
        give = {h: min(sizes[h] - alloc[h], math.floor(q)) for h, q in quota.items()}
        if not any(give.values()):
            give[max(open_, key=lambda h: (quota[h], -h))] = 1
        for h, g in give.items():
            alloc[h] += g
            remaining -= g
    return alloc


def _band(conf: float | None) -> str:
    if conf is None:
        return "no confidence"
    lo = 0.0
    for edge in CONFIDENCE_BANDS:
        if conf < edge:
            return f"[{lo:.1f}, {edge:.1f})"
        lo = edge
    return f"[{lo:.1f}, 1.0]"


def confidence_stratum(confidences: list[float | None]) -> Callable[[float | None], str]:
    """``--strategy confidence``: the stratum name of a confidence, given the run's confidences: the value itself
    when the run has at most ``MAX_CONFIDENCE_STRATA`` distinct values, else its band of width 0.05."""
    distinct = {round(c, 3) for c in confidences if c is not None}

    def name(conf: float | None) -> str:
        if conf is None:
            return "no confidence"
        if len(distinct) <= MAX_CONFIDENCE_STRATA:
            return f"{round(conf, 3):.3f}"
        lo = min(math.floor(conf * 20), 19) / 20
        return f"[{lo:.2f}, {lo + 0.05:.2f})" if lo < 0.95 else "[0.95, 1.00]"

    return name


def _strata(cands: list[Candidate], strategy: str, labels: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    by_confidence = confidence_stratum([c.confidence for c in cands]) if strategy == "confidence" else None
    for i, c in enumerate(cands):
        key = (
            "all"
            if strategy == "random"
            else c.label
            if strategy == "stratified"
            else by_confidence(c.confidence)
            if by_confidence
            else _band(c.confidence)
        )
        groups.setdefault(key, []).append(i)
    if strategy == "stratified":
        order = {lab: k for k, lab in enumerate(labels)}
        groups = dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    elif strategy in ("uncertain", "confidence"):
        groups = dict(sorted(groups.items()))
    return groups


def _mean_confidence(members: list[int], cands: list[Candidate]) -> float:
    confs = [c for i in members if (c := cands[i].confidence) is not None]
    return float(np.mean(confs)) if confs else 0.5


def error_rates(
    groups: dict[str, list[int]], cands: list[Candidate], pilot: dict[str, tuple[int, int]] | None = None
) -> list[float]:
    """``--strategy confidence``: each stratum's estimated share of wrong teacher labels: ``1 - confidence`` (at
    least ``CDI_MIN_ERROR``), or with a pilot ``(errors + k e) / (n + k)`` from its ``(errors, n)`` in the stratum."""
    out = []
    for name, members in groups.items():
        assumed = max(1.0 - _mean_confidence(members, cands), CDI_MIN_ERROR)
        errors, seen = (pilot or {}).get(name, (0, 0))
        out.append(max((errors + CDI_PILOT_PRIOR * assumed) / (seen + CDI_PILOT_PRIOR), CDI_MIN_ERROR))
    return out


def _allocation(
    groups: dict[str, list[int]],
    cands: list[Candidate],
    strategy: str,
    n: int,
    pilot: dict[str, tuple[int, int]] | None = None,
) -> list[int]:
    sizes = [len(v) for v in groups.values()]
    if strategy == "stratified":
        floor = math.ceil(n / (2 * len(sizes)))
        return allocate(sizes, [float(s) for s in sizes], n, [floor] * len(sizes))
    if strategy == "uncertain":
        weights = [len(m) * (1.0 - _mean_confidence(m, cands) + UNCERTAIN_FLOOR) for m in groups.values()]
        return allocate(sizes, weights, n, [1] * len(sizes))
    if strategy == "confidence":
        u = np.sqrt(error_rates(groups, cands, pilot))
        mean_u = float(np.dot(sizes, u) / sum(sizes))
        weights = [s * ((1 - CDI_UNIFORM_SHARE) * uh / mean_u + CDI_UNIFORM_SHARE) for s, uh in zip(sizes, u)]
        return allocate(sizes, weights, n, [1] * len(sizes))
    return [n]


def allocation(
    cands: list[Candidate], n: int, strategy: str, labels: list[str], pilot: dict[str, tuple[int, int]] | None = None
) -> list[tuple[str, list[int], int]]:
    """The design of a draw: each stratum's name, members (indices into ``cands``) and number of draws."""
    groups = _strata(cands, strategy, labels)
    if n < len(groups):
        raise InputDataError(
            f"--strategy {strategy} needs --n of at least the number of its strata ({len(groups)}: "
            f"{', '.join(list(groups)[:6])}{', ...' if len(groups) > 6 else ''}), so that every item can be drawn "
            f"(an item that cannot be drawn biases every weighted estimate); got {n}"
        )
    alloc = _allocation(groups, cands, strategy, n, pilot)
    return [(name, members, k) for (name, members), k in zip(groups.items(), alloc)]


def draw(
    cands: list[Candidate],
    n: int,
    strategy: str,
    seed: int,
    labels: list[str],
    pilot: dict[str, tuple[int, int]] | None = None,
) -> Sample:
    """Draw ``n`` items (all of them when the run has fewer) with the given design; seeded. ``pilot``:
    ``--strategy confidence`` only, the (errors, items) of a pilot per confidence stratum (:func:`pilot_errors`)."""
    if strategy not in STRATEGIES:
        raise InputDataError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if n < 1:
        raise InputDataError(f"--n must be at least 1; got {n}")
    n = min(n, len(cands))
    rng = np.random.default_rng(seed)
    chosen: list[tuple[int, float]] = []
    strata: list[Stratum] = []
    for name, members, k in allocation(cands, n, strategy, labels, pilot):
        prob = k / len(members)
        picked = rng.choice(len(members), size=k, replace=False).tolist() if k else []
        chosen += [(members[j], prob) for j in picked]
        strata.append(Stratum(name=name, size=len(members), drawn=k, inclusion_prob=prob))
    order = rng.permutation(len(chosen))
    log.info("%s sample: %d of %d items, strata %s", strategy, len(chosen), len(cands), [s.drawn for s in strata])
    return Sample(
        strategy=strategy,
        seed=seed,
        population=len(cands),
        items=[cands[chosen[j][0]] for j in order],
        inclusion_prob=[chosen[j][1] for j in order],
        strata=strata,
    )


def assign(n_items: int, annotators: list[str], per_item: int) -> list[list[str]]:
    """Round-robin overlap design: item ``j`` goes to annotators ``(j * per_item + r) mod K``."""
    k = len(annotators)
    if not 1 <= per_item <= k:
        raise InputDataError(f"--per-item must be between 1 and --annotators ({k}); got {per_item}")
    return [[annotators[(j * per_item + r) % k] for r in range(per_item)] for j in range(n_items)]


def annotator_names(k: int, names: str | None, option: str = "--annotators") -> list[str]:
    if names:
        out = [x.strip() for x in names.split(",") if x.strip()]
        if len(set(out)) != len(out):
            raise InputDataError(f"--annotator-names repeats a name: {names!r}")
        if len(out) > MAX_ANNOTATORS:
            raise InputDataError(f"--annotator-names gives {len(out):,} names; at most {MAX_ANNOTATORS:,}")
        return out
    if not 1 <= k <= MAX_ANNOTATORS:
        raise InputDataError(f"{option} must be between 1 and {MAX_ANNOTATORS} (one sheet column each); got {k}")
    return [f"ann_{i + 1}" for i in range(k)]


def _filled_sheets(out: Path) -> list[str]:
    """Sheets in ``out`` with at least one label written (any non-empty cell outside the sheet's own columns)."""
    filled = []
    for name in (LONG_SHEET, WIDE_SHEET):
        path = out / name
        if not path.exists():
            continue
        try:
            df = read_table(path, "annotation sheet", allow_empty=True)
        except InputDataError:  # unreadable: treat as precious, never overwrite
            filled.append(name)
            continue
        own = {"item_id", "annotator", "text", INCLUSION_COLUMN}
        if any(df[c].drop_nulls().str.strip_chars().str.len_chars().gt(0).any() for c in df.columns if c not in own):
            filled.append(name)
    return filled


def _ls_config(labels: list[str]) -> str:
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(lab)}/>" for lab in labels)
    return (
        '<View>\n  <Text name="text" value="$text"/>\n'
        f'  <Choices name="label" toName="text" choice="single" showInline="true">\n{choices}\n  </Choices>\n'
        "</View>\n"
    )


def write_sheets(
    out: Path,
    items: list[Candidate],
    assignment: list[list[str]],
    annotators: list[str],
    labels: list[str],
    inclusion_prob: list[float] | None = None,
    design: dict[str, Any] | None = None,
    command: str = "sample",
) -> dict[str, str]:
    """Blank annotation sheets (long and wide CSV), Label Studio tasks and labeling config, and the design file.

    Replaces blank sheets of an earlier call, but refuses to touch a sheet in which anyone has written a label, and
    any of these files in a folder without a ``sample.json`` of this tool's (see :mod:`annotator.guard`). The five
    files are written all or none (a full disk leaves the folder as it was)."""
    check_folder(out, command, SHEET_FILES, DESIGN_FILE, has_keys("annotators", "per_item"))
    filled = _filled_sheets(out)
    if filled:
        raise InputDataError(
            f"{out} holds a sheet with labels already filled in ({', '.join(filled)}); choose another output folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    probs: dict[str, list[float]] = {INCLUSION_COLUMN: inclusion_prob} if inclusion_prob is not None else {}
    long_rows: dict[str, list[Any]] = {"item_id": [], "annotator": [], "label": [], "text": []}
    for name in probs:
        long_rows[name] = []
    for j, (item, who) in enumerate(zip(items, assignment)):
        for ann in who:
            long_rows["item_id"].append(item.id)
            long_rows["annotator"].append(ann)
            long_rows["label"].append(None)
            long_rows["text"].append(item.text)
            for name, values in probs.items():
                long_rows[name].append(values[j])
    wide: dict[str, list[Any]] = {"item_id": [c.id for c in items], "text": [c.text for c in items], **probs}
    wide.update({ann: [None] * len(items) for ann in annotators})
    tasks = [
        {"data": {"item_id": c.id, "text": c.text, **{k: v[j] for k, v in probs.items()}}} for j, c in enumerate(items)
    ]
    files = {
        "long": out / LONG_SHEET,
        "wide": out / WIDE_SHEET,
        "label_studio_tasks": out / LS_TASKS,
        "label_studio_config": out / LS_CONFIG,
        "design": out / DESIGN_FILE,
    }
    atomic_write_files(
        {  # the design first: the folder is marked as this tool's before any sheet replaces another
            files["design"]: json.dumps(design or {}, ensure_ascii=False, indent=2),
            files["long"]: pl.DataFrame(long_rows, schema_overrides={"label": pl.String}).write_csv(),
            files["wide"]: pl.DataFrame(wide, schema_overrides={a: pl.String for a in annotators}).write_csv(),
            files["label_studio_tasks"]: json.dumps(tasks, ensure_ascii=False, indent=1),
            files["label_studio_config"]: _ls_config(labels),
        }
    )
    return {k: str(v) for k, v in files.items()}


# ------------------------------------------------------------------------------------------------ planning


@dataclass
class PlanRow:
    n: int
    accuracy_half_width: float
    alpha_half_width: float
    items_per_annotator: float


@dataclass
class Plan:
    """Expected 95% CI half-widths for a few sample sizes, and the sizes needed for a target half-width."""

    confidence: float
    accuracy_guess: float
    accuracy_source: str
    alpha_guess: float
    alpha_source: str
    rarest_label: str
    rarest_share: float
    design_effect: float
    rows: list[PlanRow]
    target: float | None = None
    n_for_accuracy: int | None = None
    n_for_alpha: int | None = None
    notes: list[str] = field(default_factory=list)


def accuracy_variance(p: float, deff: float = 1.0) -> float:
    """n * Var(accuracy) under the Wald normal approximation, inflated by the design effect."""
    return deff * p * (1.0 - p)


def alpha_variance(a: float, p: float) -> float:
    """n * Var(alpha) for two raters and a binary category of share ``p`` (Bloch & Kraemer 1989)."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return (1.0 - a) * ((1.0 - a) * (1.0 - 2.0 * a) + a * (2.0 - a) / (2.0 * p * (1.0 - p)))


def plan(
    cands: list[Candidate],
    drawn: list[Candidate],
    sizes: list[int],
    confidence: float = 0.95,
    target: float | None = None,
    pilot: tuple[float, float] | None = None,
    assumed_alpha: float = 0.8,
    deff: float = 1.0,
    annotators: int = 3,
    per_item: int = 3,
) -> Plan:
    """Half-widths for each size in ``sizes``; ``pilot`` = (accuracy, human alpha) measured on a pilot file.
    The rarest label's share is taken in ``drawn`` (the design decides how often humans see it)."""
    if not 0 <= assumed_alpha < 1:  # NaN too: the plan would print nonsense half-widths
        raise InputDataError(f"--expected-alpha must be an agreement in [0, 1); got {assumed_alpha}")
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    confs = [c.confidence for c in cands if c.confidence is not None and 0.0 <= c.confidence <= 1.0]
    if pilot is not None:
        p_acc, acc_src = pilot[0], "accuracy on the pilot human file"
        a, a_src = pilot[1], "alpha among the pilot's humans"
    else:
        p_acc = float(np.mean(confs)) if confs else 0.8
        acc_src = "the run's mean teacher confidence" if confs else "assumed 0.8 (the run has no confidence)"
        a, a_src = assumed_alpha, "assumed; give --pilot for a measured value"
    counts = Counter(c.label for c in drawn or cands)
    rare, rare_n = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    share = rare_n / sum(counts.values())
    v_acc, v_alpha = accuracy_variance(p_acc, deff), alpha_variance(a, share)
    rows = [
        PlanRow(
            n=n,
            accuracy_half_width=z * math.sqrt(v_acc / n),
            alpha_half_width=z * math.sqrt(max(v_alpha, 0) / n),
            items_per_annotator=n * per_item / annotators,
        )
        for n in sizes
    ]
    result = Plan(
        confidence=confidence,
        accuracy_guess=p_acc,
        accuracy_source=acc_src,
        alpha_guess=a,
        alpha_source=a_src,
        rarest_label=rare,
        rarest_share=share,
        design_effect=deff,
        rows=rows,
        target=target,
    )
    if target is not None:
        if not 0 < target < 1:
            raise InputDataError(f"--target-ci must be a half-width between 0 and 1; got {target}")
        result.n_for_accuracy = max(1, math.ceil(z * z * v_acc / target**2))
        result.n_for_alpha = max(1, math.ceil(z * z * max(v_alpha, 0) / target**2))
    small = [r.n for r in rows if r.items_per_annotator < ALT_TEST_MIN_ITEMS]
    if small:
        result.notes.append(
            f"with {annotators} annotators and {per_item} per item, n = {', '.join(map(str, small))} gives fewer than "
            f"{ALT_TEST_MIN_ITEMS} items per annotator: the alt-test would exclude them (--alt-test-min-items)"
        )
    if per_item < 3:
        result.notes.append(f"{per_item} annotator(s) per item: the alt-test needs at least 3 to be more than weak")
    return result


def _pilot(pilot: str | Path, run: str | Path) -> AuditData:
    """The pilot human file joined with the run (its errors name ``--pilot``)."""
    from annotator.audit.dataset import build
    from annotator.audit.humans import load_humans
    from annotator.audit.teacher import load_teacher

    try:
        return build(load_humans(pilot), load_teacher(run))
    except InputDataError as exc:
        raise InputDataError(f"--pilot {pilot}: {exc}") from None


def pilot_errors(pilot: str | Path, run: str | Path, cands: list[Candidate]) -> dict[str, tuple[int, int]]:
    """``--strategy confidence --pilot``: (wrong teacher labels, items) of the pilot per confidence stratum,
    against the human majority (tied items left out)."""
    d = _pilot(pilot, run)
    name = confidence_stratum([c.confidence for c in cands])
    out: dict[str, tuple[int, int]] = {}
    for conf, gold, label in zip(d.confidence, d.majority, d.teacher):
        if gold < 0:
            continue
        key = name(None if np.isnan(conf) else float(conf))
        errors, seen = out.get(key, (0, 0))
        out[key] = (errors + int(gold != label), seen + 1)
    return out


def pilot_estimates(pilot: str | Path, run: str | Path) -> tuple[float, float]:
    """(teacher accuracy vs the human majority, Krippendorff's alpha among the humans) on a pilot human file."""
    from annotator.audit import agreement as ag

    d = _pilot(pilot, run)
    g = d.majority >= 0
    if not g.any():
        raise InputDataError(f"pilot {pilot}: no item has a human majority label")
    acc = float((d.majority[g] == d.teacher[g]).mean())
    alpha = ag.krippendorff_alpha(d.counts, d.level, d.values)
    if not math.isfinite(alpha):
        raise InputDataError(f"pilot {pilot}: Krippendorff's alpha is undefined (no variation among the humans)")
    return acc, float(alpha)
