"""Selection for `annotator distill` on small hand-made cases: uncertainty, diversity, confident learning."""

from __future__ import annotations

import numpy as np
import pytest

from annotator.distill.select import (
    Candidate,
    TopCandidates,
    class_thresholds,
    confident_disagreements,
    diverse_batch,
    uncertainty,
)


def test_uncertainty_orders_items_as_expected():
    p = np.array(
        [
            [0.98, 0.01, 0.01],  # sure
            [0.50, 0.45, 0.05],  # two labels close: small margin
            [0.34, 0.33, 0.33],  # uniform
            [0.60, 0.20, 0.20],
        ]
    )
    margin = uncertainty(p, "margin")
    assert np.allclose(margin, [1 - 0.97, 1 - 0.05, 1 - 0.01, 1 - 0.40])
    assert list(np.argsort(-margin)) == [2, 1, 3, 0]
    entropy = uncertainty(p, "entropy")
    assert entropy[2] == pytest.approx(1.0, abs=1e-3) and entropy[0] < 0.15
    # entropy and margin disagree where mass is spread over a 3rd label: [0.6, 0.2, 0.2] is surer by its margin
    # than [0.5, 0.45, 0.05] but less sure by its entropy
    assert list(np.argsort(-entropy)) == [2, 3, 1, 0]
    assert np.allclose(uncertainty(p, "least"), 1 - p.max(axis=1))
    with pytest.raises(ValueError, match="unknown uncertainty"):
        uncertainty(p, "variance")


def test_top_candidates_keeps_the_most_uncertain_in_bounded_memory():
    top = TopCandidates(3)
    for i, s in enumerate([0.1, 0.9, 0.5, 0.9, 0.2, 0.7]):
        top.push(Candidate(score=s, rank=100 - i, id=f"x{i}", text=""))
    assert len(top) == 3
    # 0.9 twice (the smaller rank, x3, first), then 0.7
    assert [c.id for c in top.best_first()] == ["x3", "x1", "x5"]
    random_order = TopCandidates(2)  # equal scores: the smallest ranks (a seeded random order)
    for i, r in enumerate([5, 3, 9, 1]):
        random_order.push(Candidate(score=0.0, rank=r, id=f"y{i}", text=""))
    assert [c.id for c in random_order.best_first()] == ["y3", "y1"]


def _groups() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Three groups of near-duplicate embeddings; within each, uncertainties differ."""
    rng = np.random.default_rng(0)
    centers = np.eye(3) * 10
    emb, scores, names = [], [], []
    for g, (center, group_scores) in enumerate(zip(centers, [[0.95, 0.94, 0.93, 0.92], [0.91, 0.60], [0.50, 0.40]])):
        for k, s in enumerate(group_scores):
            emb.append(center + rng.normal(0, 0.01, 3))
            scores.append(s)
            names.append(f"g{g}_{k}")
    order = np.argsort(-np.array(scores), kind="stable")  # candidates come most uncertain first
    return np.array(emb)[order], np.array(scores)[order], [names[i] for i in order]


def test_diverse_batch_takes_the_most_uncertain_of_each_group():
    emb, scores, names = _groups()
    picked = [names[i] for i in diverse_batch(scores, emb, 3, seed=0)]
    # pure uncertainty would take g0_0, g0_1, g0_2: three near-duplicates
    assert [names[i] for i in np.argsort(-scores)[:3]] == ["g0_0", "g0_1", "g0_2"]
    assert sorted(picked) == ["g0_0", "g1_0", "g2_0"]
    assert diverse_batch(scores, emb, 20) == list(range(len(scores)))  # k >= candidates: all of them
    assert diverse_batch(scores, emb, 0) == []


def test_diverse_batch_fills_without_near_duplicates_when_clusters_run_out():
    """Exact duplicates make fewer distinct clusters than k: the fill skips copies of chosen items first."""
    base = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    scores = np.array([0.9, 0.9, 0.9, 0.5, 0.4])
    picked = diverse_batch(scores, base, 3, seed=1)
    assert sorted(picked) == [0, 3, 4]  # one copy of the triplicate, then the distinct ones
    assert len(diverse_batch(scores, base, 4, seed=1)) == 4  # still k items once the distinct ones are used up


def test_confident_learning_flags_confident_disagreements_only():
    # given labels (teacher): 0, 0, 0, 1, 1, 1; the student is sure item 2 is class 1 and unsure about item 5
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.05, 0.95], [0.1, 0.9], [0.2, 0.8], [0.55, 0.45]])
    given = np.array([0, 0, 0, 1, 1, 1])
    t = class_thresholds(p, given)
    assert t == pytest.approx([(0.9 + 0.8 + 0.05) / 3, (0.9 + 0.8 + 0.45) / 3])
    flags = confident_disagreements(p, given)
    assert [(d.position, d.given, d.suggested) for d in flags] == [(2, 0, 1)]
    assert flags[0].probability == pytest.approx(0.95)
    # the floor: nothing under it is "confident"
    assert confident_disagreements(p, given, floor=0.99) == []
    # a class nobody was labelled with has no threshold: never suggested
    assert confident_disagreements(np.array([[0.1, 0.9]]), np.array([0])) == []
    assert confident_disagreements(np.zeros((0, 2)), np.array([], dtype=int)) == []
