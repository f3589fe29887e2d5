"""The estimators of `annotator estimate` on small cases computed by hand or by enumerating every possible sample."""

from __future__ import annotations

from itertools import combinations, product

import numpy as np
import pytest

from annotator.estimate.data import human_label
from annotator.estimate.stats import effective_human_labels, share_estimates, strata_of

Z95 = 1.959963984540054


def onehot(codes: list[int], k: int = 2) -> np.ndarray:
    return np.eye(k)[codes]


# A population of 10 items, labels a=0 / b=1; the teacher says a on 6, humans (the truth) say a on 4.
TEACHER = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
HUMAN = [0, 0, 0, 1, 1, 0, 1, 1, 1, 0]
SAMPLE = [0, 3, 5, 8]  # human-labelled items: a random sample of 4


def test_random_sample_with_fixed_lambda_matches_the_textbook_formulas() -> None:
    """lam = 1: prediction-powered estimate raw + mean(Y - f), variance (1 - n/N) s^2(Y - f) / n;
    lam = 0: the sample share, variance (1 - n/N) s^2(Y) / n (Cochran 1977, eq. 3.4 for a proportion's mean)."""
    F, Y = onehot(TEACHER), onehot(HUMAN)
    f_s, y_s = F[SAMPLE], Y[SAMPLE]
    prob = np.full(4, 0.4)
    inside = np.ones(4, dtype=bool)
    ppi = share_estimates(y_s, f_s, prob, inside, F.mean(axis=0), 10, lam=np.ones(2), pseudo=0)
    # by hand for label a: raw 6/10; Y - f on the sample: (1, 0, 1, 0) - (1, 1, 1, 0) = (0, -1, 0, 0)
    assert ppi.raw[0] == pytest.approx(0.6)
    assert ppi.corrected[0] == pytest.approx(0.6 - 0.25)
    s2 = np.var([0, -1, 0, 0], ddof=1)  # 1/4
    assert ppi.corrected_se[0] == pytest.approx(np.sqrt(0.6 * s2 / 4))
    assert ppi.corrected_low[0] == max(0.35 - Z95 * np.sqrt(0.6 * s2 / 4), 0.0)  # clipped to [0, 1]
    assert ppi.corrected_high[0] == pytest.approx(0.35 + Z95 * np.sqrt(0.6 * s2 / 4))
    assert ppi.corrected[1] == pytest.approx(1 - ppi.corrected[0])  # the shares add up to 1
    human = share_estimates(y_s, f_s, prob, inside, F.mean(axis=0), 10, lam=np.zeros(2), pseudo=0)
    assert human.corrected[0] == pytest.approx(0.5) and human.human[0] == pytest.approx(0.5)
    assert human.human_se[0] == pytest.approx(np.sqrt(0.6 * np.var([1, 0, 1, 0], ddof=1) / 4))
    # a random sample's human-only estimate is worth exactly its own size
    assert human.effective_humans[0] == pytest.approx(4.0)


def test_power_tuned_lambda_minimises_the_estimated_variance() -> None:
    rng = np.random.default_rng(3)
    N, n = 400, 60
    truth = rng.integers(0, 3, N)
    teacher = np.where(rng.random(N) < 0.7, truth, rng.integers(0, 3, N))
    F, Y = onehot(list(teacher), 3), onehot(list(truth), 3)
    s = rng.choice(N, n, replace=False)
    args = (Y[s], F[s], np.full(n, n / N), np.ones(n, dtype=bool), F.mean(axis=0), N)
    tuned = share_estimates(*args, pseudo=0)
    grid = np.linspace(0, 1, 1001)
    se = np.array([share_estimates(*args, lam=np.full(3, g), pseudo=0).corrected_se for g in grid])  # 1001 x 3
    assert np.all(tuned.corrected_se <= se.min(axis=0) + 1e-12)
    assert np.allclose(tuned.lam, grid[se.argmin(axis=0)], atol=1e-3)
    # for a random sample the tuned lambda is the regression slope Cov(Y, f) / Var(f) of the sample
    slope = np.cov(Y[s, 0], F[s, 0])[0, 1] / np.var(F[s, 0], ddof=1)
    assert tuned.lam[0] == pytest.approx(np.clip(slope, 0, 1))
    assert np.all(tuned.corrected_se <= tuned.human_se)  # lam = 0 is one of the choices


