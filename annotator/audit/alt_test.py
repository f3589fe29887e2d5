"""The Alternative Annotator Test (alt-test) of Calderon, Reichart & Dror (ACL 2025), "The Alternative Annotator
Test for LLM-as-a-Judge: How to Statistically Justify Replacing Human Annotators with LLMs".

Our reading of the procedure (it follows the authors' reference implementation):

1. Keep the items that the teacher labelled and at least two humans labelled.
2. For each human annotator ``j`` (leave-one-annotator-out), on the kept items ``j`` labelled, let ``R_i`` be the
   labels of the *other* humans on item ``i``. The alignment score of an annotation ``x`` with ``R_i`` is
   ``accuracy`` (mean of ``x == r`` over ``r`` in ``R_i``) for labels, or ``-RMSE`` (``-sqrt(mean((x - r)^2))``)
   for numeric ratings. Score the teacher, ``S_f(i)``, and human ``j``, ``S_j(i)``, against the same ``R_i``.
3. Indicators ``W_f(i) = 1[S_f(i) >= S_j(i)]`` and ``W_j(i) = 1[S_j(i) >= S_f(i)]`` (ties count for both);
   ``rho_f = mean W_f`` and ``rho_j = mean W_j``.
4. ``H0: rho_f <= rho_j - epsilon`` vs ``H1: rho_f > rho_j - epsilon``: one-sided one-sample t-test that the mean of
   ``d_i = W_j(i) - W_f(i)`` is below ``epsilon``. ``epsilon`` is the cost-benefit allowance for the teacher
   (paper's rule of thumb: 0.2 for expert annotators, 0.15 skilled, 0.1 crowd workers).
5. Benjamini-Yekutieli FDR control over the annotators' p-values at level ``alpha`` (``q``).
6. Winning rate ``omega`` = share of annotators whose H0 is rejected; the teacher **passes** when
   ``omega >= 0.5``. Average advantage probability ``rho`` = mean of ``rho_f`` over annotators (for ranking
   teachers; higher is better).

Annotators with fewer than ``min_items`` (default 30, as the reference's ``min_instances_per_human``) kept items
are excluded before the test, as the reference does, and reported with the reason; ``min_items`` can be lowered
(``--alt-test-min-items``), never below 2 (a t-test needs 2 values). The paper recommends >= 3 annotators; with
fewer tested annotators the test still runs, as the reference does, and the result says that it is weak.
Choice: when all ``d_i`` are equal the t statistic is undefined; we then set p = 0 if ``mean(d) < epsilon`` else 1
(the limit of the t-test; the reference gets p = nan, which never rejects).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from pydantic import BeforeValidator
from scipy import stats

MIN_ANNOTATORS = 3  # recommended by the paper; fewer make the test weak (it still runs, as in the reference)
MIN_ITEMS = 30  # the reference's min_instances_per_human: annotators with fewer items are excluded

Stat = Annotated[float, BeforeValidator(lambda v: math.nan if v is None else v)]
"""A statistic that may be undefined: NaN here, ``null`` in report.json, NaN again when the report is read back."""


@dataclass
class AnnotatorTest:
    annotator: str
    n_items: int
    rho_teacher: Stat = math.nan
    rho_human: Stat = math.nan
    mean_diff: Stat = math.nan
    t_statistic: Stat = math.nan
    p_value: Stat = math.nan
    p_adjusted: Stat = math.nan
    teacher_wins: bool = False
    skipped: str | None = None


@dataclass
class AltTestResult:
    ran: bool
    scoring: str
    epsilon: float
    alpha: float
    reason: str | None = None
    n_annotators: int = 0
    n_items: int = 0
    winning_rate: Stat = math.nan
    advantage_probability: Stat = math.nan
    passed: bool | None = None
    min_items: int = MIN_ITEMS
    weak: bool = False
    excluded: list[str] = field(default_factory=list)
    annotators: list[AnnotatorTest] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def benjamini_yekutieli(p_values: np.ndarray | list[float]) -> np.ndarray:
    """BY-adjusted p-values (as statsmodels ``multipletests(method='fdr_by')``): reject where adjusted <= q."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return p
    c_m = float(np.sum(1.0 / np.arange(1, m + 1)))
    order = np.argsort(p)
    ranked = p[order] * m * c_m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    return out


def _scores(x: np.ndarray, others: list[np.ndarray], scoring: str) -> np.ndarray:
    """Alignment score of x[i] with others[i] for every item."""
    if scoring == "accuracy":
        return np.array([np.mean(o == xi) for xi, o in zip(x, others)])
    return np.array([-math.sqrt(float(np.mean((o - xi) ** 2))) for xi, o in zip(x, others)])


def one_sided_p(d: np.ndarray, epsilon: float) -> tuple[float, float]:
    """t statistic and p-value of H1: mean(d) < epsilon."""
    if np.all(d == d[0]):
        return (-math.inf if d[0] < epsilon else math.inf), (0.0 if d[0] < epsilon else 1.0)
    res = stats.ttest_1samp(d, epsilon, alternative="less")
    return float(res.statistic), float(res.pvalue)


