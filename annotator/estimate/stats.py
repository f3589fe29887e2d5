"""Label shares of a corpus from the teacher's labels of every item and human labels of a sample (numpy only).

Notation (one slice ``d`` of the corpus; without ``--by`` the slice is the whole corpus):

* the population ``U_d``: the ``N_d`` items of the run with an ok teacher label; ``f_i`` the one-hot teacher label
  (a vector over the label set), ``Y_i`` the human label (one-hot; a tied human vote is split evenly);
* the human sample ``s``: items drawn with inclusion probabilities ``pi_i`` (``n / N`` for a simple random
  sample), ``w_i = 1 / pi_i``; items with the same ``pi`` form a stratum drawn without replacement (the designs of
  ``annotator sample``);
* the target: the share ``theta_d = mean over U_d of Y_i``, the labels humans would give the whole slice.

The corrected share is the power-tuned difference estimator

    theta_hat(lam) = lam * mean_{U_d}(f) + mu_hat(Y) - lam * mu_hat(f),   mu_hat(x) = sum_{s_d} w x / sum_{s_d} w

* ``lam = 1`` with a random sample is prediction-powered inference (Angelopoulos et al., Science 2023, eq. 1 for a
  mean); with inclusion probabilities it is the design-based supervised learning estimator (Egami et al., NeurIPS
  2023, the pseudo-outcome ``f + R (Y - f) / pi``, sec. 3) and the estimator of Confidence-Driven Inference
  (Gligoric et al., NAACL 2025, sec. 3), here with the Hajek normalisation ``sum w`` (Sarndal, Swensson & Wretman
  1992, sec. 5.7) so that slices and unlabelled drawn items are handled as domains;
* ``lam`` is tuned to minimise the variance, as in PPI++ (Angelopoulos, Duchi & Zrnic 2023, sec. 2.2: power
  tuning ``lam = Cov(Y, f) / Var(f)``, clipped to [0, 1]); ``lam = 0`` is the human-only (Hajek) estimate.

Its variance is the without-replacement design variance of a stratified sample (Sarndal et al. 1992, eq. 3.7.8 and
the linearised domain mean of sec. 5.7 / 10.3), not the i.i.d. variance of the papers: the teacher's labels cover
the whole finite corpus, so ``mean_U(f)`` carries no error and the sample's finite-population correction applies:

    V(lam) = sum_g n_g (1 - pi_g) / pi_g^2 * s_g^2(e(lam)) / N_hat_d^2,
    e_i(lam) = 1[i in d] * ((Y_i - mu_hat(Y)) - lam (f_i - mu_hat(f))),   N_hat_d = sum_{s_d} w

with ``s_g^2`` the sample variance within stratum ``g`` (over every sampled item of the stratum, zero outside the
slice; a stratum merged from several probabilities uses the expanded values ``e_i / pi_i``, see design_moments).
``V(lam) = A - 2 lam B + lam^2 C`` is quadratic, so the tuned ``lam = B / C`` minimises it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

PROB_DIGITS = 9  # inclusion probabilities equal to this many digits form one stratum
ROUNDING = 1e-12  # a centred sum of squares this small next to the uncentred one is zero
PSEUDO_CELL = 0.5  # items added to each cell of the (human, teacher) 2x2 table for the variance (Agresti & Min 2005)
CELLS = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (human says the label, teacher says it)


def strata_of(prob: np.ndarray) -> np.ndarray:
    """Stratum index of each sampled item: items with the same inclusion probability form one stratum (the designs
    of ``annotator sample`` draw each stratum without replacement at its own rate). A stratum with one item has no
    within-stratum variance, so it is collapsed into the stratum of the nearest probability (collapsed strata,
    Wolter 2007, sec. 2.5: conservative)."""
    keys = np.round(np.asarray(prob, dtype=float), PROB_DIGITS)
    values, group, counts = np.unique(keys, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    if len(values) == 1 or counts.min() > 1:
        return group
    big = np.flatnonzero(counts > 1)
    target = np.arange(len(values))
    for g in np.flatnonzero(counts == 1):  # every stratum a singleton: one stratum
        target[g] = big[np.argmin(np.abs(values[big] - values[g]))] if len(big) else 0
    return np.unique(target[group], return_inverse=True)[1].reshape(-1)


def hajek_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum w x / sum w`` per column of ``x`` (items x labels); nan when ``sum w`` is 0."""
    total = w.sum()
    return (w @ x) / total if total > 0 else np.full(x.shape[1], np.nan)


