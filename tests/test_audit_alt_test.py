"""The Alternative Annotator Test on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ttest_1samp

from annotator.audit.alt_test import alt_test, benjamini_yekutieli, verdict


def synthetic(
    n: int = 80, m: int = 4, k: int = 4, p_correct: float = 0.8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    H = np.where(rng.random((n, m)) < p_correct, truth[:, None], rng.integers(0, k, (n, m)))
    return H, truth


def majority(H: np.ndarray, k: int) -> np.ndarray:
    return np.array([np.bincount(row[row >= 0], minlength=k).argmax() for row in H])


NAMES = ["a", "b", "c", "d", "e"]


def test_teacher_copying_the_majority_passes() -> None:
    H, _ = synthetic()
    res = alt_test(H, majority(H, 4), NAMES[:4], epsilon=0.2, alpha=0.05)
    assert res.ran and res.passed
    assert res.winning_rate >= 0.5
    assert res.advantage_probability > 0.8
    assert "PASSED" in verdict(res)


def test_random_teacher_fails() -> None:
    H, _ = synthetic()
    teacher = np.random.default_rng(1).integers(0, 4, len(H))
    res = alt_test(H, teacher, NAMES[:4], epsilon=0.2, alpha=0.05)
    assert res.ran and res.passed is False
    assert res.winning_rate == 0.0
    assert "FAILED" in verdict(res)


def test_epsilon_is_a_cost_benefit_allowance() -> None:
    # a teacher a bit worse than the humans fails at epsilon 0 and passes with a generous epsilon
    H, truth = synthetic(n=150, p_correct=0.85, seed=2)
    rng = np.random.default_rng(3)
    teacher = np.where(rng.random(len(truth)) < 0.75, truth, rng.integers(0, 4, len(truth)))
    strict = alt_test(H, teacher, NAMES[:4], epsilon=0.0)
    lenient = alt_test(H, teacher, NAMES[:4], epsilon=0.3)
    assert not strict.passed and lenient.passed
    assert strict.advantage_probability == lenient.advantage_probability


def test_two_annotators_run_but_the_result_says_weak() -> None:
    # the reference runs with 2 annotators (min_humans_per_instance=2); so do we, and say that the test is weak
    H, _ = synthetic(m=2)
    res = alt_test(H, majority(H, 4), NAMES[:2])
    assert res.ran and res.weak and res.passed is not None
    assert len([t for t in res.annotators if t.skipped is None]) == 2
    assert any(w.startswith("weak test: only 2 annotator(s) tested") for w in res.warnings)
    assert "weak: only 2 annotator(s) tested" in verdict(res)
    full = alt_test(*synthetic(m=3)[:1], majority(synthetic(m=3)[0], 4), NAMES[:3])
    assert full.ran and not full.weak and "weak" not in verdict(full)


def test_annotators_below_min_items_are_excluded_like_the_reference() -> None:
    H, _ = synthetic(n=12)
    res = alt_test(H, majority(H, 4), NAMES[:4])
    assert not res.ran and res.passed is None
    assert "at least 30 items" in (res.reason or "") and "NOT RUN" in verdict(res)
    assert res.excluded == [f"{a} (12 items)" for a in NAMES[:4]]
    assert all(t.skipped and "< 30, --alt-test-min-items" in t.skipped for t in res.annotators)
    lowered = alt_test(H, majority(H, 4), NAMES[:4], min_items=10)
    assert lowered.ran and lowered.excluded == [] and lowered.min_items == 10


def test_neg_rmse_scoring_for_ratings() -> None:
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 5, 90)
    H = np.clip(truth[:, None] + rng.integers(-1, 2, (90, 4)), 0, 4)
    good = np.rint(H.mean(axis=1)).astype(int)
    bad = rng.integers(0, 5, 90)
    values = np.arange(1, 6, dtype=float)
    assert alt_test(H, good, NAMES[:4], scoring="neg_rmse", values=values).passed
    assert not alt_test(H, bad, NAMES[:4], scoring="neg_rmse", values=values).passed


def _reference(
    humans: dict, llm: dict, epsilon: float, q: float, scorer, min_instances: int = 30
) -> tuple[float, float, list[float]]:
    """Straightforward dict-based version of the published procedure (independent of the vectorised code),
    including the reference's exclusion of annotators with fewer than ``min_instances`` kept items."""
    item_humans: dict = {}
    for h, anns in humans.items():
        for i in anns:
            item_humans.setdefault(i, []).append(h)
    keep = {i for i, hs in item_humans.items() if len(hs) >= 2 and i in llm}
    pvals, advs = [], []
    for h, anns in humans.items():
        ind_f, ind_h = [], []
        if len([i for i in anns if i in keep]) < min_instances:
            continue
        for i in [i for i in anns if i in keep]:
            rest = [humans[o][i] for o in item_humans[i] if o != h]
            s_h, s_f = scorer(anns[i], rest), scorer(llm[i], rest)
            ind_f.append(int(s_f >= s_h))
            ind_h.append(int(s_h >= s_f))
        d = np.array(ind_h) - np.array(ind_f)
        pvals.append(float(ttest_1samp(d, epsilon, alternative="less").pvalue))
        advs.append(float(np.mean(ind_f)))
    adj = benjamini_yekutieli(pvals)
    return float(np.mean(adj <= q)), float(np.mean(advs)), pvals