def _annotator_test(
    j: int,
    name: str,
    rows: np.ndarray,
    humans: np.ndarray,
    teacher: np.ndarray,
    rated: np.ndarray,
    scoring: str,
    epsilon: float,
    num,
) -> AnnotatorTest:
    """Leave annotator ``j`` out on ``rows``: indicators, advantage probabilities and the one-sided t-test."""
    test = AnnotatorTest(annotator=name, n_items=len(rows))
    others_mask = rated[rows].copy()
    others_mask[:, j] = False
    others = [num(humans[r][others_mask[k]]) for k, r in enumerate(rows)]
    s_teacher = _scores(num(teacher[rows]), others, scoring)
    s_human = _scores(num(humans[rows, j]), others, scoring)
    w_f = (s_teacher >= s_human).astype(float)
    w_h = (s_human >= s_teacher).astype(float)
    d = w_h - w_f
    test.rho_teacher = float(w_f.mean())
    test.rho_human = float(w_h.mean())
    test.mean_diff = float(d.mean())
    test.t_statistic, test.p_value = one_sided_p(d, epsilon)
    return test


def alt_test(
    humans: np.ndarray,
    teacher: np.ndarray,
    annotators: list[str],
    scoring: str = "accuracy",
    epsilon: float = 0.2,
    alpha: float = 0.05,
    values: np.ndarray | None = None,
    min_items: int = MIN_ITEMS,
) -> AltTestResult:
    """``humans``: items x annotators label codes (-1 missing); ``teacher``: item codes (-1 missing).
    ``values`` maps codes to numbers for ``scoring='neg_rmse'``. Annotators with fewer than ``min_items`` kept
    items are excluded (reference behaviour); ``min_items`` is raised to 2 when lower."""
    if scoring not in ("accuracy", "neg_rmse"):
        raise ValueError(f"unknown scoring {scoring!r}")
    min_items = max(2, int(min_items))
    result = AltTestResult(
        ran=False, scoring=scoring, epsilon=epsilon, alpha=alpha, n_annotators=len(annotators), min_items=min_items
    )
    rated = humans >= 0
    keep = (teacher >= 0) & (rated.sum(axis=1) >= 2)
    result.n_items = int(keep.sum())
    num = (
        (lambda c: np.asarray(values, dtype=float)[c])
        if scoring == "neg_rmse" and values is not None
        else (lambda c: c.astype(float))
    )
    tests: list[AnnotatorTest] = []
    for j, name in enumerate(annotators):
        rows = np.flatnonzero(keep & rated[:, j])
        if len(rows) < min_items:
            test = AnnotatorTest(annotator=name, n_items=len(rows))
            test.skipped = (
                f"excluded: {len(rows)} item(s) shared with another annotator and the teacher "
                f"(< {min_items}, --alt-test-min-items)"
            )
            result.excluded.append(f"{name} ({len(rows)} items)")
        else:
            test = _annotator_test(j, name, rows, humans, teacher, rated, scoring, epsilon, num)
        tests.append(test)
    result.annotators = tests
    if result.excluded:
        result.warnings.append(
            f"{len(result.excluded)} annotator(s) excluded from the alt-test with fewer than {min_items} items, as "
            f"in the reference implementation: {', '.join(result.excluded)} (lower --alt-test-min-items to keep them)"
        )
    _decide(result, [t for t in tests if t.skipped is None], alpha)
    return result


def _decide(result: AltTestResult, tested: list[AnnotatorTest], alpha: float) -> None:
    """BY-adjust the annotators' p-values, count the teacher's wins and set the verdict fields of ``result``."""
    if not tested:
        result.reason = (
            f"no annotator has at least {result.min_items} items shared with another annotator and the teacher"
        )
        return
    adjusted = benjamini_yekutieli([t.p_value for t in tested])
    for t, p_adj in zip(tested, adjusted):
        t.p_adjusted = float(p_adj)
        t.teacher_wins = bool(p_adj <= alpha)
    result.ran = True
    result.winning_rate = sum(t.teacher_wins for t in tested) / len(tested)
    result.advantage_probability = float(np.mean([t.rho_teacher for t in tested]))
    result.passed = result.winning_rate >= 0.5
    if len(tested) < MIN_ANNOTATORS:
        result.weak = True
        result.warnings.append(
            f"weak test: only {len(tested)} annotator(s) tested; the paper recommends at least {MIN_ANNOTATORS} "
            "(with 2 annotators each is compared with one other person, not with a group consensus)"
        )


def verdict(result: AltTestResult) -> str:
    if not result.ran:
        return f"Alt-test NOT RUN: {result.reason}."
    n_tested = sum(t.skipped is None for t in result.annotators)
    wins = sum(t.teacher_wins for t in result.annotators)
    core = (
        f"winning rate {result.winning_rate:.2f} ({wins}/{n_tested} annotators beaten), "
        f"advantage probability {result.advantage_probability:.2f}, epsilon {result.epsilon:g}, "
        f"BY-corrected alpha {result.alpha:g}"
    )
    if result.weak:
        core += f"; weak: only {n_tested} annotator(s) tested, at least {MIN_ANNOTATORS} recommended"
    if result.passed:
        return f"Alt-test PASSED: the teacher can replace the human annotators ({core})."
    return f"Alt-test FAILED: the teacher cannot be shown to replace the human annotators ({core})."