Pseudo = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Augmenting items of :func:`design_moments`: their ``a`` and ``b`` values (cells x labels) and how many of each
cell every stratum gets."""


def design_moments(
    a: np.ndarray, b: np.ndarray, prob: np.ndarray, strata: np.ndarray, n_hat: float, pseudo: Pseudo | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, B, C)`` per label: the design variance of ``a``, covariance of ``a`` and ``b``, and variance of ``b``,
    for a stratified sample without replacement (Sarndal et al. 1992, eq. 3.7.8) written with the expanded values
    ``z = x / pi``: ``sum_g (1 - mean pi_g) n_g / (n_g - 1) sum_{i in g} (z_i - mean_g z)(z'_i - mean_g z') / n_hat^2``,
    which is ``n_g (1 - pi_g) / pi_g^2 s_g(x, x') / n_hat^2`` when the stratum's ``pi`` are equal, and the
    collapsed-strata estimator when they are not (Wolter 2007, sec. 2.5). ``a``, ``b``: items x labels.

    ``pseudo = (a_cells, b_cells, count)``: the sums of squares also run over ``count[g]`` extra items of each cell
    in stratum ``g``, at the stratum's mean probability: the small-count adjustment. ``V(lam)`` is learnt from the
    sampled items where human and teacher disagree on the label; when the sample holds only a handful (an accurate
    teacher, a rare label, a small sample) it is mostly too small, and 0 when it holds none, so the normal interval
    undercovered badly (32-36% for a 99%-accurate teacher and 100 human items, in simulation). :func:`share_estimates`
    therefore adds ``PSEUDO_CELL`` (half an) item to each cell of the (human says the label or not) x (teacher says
    it or not) table, spread over the strata in proportion to the slice's weight in them: Agresti & Min (2005)'s
    adjustment of the Wald interval for a difference of matched proportions, which ``lam = 1`` with a random sample
    is (for ``lam = 0`` it adds one success and one failure, as the Agresti-Coull interval does). The augmenting
    items change the variance only, never the estimate, and ``lam`` minimises that reported variance (tuned on the
    real items alone, it undercovered where a few heavy items carry the estimate: 90% instead of 93% for a 10% label
    with weights 1:90). A census (every item labelled) has variance 0."""
    n = len(prob)
    member = np.zeros((int(strata.max()) + 1, n))
    member[strata, np.arange(n)] = 1.0
    n_g = member.sum(axis=1)
    pi_g = member @ prob / n_g
    coef = np.where(n_g > 1, (1.0 - pi_g) * n_g / np.maximum(n_g - 1, 1), 0.0) / n_hat**2
    none = np.zeros((0, a.shape[1]))
    a_cells, b_cells, count = pseudo if pseudo is not None else (none, none, np.zeros(len(n_g)))
    za, zb = a / prob[:, None], b / prob[:, None]
    za_c, zb_c = a_cells[None] / pi_g[:, None, None], b_cells[None] / pi_g[:, None, None]  # strata x cells x labels
    size = (n_g + count * len(a_cells))[:, None]
    mean_a = (member @ za + count[:, None] * za_c.sum(axis=1)) / size
    mean_b = (member @ zb + count[:, None] * zb_c.sum(axis=1)) / size
    ca, ca_c = za - mean_a[strata], za_c - mean_a[:, None]
    cb, cb_c = zb - mean_b[strata], zb_c - mean_b[:, None]

    def moment(x: np.ndarray, x_c: np.ndarray, y: np.ndarray, y_c: np.ndarray) -> np.ndarray:
        return np.asarray(coef @ (member @ (x * y) + count[:, None] * (x_c * y_c).sum(axis=1)))

    var_b = moment(cb, cb_c, cb, cb_c)
    var_b[var_b <= ROUNDING * moment(zb, zb_c, zb, zb_c)] = 0.0  # rounding: b constant within every stratum
    return moment(ca, ca_c, ca, ca_c), moment(ca, ca_c, cb, cb_c), var_b