def test_matches_reference_procedure_with_missing_ratings() -> None:
    H, truth = synthetic(n=70, m=5, p_correct=0.7, seed=5)
    rng = np.random.default_rng(6)
    H[rng.random(H.shape) < 0.25] = -1
    teacher = np.where(rng.random(70) < 0.7, truth, rng.integers(0, 4, 70))
    humans = {NAMES[j]: {i: int(H[i, j]) for i in range(70) if H[i, j] >= 0} for j in range(5)}
    llm = {i: int(teacher[i]) for i in range(70)}
    wr, adv, pvals = _reference(humans, llm, 0.15, 0.05, lambda x, rest: float(np.mean([x == r for r in rest])))
    res = alt_test(H, teacher, NAMES, epsilon=0.15, alpha=0.05)
    assert res.winning_rate == pytest.approx(wr)
    assert res.advantage_probability == pytest.approx(adv)
    assert [t.p_value for t in res.annotators] == pytest.approx(pvals)


def test_small_annotator_excluded_by_default_as_in_the_reference() -> None:
    # one annotator rated only 25 items: the reference skips them, which changes the winning rate
    H, truth = synthetic(n=80, m=4, p_correct=0.75, seed=7)
    H[25:, 3] = -1
    rng = np.random.default_rng(8)
    teacher = np.where(rng.random(80) < 0.8, truth, rng.integers(0, 4, 80))
    humans = {NAMES[j]: {i: int(H[i, j]) for i in range(80) if H[i, j] >= 0} for j in range(4)}
    llm = {i: int(teacher[i]) for i in range(80)}

    def acc(x: int, rest: list[int]) -> float:
        return float(np.mean([x == r for r in rest]))

    wr, adv, pvals = _reference(humans, llm, 0.2, 0.05, acc)
    res = alt_test(H, teacher, NAMES[:4], epsilon=0.2, alpha=0.05)
    assert res.excluded == ["d (25 items)"] and res.annotators[3].skipped
    assert res.winning_rate == pytest.approx(wr) and res.advantage_probability == pytest.approx(adv)
    assert [t.p_value for t in res.annotators if t.skipped is None] == pytest.approx(pvals)
    kept = alt_test(H, teacher, NAMES[:4], epsilon=0.2, alpha=0.05, min_items=2)
    wr_all, adv_all, _ = _reference(humans, llm, 0.2, 0.05, acc, min_instances=2)
    assert kept.winning_rate == pytest.approx(wr_all) and kept.advantage_probability == pytest.approx(adv_all)
    assert (kept.winning_rate, kept.advantage_probability) != (res.winning_rate, res.advantage_probability)


def test_hand_computed_small_case() -> None:
    # 3 annotators, 3 items; leave out "a": others b, c.
    H = np.array([[0, 0, 0], [0, 1, 1], [1, 1, 0]])
    teacher = np.array([0, 1, 1])
    res = alt_test(H, teacher, ["a", "b", "c"], min_items=1)
    a = res.annotators[0]
    # item0: rest [0,0] S_f=1 S_a=1 -> both win; item1: rest [1,1] S_f=1 S_a=0; item2: rest [1,0] S_f=.5 S_a=.5
    assert a.rho_teacher == pytest.approx(1.0)
    assert a.rho_human == pytest.approx(2 / 3)
