"""Which items the teacher labels next, and which of its labels to check again (numpy and scikit-learn only).

**Uncertainty** of the student's class probabilities ``p`` (one row per item), larger = less sure:

* ``margin``: ``1 - (p_top1 - p_top2)``, the margin sampling of Scheffer et al. (2001);
* ``entropy``: ``-sum p log p / log K`` (0 for a sure item, 1 for a uniform one);
* ``least``: ``1 - p_top1`` (least confidence).

**Diversity** (:func:`diverse_batch`): the ``factor * k`` most uncertain unlabelled items are the candidates; they are
clustered into ``k`` groups by k-means on their L2-normalised student embeddings, each weighted by its uncertainty
(the pre-filter + weighted k-means of Zhdanov, "Diverse mini-batch active learning", 2019), and the most uncertain
item of each cluster is taken. Near-duplicates fall in one cluster, so a batch holds at most one of them; when
duplicates leave fewer than ``k`` distinct clusters the batch is filled with the next most uncertain candidates that
are not near-duplicates (cosine >= :data:`DUPLICATE_COSINE`) of an item already chosen.

**Likely teacher errors** (:func:`confident_disagreements`): confident learning (Northcutt, Jiang and Chuang,
"Confident learning: estimating uncertainty in dataset labels", JAIR 2021). Per class ``j`` the threshold ``t_j`` is
the student's mean probability of ``j`` over the items the teacher labelled ``j``; an item labelled ``i`` is flagged
when the class ``j`` with the largest probability among those at or above their threshold is not ``i`` (and its
probability is at least ``floor``). The caller decides what a flag costs (asking the teacher again, or a person).
"""

from __future__ import annotations

import heapq
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from annotator.choices import Selection

UNCERTAINTY = tuple(s.value for s in Selection if s is not Selection.random)
DUPLICATE_COSINE = 0.98


def uncertainty(probs: np.ndarray, method: str) -> np.ndarray:
    """One uncertainty per row of ``probs`` (items x classes); larger = less sure. See the module docstring."""
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be items x classes (2 or more), got shape {p.shape}")
    if method == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    if method == "entropy":
        q = np.clip(p, 1e-12, 1.0)
        return -(q * np.log(q)).sum(axis=1) / np.log(p.shape[1])
    if method == "least":
        return 1.0 - p.max(axis=1)
    raise ValueError(f"unknown uncertainty {method!r} (known: {', '.join(UNCERTAINTY)})")


def rank_of(key: str) -> int:
    """A hex hash (``id_rank_key``) as an integer: the tie-breaker and the order of random selection."""
    return int(key[:15], 16)


@dataclass(frozen=True)
class Candidate:
    """An unlabelled item kept for selection."""

    score: float  # uncertainty (0 for random selection)
    rank: int  # seeded hash of the id: smaller wins a tie
    id: str
    text: str


class TopCandidates:
    """The ``size`` items with the largest score seen in a stream (ties: the smaller rank), in bounded memory."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[tuple[float, int, int, Candidate]] = []  # (score, -rank, seq, item): the worst on top
        self._seq = 0

    def push(self, item: Candidate) -> None:
        if self.size <= 0:
            return
        entry = (item.score, -item.rank, self._seq, item)
        self._seq += 1
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def best_first(self) -> list[Candidate]:
        return [e[3] for e in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]

    def __len__(self) -> int:
        return len(self._heap)


def _normalise(emb: np.ndarray) -> np.ndarray:
    x = np.asarray(emb, dtype=float)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _fill(chosen: list[int], x: np.ndarray, k: int) -> list[int]:
    """Add candidates in order (most uncertain first) that are no near-duplicate of a chosen one; then any."""
    for strict in (True, False):
        for i in range(len(x)):
            if len(chosen) >= k:
                return chosen
            if i in chosen:
                continue
            if strict and chosen and float(np.max(x[chosen] @ x[i])) >= DUPLICATE_COSINE:
                continue
            chosen.append(i)
    return chosen


def diverse_batch(scores: Sequence[float], embeddings: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """Positions of ``k`` diverse, uncertain candidates (see the module docstring), most uncertain first.

    ``scores`` and ``embeddings`` are the candidates', sorted most uncertain first (as :class:`TopCandidates` gives
    them), so a position is also the preference among equals.
    """
    n = len(scores)
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    s = np.asarray(scores, dtype=float)
    x = _normalise(embeddings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # duplicates: fewer distinct clusters than k
        clusters = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x, sample_weight=s + 1e-6).labels_
    chosen = []
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        chosen.append(int(members[np.argmax(s[members])]))  # argmax: the first (most preferred) of equals
    chosen = sorted(set(chosen))
    deduped: list[int] = []
    for i in chosen:  # two identical points can end in two clusters: keep the first
        if not deduped or float(np.max(x[deduped] @ x[i])) < DUPLICATE_COSINE:
            deduped.append(i)
    return sorted(_fill(deduped, x, k))


@dataclass(frozen=True)
class Disagreement:
    """A labelled item whose student confidently prefers another label."""

    position: int
    given: int  # the teacher's label (index)
    suggested: int  # the student's label (index)
    probability: float  # the student's probability of ``suggested``


def class_thresholds(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Per class: the mean probability of that class over the items labelled with it (inf: no such item)."""
    k = probs.shape[1]
    t = np.full(k, np.inf)
    for j in range(k):
        mask = given == j
        if mask.any():
            t[j] = float(probs[mask, j].mean())
    return t


def confident_disagreements(probs: np.ndarray, given: Sequence[int], floor: float = 0.5) -> list[Disagreement]:
    """The items confident learning flags as likely mislabelled (see the module docstring), surest first."""
    p = np.asarray(probs, dtype=float)
    g = np.asarray(given, dtype=int)
    if len(p) == 0:
        return []
    t = class_thresholds(p, g)
    above = np.where(p >= t - 1e-12, p, -1.0)
    best = above.argmax(axis=1)
    out = [
        Disagreement(int(i), int(g[i]), int(best[i]), float(p[i, best[i]]))
        for i in range(len(p))
        if above[i, best[i]] >= 0 and best[i] != g[i] and p[i, best[i]] >= floor
    ]
    return sorted(out, key=lambda d: (-(d.probability - p[d.position, d.given]), d.position))
