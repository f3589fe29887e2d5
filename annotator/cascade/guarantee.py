"""Confidence thresholds with a finite-sample guarantee of agreement with humans (pure maths, no I/O).

The procedure is the one of *Trust or Escalate: LLM Judges with Provable Guarantees for Human Agreement* (Jung,
Brahman & Choi, ICLR 2025, arXiv 2407.18370), applied to labelling instead of pairwise judging.

**One stage (selective labelling).** A stage keeps its label for an item when its confidence ``c >= lambda`` and
escalates the item otherwise. With ``alpha = 1 - target``, the threshold must satisfy the paper's guarantee (its
Eq. 1)::

    P( P(label = human majority | c >= lambda) >= 1 - alpha ) >= 1 - delta

where the outer probability is over the draw of the human-labelled sample. The paper's recipe (its Sec. 2.2 and
Theorem 1, after Bauer 1991 and Angelopoulos et al. 2021, *Learn then Test*):

1. on the human sample, ``n(lambda)`` items have ``c >= lambda`` and ``k(lambda)`` of them disagree with the human
   majority; the exact binomial p-value of ``H0(lambda): risk(lambda) > alpha`` is ``P(Bin(n, alpha) <= k)``,
   which is ``<= delta`` exactly when the one-sided Clopper-Pearson upper bound of the risk at level ``1 - delta``
   is ``<= alpha`` (:func:`risk_upper_bound`);
2. fixed-sequence testing: walk the threshold grid from the highest value down, rejecting ``H0`` while its p-value
   is ``<= delta``, and stop at the first ``H0`` that stands; ``lambda-hat`` is the lowest threshold rejected. The
   walk's order is fixed before the data are seen, so the chance of rejecting any true ``H0`` is at most ``delta``
   (no multiplicity correction is needed along the grid). When the first (highest) threshold already stands, the
   stage keeps nothing.

The grid is the stage's distinct confidence values on the human sample, highest first (for a vote share of ``s``
samples, the fractions ``j/s``): a finer grid gives the same decisions, as ``n`` and ``k`` change only there.

**Cascade** (the paper's Sec. 2.3, *Cascaded Selective Evaluation*, and the authors' code,
``cascaded_evaluation/cascaded_classifier.py``): stages are calibrated in order, stage ``j`` on the human items
that no earlier stage kept. Every kept item is kept by exactly one stage, so the cascade's agreement on kept items
is a weighted mean of the stages' agreements: if each stage's guarantee holds, the cascade's holds. *How delta is
spread over stages:* the authors' code calibrates every stage at the same ``delta``; the union bound then only
gives ``1 - sum(delta_j)`` for the cascade, so here each of the ``K`` stages is tested at ``delta / K``
(Bonferroni), which makes the stated ``1 - delta`` a bound for the whole cascade. The benchmark
(``make bench-cascade``) measures how often the guarantee fails over many human samples.

**Design weights.** A human sample drawn with unequal inclusion probabilities ``pi_i`` (``annotator sample
--strategy uncertain``) is weighted by ``w_i = 1 / pi_i``: agreement and coverage are Hajek ratio estimates and
the binomial bound is Korn & Graubard's (1998) effective-count Clopper-Pearson (``k* = n* x`` the weighted
disagreement rate) with a conservative effective size ``n* = sum w / max w``: the number of items that would
carry the same total weight if each weighed as much as the heaviest. It is the plain count for equal weights (the
exact test). Kish's ``n* = (sum w)^2 / sum w^2``, the usual choice, lets the guarantee fail in up to 35% of human
samples at delta 0.1 when the disagreements sit in a heavily weighted stratum of which the sample holds few items (10 of
300 draws for half the corpus): with ``sum w / max w`` those few items count as few, and the failure rate stayed
within delta in every design simulated (``tests/test_cascade_guarantee.py``, docs/cascade.md).

**Assumption.** The human sample is a random draw (simple, or with the recorded inclusion probabilities) from the
same corpus the cascade labels, and the teachers answer the corpus as they answered the sample (same prompts,
models and sampling settings: a stale calibration is refused).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

# -------------------------------------------------------------------------------------------------- bounds


def risk_upper_bound(disagree: float, n: float, delta: float) -> float:
    """One-sided ``1 - delta`` upper confidence bound of a disagreement rate seen as ``disagree`` of ``n`` items.

    Exact (Clopper-Pearson 1934): the ``r`` with ``P(Bin(n, r) <= disagree) = delta``, i.e. the ``1 - delta``
    quantile of ``Beta(disagree + 1, n - disagree)``; 1.0 when ``n == 0`` or every item disagrees. Non-integer
    counts (Korn-Graubard effective counts) use the same Beta form.
    """
    if n <= 0 or disagree >= n:
        return 1.0
    return float(stats.beta.ppf(1.0 - delta, disagree + 1.0, n - disagree))


def p_value(disagree: float, n: float, alpha: float) -> float:
    """Exact p-value of ``H0: risk > alpha`` after ``disagree`` of ``n``: ``P(Bin(n, alpha) <= disagree)``
    (written as the Beta tail so that effective, non-integer counts work too); 1.0 when ``n == 0``."""
    if n <= 0 or disagree >= n:
        return 1.0
    return float(stats.beta.sf(alpha, disagree + 1.0, n - disagree))


def agreement_interval(agree: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of an agreement rate (``agree`` of ``n``; effective counts allowed)."""
    if n <= 0:
        return 0.0, 1.0
    tail = (1.0 - level) / 2.0
    lo = 0.0 if agree <= 0 else float(stats.beta.ppf(tail, agree, n - agree + 1.0))
    hi = 1.0 if agree >= n else float(stats.beta.ppf(1.0 - tail, agree + 1.0, n - agree))
    return lo, hi


