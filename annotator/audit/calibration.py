"""Calibration of the teacher's confidence against the human majority label.

``confidence`` is the teacher's self-consistency share (votes for the stored label / samples). Bins are
equal-width on [0, 1]; a value equal to a bin's upper edge falls in that bin (the first bin also holds 0).
ECE = sum over bins of |accuracy - mean confidence| * n_bin / N (Guo et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class Bin:
    low: float
    high: float
    n: int
    accuracy: float | None
    confidence: float | None


@dataclass
class Threshold:
    threshold: float
    kept: int
    coverage: float
    accuracy: float | None


@dataclass
class Calibration:
    available: bool
    reason: str | None = None
    n: int = 0
    ece: float | None = None
    mean_confidence: float | None = None
    accuracy: float | None = None
    bins: list[Bin] = field(default_factory=list)
    thresholds: list[Threshold] = field(default_factory=list)
    distinct_confidences: int = 0


def calibrate(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10, thresholds: tuple[float, ...] = THRESHOLDS
) -> Calibration:
    """``confidence`` (nan = none) and ``correct`` (bool) per item with a majority label."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.isfinite(conf)
    if not ok.any():
        return Calibration(available=False, reason="the teacher recorded no confidence for the evaluated items")
    conf, corr = conf[ok], np.asarray(correct, dtype=bool)[ok]
    n = len(conf)
    edges = np.round(np.linspace(0.0, 1.0, n_bins + 1), 10)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins: list[Bin] = []
    ece = 0.0
    for b in range(n_bins):
        sel = which == b
        nb = int(sel.sum())
        if nb:
            acc, mc = float(corr[sel].mean()), float(conf[sel].mean())
            ece += abs(acc - mc) * nb / n
            bins.append(Bin(low=float(edges[b]), high=float(edges[b + 1]), n=nb, accuracy=acc, confidence=mc))
        else:
            bins.append(Bin(low=float(edges[b]), high=float(edges[b + 1]), n=0, accuracy=None, confidence=None))
    rows = []
    for t in thresholds:
        keep = conf >= t - 1e-12
        k = int(keep.sum())
        rows.append(Threshold(threshold=t, kept=k, coverage=k / n, accuracy=float(corr[keep].mean()) if k else None))
    reason = None
    distinct = len(np.unique(conf))
    if distinct == 1:
        reason = f"every confidence is {conf[0]:g} (e.g. one sample per item), so calibration says little"
    return Calibration(
        available=True,
        reason=reason,
        n=n,
        ece=float(ece),
        mean_confidence=float(conf.mean()),
        accuracy=float(corr.mean()),
        bins=bins,
        thresholds=rows,
        distinct_confidences=distinct,
    )
