"""The threshold maths of the cascade (annotator/cascade/guarantee.py): hand-computed cases, the procedure against
brute force, and the guarantee by exact enumeration and by simulation with a known truth (fixed seeds)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from annotator.cascade import guarantee as g


def binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def brute_upper(k: int, n: int, delta: float) -> float:
    """sup{r : P(Bin(n, r) <= k) >= delta} by bisection on the binomial sum (the paper's definition of R-hat+)."""
    lo, hi = k / n, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binom_cdf(k, n, mid) >= delta else (lo, mid)
    return lo


@pytest.mark.parametrize(("k", "n", "delta"), [(0, 10, 0.1), (3, 40, 0.05), (12, 200, 0.1), (7, 7, 0.1), (1, 3, 0.5)])
def test_upper_bound_and_p_value_match_the_binomial_sums(k: int, n: int, delta: float) -> None:
    assert g.risk_upper_bound(k, n, delta) == pytest.approx(1.0 if k == n else brute_upper(k, n, delta), abs=1e-9)
    for alpha in (0.05, 0.1, 0.3):
        expected = 1.0 if k == n else binom_cdf(k, n, alpha)
        assert g.p_value(k, n, alpha) == pytest.approx(expected, abs=1e-12)
        # the test and the bound say the same thing
        assert (g.p_value(k, n, alpha) <= delta) == (g.risk_upper_bound(k, n, delta) <= alpha + 1e-12)


def test_hand_computed_walk_stops_at_the_first_threshold_that_stands() -> None:
    # 10 unanimous items (none wrong), 10 at 2/3 (5 wrong); target 0.7 (alpha 0.3), delta 0.1
    conf = np.array([1.0] * 10 + [2 / 3] * 10)
    wrong = np.array([False] * 10 + [True] * 5 + [False] * 5)
    choice = g.choose_threshold(conf, wrong, np.ones(20), alpha=0.3, delta=0.1)
    first, second = choice.steps
    assert first.p_value == pytest.approx(0.7**10)  # 0.0282: rejected, 1.0 is certified
    assert first.rejected and first.counts.kept == 10
    assert second.p_value == pytest.approx(binom_cdf(5, 20, 0.3))  # 0.4164: stands, the walk stops
    assert second.p_value == pytest.approx(0.416371, abs=1e-6)
    assert not second.rejected
    assert choice.threshold == 1.0 and choice.kept.kept == 10


def test_hand_computed_stage_that_keeps_nothing() -> None:
    # 1 wrong in 10 unanimous items, target 0.9: P(Bin(10, 0.1) <= 1) = 0.9^10 + 10 * 0.1 * 0.9^9 = 0.7361 > 0.1
    choice = g.choose_threshold(np.ones(10), np.array([True] + [False] * 9), np.ones(10), alpha=0.1, delta=0.1)
    assert choice.steps[0].p_value == pytest.approx(0.9**10 + 0.9**9)
    assert choice.threshold is None and not choice.certified


def test_hand_computed_cascade_splits_delta_and_calibrates_on_what_is_left() -> None:
    # stage 1: 30 unanimous right items, 10 at 1/3 of which 6 wrong; stage 2 is unanimous and right on those 10
    n = 40
    conf1 = np.array([1.0] * 30 + [1 / 3] * 10)
    wrong1 = np.array([False] * 30 + [True] * 6 + [False] * 4)
    conf2 = np.ones(n)
    wrong2 = np.zeros(n, dtype=bool)
    cascade = g.calibrate_cascade(
        [g.StageData("cheap", conf1, wrong1), g.StageData("strong", conf2, wrong2)], np.ones(n), target=0.9, delta=0.1
    )
    cheap, strong = cascade.stages
    assert cheap.delta == strong.delta == 0.05
    # cheap at 1.0: 0 of 30 wrong, P(Bin(30, 0.1) <= 0) = 0.9^30 = 0.042 <= 0.05; at 1/3: 6 of 40, 0.41: stands
    assert cheap.steps[0].p_value == pytest.approx(0.9**30)
    assert cheap.threshold == 1.0
    # strong sees the 10 items cheap did not keep: 0 of 10 wrong, 0.9^10 = 0.35 > 0.05: keeps nothing
    assert strong.reached == 10 and strong.steps[0].p_value == pytest.approx(0.9**10)
    assert strong.threshold is None
    assert cascade.coverage() == pytest.approx(0.75) and cascade.coverage(0) == pytest.approx(0.75)
    assert list(cascade.kept_by) == [0] * 30 + [-1] * 10
    # 0.9^30 passes 0.05 but would not pass 0.04: the split delta is what was used
    assert g.choose_threshold(conf1, wrong1, np.ones(n), alpha=0.1, delta=0.04).threshold is None


def naive_threshold(conf: np.ndarray, wrong: np.ndarray, alpha: float, delta: float) -> float | None:
    """lambda-hat = inf{lambda in grid : every lambda' >= lambda in the grid has p(lambda') <= delta}, by brute
    force over the grid with binomial sums."""
    grid = sorted(set(conf.tolist()))
    ok = []
    for lam in grid:
        above = [mu for mu in grid if mu >= lam]
        if all(binom_cdf(int(wrong[conf >= mu].sum()), int((conf >= mu).sum()), alpha) <= delta for mu in above):
            ok.append(lam)
    return min(ok) if ok else None


def test_fixed_sequence_walk_equals_the_brute_force_definition() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(5, 60))
        samples = int(rng.integers(3, 6))
        conf = rng.integers(1, samples + 1, size=n) / samples
        wrong = rng.random(n) < (1.05 - conf) * rng.uniform(0.05, 0.6)
        alpha, delta = float(rng.uniform(0.05, 0.4)), float(rng.uniform(0.02, 0.3))
        got = g.choose_threshold(conf, wrong, np.ones(n), alpha, delta).threshold
        assert got == naive_threshold(conf, wrong, alpha, delta)