@dataclass(frozen=True)
class Counts:
    """Kept items and their disagreement with humans: raw and effective (Korn & Graubard 1998, conservative size)."""

    kept: int
    weight: float  # sum of the kept items' design weights
    n_eff: float  # effective sample size (kept for equal weights, sum w / max w otherwise)
    disagree_eff: float  # effective disagreements (the raw count for equal weights)

    @property
    def agreement(self) -> float | None:
        return None if self.n_eff <= 0 else 1.0 - self.disagree_eff / self.n_eff


def effective_counts(wrong: np.ndarray, weights: np.ndarray) -> Counts:
    """Counts of the items in ``wrong`` (bool per kept item) under design ``weights`` (1 / inclusion probability).

    Equal weights give the plain counts; unequal ones the conservative effective size ``sum w / max w`` (every
    item weighing as much as the heaviest: see the module docstring for why not Kish's) and the Hajek
    disagreement rate times it."""
    n = int(len(wrong))
    if n == 0:
        return Counts(0, 0.0, 0.0, 0.0)
    w = np.asarray(weights, dtype=float)
    total = float(w.sum())
    if np.allclose(w, w[0]):
        return Counts(n, total, float(n), float(np.count_nonzero(wrong)))
    n_eff = total / float(w.max())
    rate = float(w[np.asarray(wrong, dtype=bool)].sum()) / total
    return Counts(n, total, n_eff, rate * n_eff)


# ---------------------------------------------------------------------------------------------- one stage


@dataclass(frozen=True)
class Step:
    """One hypothesis of the fixed-sequence walk: ``H0(threshold): risk > alpha``."""

    threshold: float
    counts: Counts
    upper_risk: float  # Clopper-Pearson bound at the stage's delta
    p_value: float
    rejected: bool  # H0 rejected: the threshold is certified