def power_tuned_lambda(B: np.ndarray, C: np.ndarray) -> np.ndarray:
    """The ``lam`` minimising ``A - 2 lam B + lam^2 C``, clipped to [0, 1] (PPI++, Angelopoulos, Duchi & Zrnic 2023,
    sec. 2.2 and Example 6.1: ``Cov(Y, f) / Var(f)``; 0 where the teacher's labels do not vary in the sample)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(C > 0, B / C, 0.0)
    return np.clip(lam, 0.0, 1.0)


def effective_human_labels(sigma2: np.ndarray, var: np.ndarray, population: int) -> np.ndarray:
    """How many human labels a simple random sample without replacement would need, without the teacher, to
    reach variance ``var``: the ``m`` solving ``(1 - m / N) sigma2 / m = var``, i.e. ``sigma2 / (var + sigma2 / N)``
    (Kish 1965's effective sample size, with the finite-population correction); nan where ``sigma2`` is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sigma2 > 0, sigma2 / (var + sigma2 / population), np.nan)


def kish_count(Y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per label, Kish's effective number of the items carrying it, ``(sum w y)^2 / sum w^2 y``: their count when the
    weights are equal, fewer when a few heavy items dominate (Kish 1965, sec. 11.7)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        heavy = w**2 @ Y
        return np.where(heavy > 0, (w @ Y) ** 2 / heavy, 0.0)


@dataclass
class ShareEstimates:
    """Per label (arrays over the label set) for one slice."""

    raw: np.ndarray  # the teacher's share of the population
    corrected: np.ndarray
    corrected_low: np.ndarray
    corrected_high: np.ndarray
    corrected_se: np.ndarray
    lam: np.ndarray
    human: np.ndarray  # the human-only (Hajek) estimate, lam = 0
    human_low: np.ndarray
    human_high: np.ndarray
    human_se: np.ndarray
    n_humans: int  # human-labelled items in the slice
    label_humans: np.ndarray  # per label, the human items of the slice that carry it (ties count their share)
    label_effective: np.ndarray  # the same, as Kish's effective number under the weights (= label_humans if equal)
    population: int  # teacher-labelled items in the slice
    effective_humans: np.ndarray  # human labels the corrected estimate is worth (effective_human_labels)
    n_hat: float  # sum of 1/pi over the slice's human items (the population size the design implies)


def share_estimates(
    Y: np.ndarray,
    f: np.ndarray,
    prob: np.ndarray,
    in_slice: np.ndarray,
    raw: np.ndarray,
    population: int,
    confidence: float = 0.95,
    lam: np.ndarray | None = None,
    pseudo: float = PSEUDO_CELL,
) -> ShareEstimates:
    """Raw, corrected and human-only shares of every label in one slice, with ``confidence`` normal intervals.

    ``Y``, ``f``: human and teacher labels of the WHOLE human sample (items x labels, rows sum to 1); ``prob``: their
    inclusion probabilities; ``in_slice``: which sampled items are in the slice; ``raw``: the teacher's share of each
    label among the slice's ``population`` items. ``lam``: fixed power-tuning values (default: tuned, which is never
    wider than the human-only interval). ``pseudo``: the items added to each cell of the (human, teacher) table for
    the variances (the small-count adjustment; 0: the plain design variance)."""
    w = np.where(in_slice, 1.0 / prob, 0.0)
    n_hat = float(w.sum())
    mu_y, mu_f = hajek_mean(Y, w), hajek_mean(f, w)
    inside = in_slice[:, None]
    a = np.where(inside, Y - mu_y, 0.0)
    b = np.where(inside, f - mu_f, 0.0)
    strata = strata_of(prob)
    count = pseudo * np.bincount(strata, weights=w) / n_hat  # the augmenting items go where the slice's weight is
    A, B, C = design_moments(a, b, prob, strata, n_hat, (CELLS[:, :1] - mu_y, CELLS[:, 1:] - mu_f, count))
    if lam is None:  # minimise the variance reported; 0 where the teacher's labels do not vary within the strata
        varies = design_moments(a, b, prob, strata, n_hat)[2] > 0
        lam = np.where(varies, power_tuned_lambda(B, C), 0.0)
    lam = np.broadcast_to(np.asarray(lam, dtype=float), mu_y.shape)
    corrected = lam * raw + mu_y - lam * mu_f
    var_c = np.maximum(A - 2 * lam * B + lam**2 * C, 0.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    se_c, se_h = np.sqrt(var_c), np.sqrt(np.maximum(A, 0.0))
    n_d = int(in_slice.sum())
    sigma2 = (w @ (Y - mu_y) ** 2) / n_hat * n_d / max(n_d - 1, 1)
    return ShareEstimates(
        raw=raw,
        corrected=corrected,
        corrected_low=np.clip(corrected - z * se_c, 0, 1),
        corrected_high=np.clip(corrected + z * se_c, 0, 1),
        corrected_se=se_c,
        lam=lam,
        human=mu_y,
        human_low=np.clip(mu_y - z * se_h, 0, 1),
        human_high=np.clip(mu_y + z * se_h, 0, 1),
        human_se=se_h,
        n_humans=n_d,
        label_humans=Y[in_slice].sum(axis=0),
        label_effective=kish_count(Y[in_slice], w[in_slice]),
        population=population,
        effective_humans=effective_human_labels(sigma2, var_c, population),
        n_hat=n_hat,
    )


def slice_estimates(
    Y: np.ndarray,
    f: np.ndarray,
    prob: np.ndarray,
    in_slice: np.ndarray,
    raw: np.ndarray,
    population: int,
    lam_all: np.ndarray,
    confidence: float = 0.95,
) -> ShareEstimates:
    """One slice of the corpus (``--by``), with the power tuning of the WHOLE sample ``lam_all`` (a slice has too
    few human items to tune its own: in simulation, slice-tuned intervals covered 92.9% instead of 95%, as the
    minimised variance of a small sample is too optimistic), except that a label whose slice interval would be
    wider with the teacher than without (the teacher is worse than useless there) gets ``lam = 0``."""
    e = share_estimates(Y, f, prob, in_slice, raw, population, confidence, lam=lam_all)
    worse = e.corrected_se > e.human_se
    if not worse.any():
        return e
    return share_estimates(Y, f, prob, in_slice, raw, population, confidence, lam=np.where(worse, 0.0, lam_all))