def test_unequal_weights_use_the_conservative_effective_count() -> None:
    wrong = np.array([True, False, False, False])
    w = np.array([1.0, 1.0, 3.0, 3.0])
    c = g.effective_counts(wrong, w)
    assert c.n_eff == pytest.approx(8 / 3)  # sum w / max w (Kish's would be 64 / 20 = 3.2)
    assert c.disagree_eff / c.n_eff == pytest.approx(1 / 8)  # Hajek: weighted share wrong
    assert c.agreement == pytest.approx(7 / 8)
    equal = g.effective_counts(wrong, np.full(4, 2.5))
    assert (equal.n_eff, equal.disagree_eff) == (4.0, 1.0)


def stratified_failure_rate(
    counts, n_a: int, n_b: int, risk_a: float, alpha: float, delta: float, draws: int, seed: int
) -> float:
    """Two strata of 10,000 items each, drawn ``n_a`` and ``n_b`` times without replacement (weights 10,000 / n);
    30% of stratum A and 80% of B are kept (one confidence level); A's kept items disagree with humans at
    ``risk_a``, B's just enough more that the kept rows' true disagreement is just above ``alpha``: any
    certification is a failure. ``counts(wrong, weights) -> (disagree_eff, n_eff)``."""
    rng = np.random.default_rng(seed)
    size = 10_000
    kept_a, kept_b = int(0.3 * size), int(0.8 * size)
    wrong_a = round(kept_a * risk_a)
    wrong_b = int(alpha * (kept_a + kept_b) - wrong_a) + 1
    assert (wrong_a + wrong_b) / (kept_a + kept_b) > alpha
    fails = 0
    for _ in range(draws):
        ka = rng.hypergeometric(kept_a, size - kept_a, n_a)
        kb = rng.hypergeometric(kept_b, size - kept_b, n_b)
        ea = rng.hypergeometric(wrong_a, kept_a - wrong_a, ka) if ka else 0
        eb = rng.hypergeometric(wrong_b, kept_b - wrong_b, kb) if kb else 0
        wrong = np.r_[np.ones(ea), np.zeros(ka - ea), np.ones(eb), np.zeros(kb - eb)].astype(bool)
        w = np.r_[np.full(ka, size / n_a), np.full(kb, size / n_b)]
        disagree, n = counts(wrong, w)
        fails += g.p_value(disagree, n, alpha) <= delta
    return fails / draws