@dataclass
class StageChoice:
    """The threshold chosen for one stage, and the walk that chose it."""

    delta: float
    threshold: float | None  # None: the stage keeps nothing (its first hypothesis stood)
    steps: list[Step] = field(default_factory=list)
    reached: int = 0  # human items that reached this stage
    reached_weight: float = 0.0
    kept: Counts = field(default_factory=lambda: Counts(0, 0.0, 0.0, 0.0))

    @property
    def certified(self) -> bool:
        return self.threshold is not None


def grid_of(confidence: np.ndarray) -> list[float]:
    """The thresholds to walk: the distinct confidences, highest first (NaN, i.e. no answer, is never kept)."""
    conf = np.asarray(confidence, dtype=float)
    return sorted({float(c) for c in conf[np.isfinite(conf)]}, reverse=True)


def choose_threshold(
    confidence: np.ndarray,
    wrong: np.ndarray,
    weights: np.ndarray,
    alpha: float,
    delta: float,
    grid: Sequence[float] | None = None,
) -> StageChoice:
    """Fixed-sequence testing down ``grid`` (default :func:`grid_of`) for one stage (see the module docstring).

    ``confidence`` (NaN: the stage gave no valid answer, never kept), ``wrong`` (the stage's label differs from
    the human majority) and ``weights`` are per human item reaching the stage."""
    conf = np.asarray(confidence, dtype=float)
    wrong = np.asarray(wrong, dtype=bool)
    w = np.asarray(weights, dtype=float)
    choice = StageChoice(delta=delta, threshold=None, reached=len(conf), reached_weight=float(w.sum()))
    for lam in grid_of(conf) if grid is None else grid:
        keep = np.isfinite(conf) & (conf >= lam)
        counts = effective_counts(wrong[keep], w[keep])
        p = p_value(counts.disagree_eff, counts.n_eff, alpha)
        step = Step(lam, counts, risk_upper_bound(counts.disagree_eff, counts.n_eff, delta), p, p <= delta)
        choice.steps.append(step)
        if not step.rejected:
            break
        choice.threshold, choice.kept = lam, counts
    return choice


# ------------------------------------------------------------------------------------------------ cascade


@dataclass
class StageData:
    """One stage's answers on the human items (every array in the same item order)."""

    name: str
    confidence: np.ndarray  # NaN: no valid answer
    wrong: np.ndarray  # label != human majority (an item without an answer counts as wrong)
    cost: np.ndarray | None = None  # per item: USD (or tokens) this stage spent on it


@dataclass
class CascadeChoice:
    """Thresholds of every stage, chosen in order (the paper's cascaded selective evaluation)."""

    target: float
    delta: float
    stages: list[StageChoice]
    names: list[str]
    kept_by: np.ndarray  # per human item: index of the stage that kept it, -1 = left to humans
    weights: np.ndarray

    @property
    def certified(self) -> bool:
        """Whether any stage keeps anything (else every item goes to humans)."""
        return any(s.certified for s in self.stages)

    @property
    def thresholds(self) -> list[float | None]:
        return [s.threshold for s in self.stages]

    def coverage(self, stage: int | None = None) -> float:
        """Weighted share of the human items kept (by ``stage``, or by any stage)."""
        total = float(self.weights.sum())
        mask = self.kept_by >= 0 if stage is None else self.kept_by == stage
        return float(self.weights[mask].sum()) / total if total else 0.0


