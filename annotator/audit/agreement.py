"""Agreement coefficients on integer-coded labels (-1 = missing).

Two inputs are used throughout:

* a pair of code vectors (Cohen's kappa, percent agreement), compared on the items both raters labelled;
* a *count matrix* ``counts[i, k]`` = number of raters who put item ``i`` in category ``k`` (Fleiss' kappa,
  Krippendorff's alpha, Gwet's AC1). Items may have different numbers of raters (missing values).

Formulas
--------
* Cohen (1960) kappa; weighted kappa (Cohen 1968) with linear or quadratic weights on the label index, as in
  scikit-learn's ``cohen_kappa_score``.
* Fleiss (1971) kappa, in the form that allows a varying number of raters per item (Gwet 2014, as in the
  irrCAC package): ``pa`` averages per-item agreement over items with >= 2 ratings, ``pe = sum_k pi_k^2`` with
  ``pi_k`` the mean share of category k per item. With complete data it equals statsmodels' ``fleiss_kappa``.
* Krippendorff (2011) alpha from the coincidence matrix, with nominal, ordinal and interval difference functions;
  units with fewer than 2 values are not pairable and drop out.
* Gwet (2008) AC1: same ``pa`` as Fleiss, ``pe = 1/(q-1) sum_k pi_k (1 - pi_k)`` where ``q`` is the number of
  categories in the label set (not only the observed ones).

Undefined values (no variation, no pairable items) are returned as ``nan``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Weights = Literal["linear", "quadratic"] | None


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = (a >= 0) & (b >= 0)
    return a[ok], b[ok]


def percent_agreement(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _pair(a, b)
    return float(np.mean(a == b)) if len(a) else math.nan


def confusion(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Rows = ``a``'s label, columns = ``b``'s label, on items both labelled."""
    a, b = _pair(a, b)
    return np.bincount(a * k + b, minlength=k * k).reshape(k, k)


def kappa_from_confusion(cm: np.ndarray, weights: Weights = None) -> float:
    n = cm.sum()
    if n == 0:
        return math.nan
    k = cm.shape[0]
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / n
    if weights is None:
        w = 1.0 - np.eye(k)
    else:
        d = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)
        w = d if weights == "linear" else d**2
    denom = float((w * expected).sum())
    if denom == 0:
        return math.nan
    return 1.0 - float((w * cm).sum()) / denom


def cohen_kappa(a: np.ndarray, b: np.ndarray, k: int, weights: Weights = None) -> float:
    return kappa_from_confusion(confusion(a, b, k), weights)


def _pa_pi(counts: np.ndarray) -> tuple[float, np.ndarray]:
    counts = np.asarray(counts, dtype=float)
    r = counts.sum(axis=1)
    rated = r >= 1
    multi = r >= 2
    if not multi.any():
        return math.nan, np.full(counts.shape[1], math.nan)
    cm, rm = counts[multi], r[multi]
    pa = float(np.mean((cm * (cm - 1)).sum(axis=1) / (rm * (rm - 1))))
    pi = (counts[rated] / r[rated][:, None]).mean(axis=0)
    return pa, pi


def fleiss_kappa(counts: np.ndarray) -> float:
    pa, pi = _pa_pi(counts)
    if math.isnan(pa):
        return math.nan
    pe = float((pi**2).sum())
    return math.nan if pe >= 1 else (pa - pe) / (1 - pe)


def gwet_ac1(counts: np.ndarray, q: int | None = None) -> float:
    pa, pi = _pa_pi(counts)
    q = counts.shape[1] if q is None else q
    if math.isnan(pa) or q < 2:
        return math.nan
    pe = float((pi * (1 - pi)).sum()) / (q - 1)
    return (pa - pe) / (1 - pe)


def coincidence(counts: np.ndarray) -> np.ndarray:
    """Krippendorff's coincidence matrix ``o[c, k]`` from per-unit value counts."""
    counts = np.asarray(counts, dtype=float)
    m = counts.sum(axis=1)
    pairable = m >= 2
    c, mu = counts[pairable], m[pairable]
    w = 1.0 / (mu - 1)
    return (c * w[:, None]).T @ c - np.diag((c * w[:, None]).sum(axis=0))


def delta(level: str, n_c: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """Squared difference function for each pair of categories."""
    k = len(n_c)
    if level == "nominal":
        return 1.0 - np.eye(k)
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        lo = np.minimum.outer(np.arange(k), np.arange(k))
        hi = np.maximum.outer(np.arange(k), np.arange(k))
        between = cum[hi + 1] - cum[lo]  # sum of n_g for g in [lo, hi]
        return (between - (n_c[lo] + n_c[hi]) / 2.0) ** 2
    if level == "interval":
        v = np.arange(k, dtype=float) if values is None else np.asarray(values, dtype=float)
        return np.subtract.outer(v, v) ** 2
    raise ValueError(f"unknown level {level!r}")


def krippendorff_alpha(counts: np.ndarray, level: str = "nominal", values: np.ndarray | None = None) -> float:
    o = coincidence(counts)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return math.nan
    d = delta(level, n_c, values)
    expected = float((np.outer(n_c, n_c) * d).sum())
    if expected == 0:
        return math.nan
    return 1.0 - (n - 1) * float((o * d).sum()) / expected


def counts_from_matrix(codes: np.ndarray, k: int) -> np.ndarray:
    """Items x raters codes (-1 missing) -> items x categories counts."""
    codes = np.asarray(codes)
    out = np.zeros((codes.shape[0], k), dtype=np.int64)
    for col in codes.T:
        ok = col >= 0
        np.add.at(out, (np.flatnonzero(ok), col[ok]), 1)
    return out


def specific_agreement(counts: np.ndarray) -> np.ndarray:
    """Per category: of the ratings of category k on items with >= 2 ratings, the share of the *other* ratings
    on the same item that are also k (pair-weighted). Equals positive specific agreement for two raters."""
    counts = np.asarray(counts, dtype=float)
    m = counts.sum(axis=1)
    multi = m >= 2
    c, mu = counts[multi], m[multi]
    num = (c * (c - 1)).sum(axis=0)
    den = (c * (mu - 1)[:, None]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def category_kappa(counts: np.ndarray) -> np.ndarray:
    """Fleiss (1971) kappa for each category, ``(p_s - p_k) / (1 - p_k)`` with ``p_s`` the specific agreement and
    ``p_k`` the share of category k among the pairable ratings. Equal to Fleiss' kappa_j for complete data."""
    counts = np.asarray(counts, dtype=float)
    m = counts.sum(axis=1)
    c = counts[m >= 2]
    total = c.sum()
    ps = specific_agreement(counts)
    if total == 0:
        return np.full(counts.shape[1], np.nan)
    p = c.sum(axis=0) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p < 1, (ps - p) / np.where(p < 1, 1 - p, 1), np.nan)


def cross_specific_agreement(teacher: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per category, over all (teacher, human) rating pairs on the same item:
    2 * #(both k) / (#(teacher says k) + #(human says k)) -- the teacher-human analogue of specific agreement."""
    counts = np.asarray(counts, dtype=float)
    ok = teacher >= 0
    t = np.zeros_like(counts)
    t[np.flatnonzero(ok), teacher[ok]] = 1.0
    m = counts.sum(axis=1)
    both = (t * counts).sum(axis=0)
    t_pairs = (t * m[:, None]).sum(axis=0)
    h_pairs = (counts * ok[:, None]).sum(axis=0)
    den = t_pairs + h_pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * both / np.where(den > 0, den, 1), np.nan)