def kish(wrong: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    n = float(w.sum() ** 2 / (w**2).sum())
    return float((w * wrong).sum() / w.sum()) * n, n


def test_unequal_weights_keep_the_guarantee_where_kish_breaks_it() -> None:
    """10 draws from stratum A, 290 from B (weights 1,000 and 34.5); A's kept items disagree at 30%, B's rarely.
    With Kish's effective size the sample of 3 kept A items often shows no disagreement and the test certifies a
    disagreement rate above alpha: it fails far more often than delta. The conservative size keeps it within."""
    alpha = delta = 0.1

    def ours(wrong: np.ndarray, w: np.ndarray) -> tuple[float, float]:
        c = g.effective_counts(wrong, w)
        return c.disagree_eff, c.n_eff

    assert stratified_failure_rate(kish, 10, 290, 0.3, alpha, delta, 1000, seed=1) > 0.3
    assert stratified_failure_rate(ours, 10, 290, 0.3, alpha, delta, 1000, seed=1) <= delta
    # less extreme designs, where Kish's failed 18.6% and 12.1% of the time (weights 14 to 1, and 4 to 1)
    assert stratified_failure_rate(ours, 20, 280, 0.2, alpha, delta, 1000, seed=5) <= delta
    assert stratified_failure_rate(ours, 60, 240, 0.2, alpha, delta, 1000, seed=3) <= delta
    # equal weights: the exact test, whose failure rate at the boundary is close to (and under) delta
    assert 0.03 < stratified_failure_rate(ours, 150, 150, 0.1, alpha, delta, 1000, seed=4) <= delta


def exact_failure_probability(
    shares: list[float], risks: list[float], levels: list[float], n: int, alpha: float, delta: float
) -> float:
    """P(the chosen threshold's true risk > alpha) over every possible human sample of ``n`` iid items, by exact
    enumeration: items fall in confidence level ``i`` with probability ``shares[i]`` and disagree with humans with
    probability ``risks[i]``."""

    def true_risk(lam: float) -> float:
        mass = [s for s, lv in zip(shares, levels) if lv >= lam]
        return sum(s * r for s, r, lv in zip(shares, risks, levels) if lv >= lam) / sum(mass)

    total = 0.0
    m = len(levels)
    for sizes in itertools.product(range(n + 1), repeat=m):
        if sum(sizes) != n:
            continue
        p_sizes = math.factorial(n) * math.prod(s**c / math.factorial(c) for s, c in zip(shares, sizes))
        for wrongs in itertools.product(*(range(c + 1) for c in sizes)):
            p = p_sizes * math.prod(
                binom_cdf(w, c, r) - (binom_cdf(w - 1, c, r) if w else 0.0) for w, c, r in zip(wrongs, sizes, risks)
            )
            conf = np.repeat(levels, sizes)
            wrong = np.concatenate([[True] * w + [False] * (c - w) for w, c in zip(wrongs, sizes)])
            lam = g.choose_threshold(conf, wrong.astype(bool), np.ones(n), alpha, delta).threshold
            if lam is not None and true_risk(lam) > alpha:
                total += p
    return total


def test_guarantee_holds_under_exact_enumeration() -> None:
    """The top level is safely below alpha, the middle one just above it once pooled: a sample that certifies the
    middle threshold is a failure. Its exact probability is below delta, and not trivially zero."""
    levels, shares, risks = [1.0, 2 / 3, 1 / 3], [0.5, 0.3, 0.2], [0.1, 0.55, 0.7]
    alpha, delta = 0.25, 0.1
    # pooled true risk at 1.0: 0.1; at 2/3: (0.5*0.1 + 0.3*0.55) / 0.8 = 0.269 > alpha
    p_fail = exact_failure_probability(shares, risks, levels, n=12, alpha=alpha, delta=delta)
    assert 0.0 < p_fail <= delta
    # a level whose own risk sits just above alpha: certifying it at all is the failure
    p_fail_top = exact_failure_probability([1.0], [0.15], [1.0], n=40, alpha=0.1, delta=0.1)
    assert 0.0 < p_fail_top <= 0.1


def test_cascade_guarantee_over_many_simulated_human_samples() -> None:
    """A corpus of known truth; 200 human samples of 200-300 items; the share of samples whose chosen thresholds
    give a true agreement (over the whole corpus) under the target stays within delta."""
    rng = np.random.default_rng(3)
    n_items, s = 5000, 3
    hard = rng.random(n_items)
    cheap_p = np.clip(1.05 - hard, 0.3, 0.99)  # per-sample chance the cheap teacher agrees with the humans
    strong_p = np.clip(1.15 - 0.5 * hard, 0.5, 0.99)
    cheap_votes = rng.binomial(s, cheap_p)
    strong_votes = rng.binomial(s, strong_p)
    # a majority of s=3 votes: agree when >= 2 right votes; confidence = the majority's share
    cheap_conf, cheap_wrong = np.maximum(cheap_votes, s - cheap_votes) / s, cheap_votes < 2
    strong_conf, strong_wrong = np.maximum(strong_votes, s - strong_votes) / s, strong_votes < 2
    target, delta = 0.9, 0.1
    failures = certified = 0
    for _ in range(200):
        idx = rng.choice(n_items, size=int(rng.integers(200, 301)), replace=False)
        choice = g.calibrate_cascade(
            [
                g.StageData("cheap", cheap_conf[idx], cheap_wrong[idx]),
                g.StageData("strong", strong_conf[idx], strong_wrong[idx]),
            ],
            np.ones(len(idx)),
            target,
            delta,
        )
        kept_by = g.apply_thresholds([cheap_conf, strong_conf], choice.thresholds)
        if not (kept_by >= 0).any():
            continue
        certified += 1
        wrong = np.where(kept_by == 0, cheap_wrong, strong_wrong)[kept_by >= 0]
        failures += int(1.0 - wrong.mean() < target)
    assert certified >= 150
    assert failures / 200 <= delta


def test_items_needed_when_nothing_can_be_certified() -> None:
    conf = np.ones(20)
    wrong = np.array([True] + [False] * 19)  # 95% agreement on 20 items: too few for 0.9 at delta 0.05
    stage = g.StageData("only", conf, wrong)
    choice = g.calibrate_cascade(
        [stage, g.StageData("other", np.full(20, np.nan), np.ones(20, bool))], np.ones(20), target=0.9, delta=0.1
    )
    assert not choice.certified
    total, name = g.items_needed([stage], np.ones(20), 0.9, 0.05)
    assert name == "only"
    # the number given is the least at which 5% disagreement passes the test at delta / K (counts scale with n)
    assert g.p_value(0.05 * total, total, 0.1) <= 0.05 < g.p_value(0.05 * (total - 1), total - 1, 0.1)
    assert total == 107
    # a stage that agrees less than the target at its most confident: no sample size helps
    assert g.items_needed([g.StageData("bad", conf, np.arange(20) < 4)], np.ones(20), 0.9, 0.1) is None


def test_second_stage_guarantee_when_it_sees_what_the_first_stage_chose_adversarially() -> None:
    """Stage 2 calibrates on the items stage 1's threshold passes on, chosen on the same sample; the union bound
    needs each stage's own guarantee to hold at delta / K all the same. Make stage 1's choice as informative as
    possible against stage 2: its walk sits on the edge of its second threshold (half the items unanimous and
    right, the other half at 2/3 and wrong 20% of the time: pooled, exactly alpha), and stage 2 is wrong only where
    stage 1 is right, so samples where stage 1 stops early (more stage-1 errors) show fewer stage-2 errors. Stage 2
    disagrees just above alpha on whatever rows it is asked about: each time it certifies a threshold is a
    failure of its guarantee (measured: 6.7%; with stage 2's errors independent of stage 1's, 7.1%)."""
    rng = np.random.default_rng(21)
    n, alpha, delta, draws = 300, 0.1, 0.2, 1000
    failures = 0
    for _ in range(draws):
        top = rng.random(n) < 0.5
        conf1 = np.where(top, 1.0, 2 / 3)
        wrong1 = ~top & (rng.random(n) < 0.2)
        wrong2 = ~wrong1 & (rng.random(n) < 0.126)  # 10.08% of the rows stage 1 passes on at threshold 1
        choice = g.calibrate_cascade(
            [g.StageData("a", conf1, wrong1), g.StageData("b", np.ones(n), wrong2)], np.ones(n), 1 - alpha, delta
        )
        t1, t2 = choice.thresholds
        failures += t2 is not None and t1 != 2 / 3  # at 2/3 stage 1 keeps every row: stage 2 sees none
    assert 0 < failures / draws <= delta / 2


@pytest.mark.parametrize("kind", ["uninformative", "all tied"])
def test_cascade_guarantee_with_confidences_that_say_nothing(kind: str) -> None:
    """Vote shares independent of correctness, or every item at confidence 1: each stage's true disagreement is
    just above alpha everywhere, so every certification is a failure; it must happen at most delta of the time
    (measured: 10.5% and 8.2% at delta 0.2)."""
    rng = np.random.default_rng(5)
    n, alpha, delta, draws = 300, 0.3, 0.2, 1000
    failures = 0
    for _ in range(draws):
        stages = []
        for name in ("a", "b"):
            conf = rng.integers(1, 4, n) / 3 if kind == "uninformative" else np.ones(n)
            stages.append(g.StageData(name, conf, rng.random(n) < alpha + 0.01))
        failures += g.calibrate_cascade(stages, np.ones(n), 1 - alpha, delta).certified
    assert 0 < failures / draws <= delta


def test_items_needed_past_its_search_limit_is_not_called_hopeless() -> None:
    """Target 0.9999999 with a stage that never disagrees needs ~3e7 items (more than the search goes): the
    statement said "no stage agrees with the human majority on more than 100% ... no sample size would certify"."""
    from annotator.cascade.calibration import CalibrationFile, HumanItem, StageAnswer, statement

    perfect = g.StageData("perfect", np.ones(73), np.zeros(73, bool))
    assert g.items_needed([perfect], np.ones(73), 0.9999999, 0.1) == (g.ITEMS_LIMIT, "perfect")
    assert g.items_needed([perfect], np.ones(73), 0.9999, 0.1)[0] < g.ITEMS_LIMIT
    cal = CalibrationFile.model_construct(
        stages=[],
        used=73,
        target=0.9999999,
        delta=0.1,
        certified=False,
        items=[HumanItem(id="a", human="x", answers=[StageAnswer()])],
    )
    said = statement(cal, (g.ITEMS_LIMIT, "perfect"))
    assert "more than 10,000,000 human items" in said and "no sample size" not in said