def calibrate_cascade(stages: Sequence[StageData], weights: np.ndarray, target: float, delta: float) -> CascadeChoice:
    """Choose every stage's threshold at ``delta / K`` on the human items no earlier stage kept."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    if not 0.0 < delta <= 0.5:
        raise ValueError(f"delta must be in (0, 0.5], got {delta}")
    alpha = 1.0 - target
    per_stage = delta / len(stages)
    w = np.asarray(weights, dtype=float)
    kept_by = np.full(len(w), -1, dtype=int)
    choices: list[StageChoice] = []
    for j, stage in enumerate(stages):
        open_ = kept_by < 0
        choice = choose_threshold(stage.confidence[open_], stage.wrong[open_], w[open_], alpha, per_stage)
        choices.append(choice)
        if choice.threshold is not None:
            conf = np.asarray(stage.confidence, dtype=float)
            kept_by[open_ & np.isfinite(conf) & (conf >= choice.threshold)] = j
    return CascadeChoice(target, delta, choices, [s.name for s in stages], kept_by, w)


def apply_thresholds(confidences: Sequence[np.ndarray], thresholds: Sequence[float | None]) -> np.ndarray:
    """Per item: the index of the first stage whose confidence reaches its threshold, -1 when none does."""
    n = len(confidences[0])
    kept_by = np.full(n, -1, dtype=int)
    for j, (conf, lam) in enumerate(zip(confidences, thresholds)):
        if lam is None:
            continue
        c = np.asarray(conf, dtype=float)
        kept_by[(kept_by < 0) & np.isfinite(c) & (c >= lam)] = j
    return kept_by


def reach_shares(kept_by: np.ndarray, weights: np.ndarray, thresholds: Sequence[float | None]) -> list[float]:
    """Weighted share of the items each stage is asked about: stage ``j`` sees what no earlier stage kept; a stage
    with no threshold is skipped (it could keep nothing, so it is never asked)."""
    w = np.asarray(weights, dtype=float)
    total = float(w.sum()) or 1.0
    shares = []
    for j, lam in enumerate(thresholds):
        reached = float(w[(kept_by < 0) | (kept_by >= j)].sum()) / total
        shares.append(0.0 if lam is None else reached)
    return shares


# ----------------------------------------------------------------------------------------- sample size


ITEMS_LIMIT = 10_000_000
""":func:`items_needed` searches sample sizes up to this; a stage that needs more is reported as needing it."""


def items_needed(
    stages: Sequence[StageData], weights: np.ndarray, target: float, delta: float, limit: int = ITEMS_LIMIT
) -> tuple[int, str] | None:
    """When nothing can be certified: how many human items in all would certify the most confident threshold of
    the most promising stage, if new items agree as these do; and that stage's name. None when no stage's most
    confident items agree more often than ``target`` (no sample size helps: better teachers or a lower target).
    A stage whose items agree more often than ``target``, but by too little to be shown with ``limit`` items,
    gives ``limit`` (read: at least that many).

    Counts scale with the sample; the stage is calibrated on all items (no earlier stage keeps any), at
    ``delta / K``."""
    alpha, per_stage = 1.0 - target, delta / len(stages)
    w = np.asarray(weights, dtype=float)
    n_now = len(w)
    best: tuple[int, str] | None = None
    for stage in stages:
        grid = grid_of(stage.confidence)
        if not grid:
            continue
        conf = np.asarray(stage.confidence, dtype=float)
        keep = np.isfinite(conf) & (conf >= grid[0])
        c = effective_counts(np.asarray(stage.wrong, dtype=bool)[keep], w[keep])
        if c.n_eff <= 0 or c.disagree_eff / c.n_eff >= alpha:
            continue
        scale = _scale_to_pass(c.disagree_eff, c.n_eff, alpha, per_stage, limit / max(n_now, 1))
        total = limit if scale is None else min(math.ceil(n_now * scale), limit)
        if best is None or total < best[0]:
            best = (total, stage.name)
    return best


def _scale_to_pass(disagree: float, n: float, alpha: float, delta: float, max_scale: float) -> float | None:
    """The smallest factor ``s >= 1`` with ``p_value(s * disagree, s * n, alpha) <= delta`` (bisection; the
    p-value falls as ``s`` grows when the rate is below ``alpha``)."""
    if p_value(disagree * max_scale, n * max_scale, alpha) > delta:
        return None
    lo, hi = 1.0, max_scale
    if p_value(disagree, n, alpha) <= delta:
        return 1.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if p_value(disagree * mid, n * mid, alpha) <= delta:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-6 * hi:
            break
    return hi
