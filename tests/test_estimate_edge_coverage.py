"""`annotator estimate`'s intervals in the regimes where a normal interval is most likely to fail, judged by
simulation with a known truth (fixed seeds; `pytest -s` prints the table of docs/estimate.md).

Each regime is one simulated corpus of 5,000 items and 600 human samples drawn from it as `annotator sample` draws
(strata without replacement), estimated as `annotator estimate` estimates (``share_estimates``, and for drawn items
left unlabelled ``response_scaled``). Before the small-count adjustment, a 99%-accurate teacher with 100 human items
covered 35-52% (the sample held almost no disagreement, the estimated variance was mostly 0), 30 human items 78-90%,
and a sample drawn at 60% and 40% labelled 84%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from annotator.estimate.data import response_scaled
from annotator.estimate.run import MIN_LABEL_HUMANS
from annotator.estimate.stats import share_estimates

N, DRAWS = 5000, 600
FOUR = [0.45, 0.30, 0.15, 0.10]


@dataclass
class Regime:
    name: str
    shares: list[float]
    accuracy: float  # the teacher's accuracy (a wrong label is any other label, uniformly)
    strata: list[tuple[int, int]]  # (items, draws) per stratum, the items taken in a random order
    swap: bool = False  # the teacher also calls every item of label 0 label 1 and vice versa
    respond: float = 1.0  # share of the drawn items that humans label (missing at random)


REGIMES = [
    Regime("rare label (2%), 500 random", [0.60, 0.28, 0.10, 0.02], 0.8, [(N, 500)]),
    Regime("tiny sample: 30 random", FOUR, 0.8, [(N, 30)]),
    Regime("teacher right 50%, 100 random", FOUR, 0.5, [(N, 100)]),
    Regime("teacher swaps labels 0 and 1, 100 random", FOUR, 0.8, [(N, 100)], swap=True),
    Regime("teacher right 99%, 100 random", FOUR, 0.99, [(N, 100)]),
    Regime("all humans agree (teacher right 99.9%), 200 random", FOUR, 0.999, [(N, 200)]),
    Regime("unequal pi 0.9 vs 0.01 (weights 1:90)", FOUR, 0.8, [(100, 90), (N - 100, 49)]),
    Regime("drawn at 60%, 40% of them labelled", FOUR, 0.8, [(N, 3000)], respond=0.4),
]


@dataclass
class Coverage:
    corrected: np.ndarray  # per label
    human: np.ndarray
    width_ratio: np.ndarray  # mean corrected width / human-only width
    noted: np.ndarray  # share of the draws whose report notes the label (fewer than 20 effective human items)


def corpus(r: Regime, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = len(r.shares)
    truth = rng.choice(k, N, p=r.shares)
    teacher = np.where(rng.random(N) < r.accuracy, truth, (truth + rng.integers(1, k, N)) % k)
    if r.swap:
        teacher = np.where(truth == 0, 1, np.where(truth == 1, 0, teacher))
    return np.eye(k)[truth], np.eye(k)[teacher]


def simulate(r: Regime, seed: int) -> Coverage:
    rng = np.random.default_rng(seed)
    Y, F = corpus(r, rng)
    truth, raw = Y.mean(axis=0), F.mean(axis=0)
    order = rng.permutation(N)
    members = np.split(order, np.cumsum([size for size, _ in r.strata])[:-1])
    k = Y.shape[1]
    hits, human_hits, ratio, noted = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
    for _ in range(DRAWS):
        rows, prob = [], []
        for group, (size, n) in zip(members, r.strata):
            drawn = rng.choice(group, n, replace=False)
            drawn = drawn[rng.random(n) < r.respond]
            rows.append(drawn)
            prob.append(np.full(len(drawn), n / size))
        s, p = np.concatenate(rows), np.concatenate(prob)
        if r.respond < 1:
            p = response_scaled(p, N)[0]
        e = share_estimates(Y[s], F[s], p, np.ones(len(s), dtype=bool), raw, N)
        hits += (e.corrected_low <= truth) & (truth <= e.corrected_high)
        human_hits += (e.human_low <= truth) & (truth <= e.human_high)
        ratio += (e.corrected_high - e.corrected_low) / (e.human_high - e.human_low)
        noted += e.label_effective < MIN_LABEL_HUMANS
    return Coverage(hits / DRAWS, human_hits / DRAWS, ratio / DRAWS, noted / DRAWS)


@pytest.fixture(scope="module")
def results() -> dict[str, Coverage]:
    out = {r.name: simulate(r, seed) for seed, r in enumerate(REGIMES, start=1)}
    print("\n| regime | coverage corrected (per label) | coverage humans only | width / humans-only | noted |")
    print("|---|---|---|---|---|")
    for name, c in out.items():

        def pct(x: np.ndarray) -> str:
            return " / ".join(f"{v:.1%}" for v in x)

        print(
            f"| {name} | {pct(c.corrected)} | {pct(c.human)} | {' / '.join(f'{v:.2f}' for v in c.width_ratio)} | "
            f"{pct(c.noted)} |"
        )
    return out


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_every_interval_covers_in_every_edge_regime(results: dict[str, Coverage]) -> None:
    """Nominal 95% (600 draws): at least 93% for every label the report does not note, at least 92% for a noted one
    (fewer than 20 effective human items carry it), corrected and human-only."""
    for name, c in results.items():
        floor = np.where(c.noted > 0.5, 0.92, 0.93)
        assert np.all(c.corrected >= floor), (name, c.corrected, c.noted)
        assert np.all(c.human >= floor), (name, c.human, c.noted)


def test_an_accurate_teacher_still_narrows_the_interval(results: dict[str, Coverage]) -> None:
    """The adjustment costs width only where disagreements are few; an accurate teacher keeps most of its gain."""
    assert np.all(results["teacher right 99%, 100 random"].width_ratio < 0.5)
    assert np.all(results["all humans agree (teacher right 99.9%), 200 random"].width_ratio < 0.5)
    assert np.all(results["teacher right 50%, 100 random"].width_ratio <= 1.0 + 1e-9)  # never wider
    # the swapped labels: the teacher's labels 0 and 1 are worthless, the others are 80% right
    swapped = results["teacher swaps labels 0 and 1, 100 random"].width_ratio
    assert np.all(swapped[:2] > 0.9) and np.all(swapped[2:] < 0.9)


def test_a_label_under_20_effective_human_items_is_noted(results: dict[str, Coverage]) -> None:
    """The 2% label of a 500-item sample (about 10 human items) and every label of a 30-item sample are noted;
    so is the 10% label when 49 of the 139 items carry nearly all the weight (Kish's effective number)."""
    assert results["rare label (2%), 500 random"].noted[3] > 0.95
    assert np.all(results["tiny sample: 30 random"].noted > 0.9)
    assert results["unequal pi 0.9 vs 0.01 (weights 1:90)"].noted[3] > 0.9
    assert results["rare label (2%), 500 random"].noted[0] == 0.0