# Two strata of a population of 7: the teacher's confident items (4, pi = 2/4) and its unsure ones (3, pi = 2/3).
STRATA = [[0, 1, 2, 3], [4, 5, 6]]
S_TEACHER = [0, 0, 1, 0, 1, 0, 1]
S_HUMAN = [0, 0, 1, 1, 0, 1, 1]


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_stratified_design_is_unbiased_over_every_possible_sample(lam: float) -> None:
    """Enumerate all C(4,2) x C(3,2) = 18 samples: the estimator's mean is the true share and the variance
    estimator's mean is the estimator's true variance (unbiased, Sarndal et al. 1992, eq. 3.7.8), for any fixed lam."""
    F, Y = onehot(S_TEACHER), onehot(S_HUMAN)
    truth = Y.mean(axis=0)
    estimates, variances = [], []
    for a, b in product(combinations(STRATA[0], 2), combinations(STRATA[1], 2)):
        s = list(a) + list(b)
        prob = np.array([2 / 4, 2 / 4, 2 / 3, 2 / 3])
        e = share_estimates(Y[s], F[s], prob, np.ones(4, dtype=bool), F.mean(axis=0), 7, lam=np.full(2, lam), pseudo=0)
        estimates.append(e.corrected)
        variances.append(e.corrected_se**2)
    est = np.array(estimates)
    assert len(est) == 18
    assert np.allclose(est.mean(axis=0), truth)
    assert np.allclose(np.mean(variances, axis=0), est.var(axis=0))


def test_stratum_of_one_item_joins_the_nearest_probability() -> None:
    prob = np.array([0.1, 0.1, 0.5, 0.5, 0.45, 0.9, 0.9, 0.9])
    groups = strata_of(prob)
    assert groups[4] == groups[2] == groups[3]  # 0.45 alone: collapsed into 0.5
    assert len(set(groups.tolist())) == 3
    assert len(set(strata_of(np.array([0.2, 0.3])).tolist())) == 1  # all singletons: one stratum


def test_slice_is_a_domain_of_the_whole_sample() -> None:
    """A slice's human-only estimate is the share among its human items; items outside the slice enter the
    variance as zeros (the domain variance, Sarndal et al. 1992, sec. 10.3)."""
    F, Y = onehot(TEACHER), onehot(HUMAN)
    inside = np.array([True, True, False, True])  # items 0, 3, 8 of the sample
    e = share_estimates(
        Y[SAMPLE], F[SAMPLE], np.full(4, 0.4), inside, F[[0, 3, 8, 1, 2]].mean(axis=0), 5, lam=np.zeros(2), pseudo=0
    )
    assert e.human[0] == pytest.approx(1 / 3) and e.n_humans == 3 and e.population == 5
    a = np.array([1 - 1 / 3, -1 / 3, 0.0, -1 / 3])  # zero for the item outside
    n_hat = 3 / 0.4
    assert e.human_se[0] == pytest.approx(np.sqrt(4 * 0.6 / 0.4**2 * np.var(a, ddof=1) / n_hat**2))
    assert e.raw[0] == pytest.approx(0.8)  # the teacher's share of the slice's 5 items


def test_effective_human_labels_inverts_the_random_sample_variance() -> None:
    sigma2, N = 0.21, 1000
    for m in (10, 100, 600):
        var = (1 - m / N) * sigma2 / m
        assert effective_human_labels(np.array([sigma2]), np.array([var]), N)[0] == pytest.approx(m)
    assert np.isnan(effective_human_labels(np.array([0.0]), np.array([0.0]), N)[0])


def test_human_label_is_the_majority_and_a_tie_is_split() -> None:
    code = {"a": 0, "b": 1, "c": 2}
    assert human_label({"x": "a", "y": "a", "z": "b"}, code, 3).tolist() == [1, 0, 0]
    assert human_label({"x": "a", "y": "b"}, code, 3).tolist() == [0.5, 0.5, 0]
    assert human_label({"x": "a", "y": "b", "z": "c"}, code, 3).tolist() == pytest.approx([1 / 3] * 3)
    assert human_label({"x": "c"}, code, 3).tolist() == [0, 0, 1]


def test_teacher_constant_within_strata_gives_lambda_zero_not_rounding_noise() -> None:
    """Strata by teacher label (`sample --strategy stratified`): within a stratum the teacher's label never varies,
    so there is nothing to regress on; lambda must be exactly 0 (a ratio of rounding errors would be arbitrary)."""
    rng = np.random.default_rng(5)
    teacher = np.repeat([0, 1, 2], [37, 41, 29])
    truth = np.where(rng.random(len(teacher)) < 0.8, teacher, rng.integers(0, 3, len(teacher)))
    prob = np.repeat([0.1, 0.3, 0.7], [37, 41, 29])  # pi = 0.1 is not exact in binary
    e = share_estimates(
        onehot(list(truth), 3),
        onehot(list(teacher), 3),
        prob,
        np.ones(len(prob), dtype=bool),
        np.array([0.5, 0.3, 0.2]),
        1000,
    )
    assert np.all(e.lam == 0.0)
    assert np.allclose(e.corrected, e.human) and np.allclose(e.corrected_se, e.human_se)
