"""Agreement / classification / calibration metrics against established implementations and published examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support

from annotator.audit import agreement as ag
from annotator.audit import classification as cls
from annotator.audit.alt_test import benjamini_yekutieli
from annotator.audit.bootstrap import bootstrap_ci
from annotator.audit.calibration import calibrate

NAN = np.nan

# Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units, values 1-5,
# with missing data. Published: nominal .743, ordinal .815, interval .849. The same data is Gwet's
# `raw_4raters` example (irrCAC): AC1 = 0.77544 (pa 0.81818, pe 0.19032), Fleiss 0.76117 (pe 0.23872).
KRIPP_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa", worked example): 10 subjects, 14 raters, 5 categories.
FLEISS_WIKI = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def kripp_counts() -> np.ndarray:
    codes = np.where(np.isnan(KRIPP_2011), -1, KRIPP_2011 - 1).astype(int).T  # units x coders
    return ag.counts_from_matrix(codes, 5)


def random_ratings(rng: np.random.Generator, n: int = 60, m: int = 4, k: int = 4, missing: float = 0.2) -> np.ndarray:
    truth = rng.integers(0, k, size=n)
    codes = np.where(rng.random((n, m)) < 0.7, truth[:, None], rng.integers(0, k, size=(n, m)))
    codes[rng.random((n, m)) < missing] = -1
    return codes


# ----------------------------------------------------------------- published worked examples


@pytest.mark.parametrize("level,published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_2011_published_values(level: str, published: float) -> None:
    alpha = ag.krippendorff_alpha(kripp_counts(), level, np.arange(1, 6, dtype=float))
    assert round(alpha, 3) == published


def test_gwet_ac1_and_fleiss_published_example() -> None:
    counts = kripp_counts()
    pa, pi = ag._pa_pi(counts)
    assert pa == pytest.approx(0.81818, abs=5e-6)
    assert float((pi * (1 - pi)).sum()) / 4 == pytest.approx(0.19032, abs=5e-6)
    assert ag.gwet_ac1(counts, 5) == pytest.approx(0.77544, abs=5e-6)
    assert float((pi**2).sum()) == pytest.approx(0.23872, abs=5e-6)
    assert ag.fleiss_kappa(counts) == pytest.approx(0.76117, abs=5e-6)


def test_fleiss_wikipedia_example() -> None:
    assert round(ag.fleiss_kappa(FLEISS_WIKI), 3) == 0.210


def test_gwet_ac1_two_raters_textbook() -> None:
    # Gwet (2008), 2 raters, 2 categories: a=118 (both +), d=2 (both -), b=5, c=0 -> pa=.96, AC1 ~ .9577
    # computed by hand: pi_+ = ((118+5)/125 + 118/125)/2 ; pe = 2 pi (1-pi)
    a = np.array([0] * 118 + [0] * 5 + [1] * 2)
    b = np.array([0] * 118 + [1] * 5 + [1] * 2)
    counts = ag.counts_from_matrix(np.stack([a, b], axis=1), 2)
    pi = ((123 / 125) + (118 / 125)) / 2
    pe = 2 * pi * (1 - pi)
    expected = (120 / 125 - pe) / (1 - pe)
    assert ag.gwet_ac1(counts, 2) == pytest.approx(expected)
    # the kappa paradox: high agreement, low kappa, high AC1
    assert ag.cohen_kappa(a, b, 2) < 0.5 < ag.gwet_ac1(counts, 2)


# ----------------------------------------------------------------- established implementations


def test_krippendorff_matches_package_with_missing_values() -> None:
    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(3)
    for trial in range(5):
        codes = random_ratings(rng, n=40, m=5, k=5, missing=0.3)
        data = np.where(codes < 0, np.nan, codes + 1.0).T  # coders x units, values 1..5
        counts = ag.counts_from_matrix(codes, 5)
        for level in ("nominal", "ordinal", "interval"):
            ours = ag.krippendorff_alpha(counts, level, np.arange(1, 6, dtype=float))
            ref = krippendorff.alpha(reliability_data=data, level_of_measurement=level, value_domain=[1, 2, 3, 4, 5])
            assert ours == pytest.approx(ref, abs=1e-9), (trial, level)
    data = KRIPP_2011
    for level in ("nominal", "ordinal", "interval"):
        ref = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        assert ag.krippendorff_alpha(kripp_counts(), level, np.arange(1, 6.0)) == pytest.approx(ref, abs=1e-9)


def test_interval_alpha_uses_label_values() -> None:
    krippendorff = pytest.importorskip("krippendorff")
    values = np.array([0.0, 1.0, 5.0])  # unevenly spaced ratings
    codes = random_ratings(np.random.default_rng(4), n=30, m=3, k=3, missing=0.1)
    data = np.where(codes < 0, np.nan, values[np.clip(codes, 0, None)]).T
    ref = krippendorff.alpha(reliability_data=data, level_of_measurement="interval")
    assert ag.krippendorff_alpha(ag.counts_from_matrix(codes, 3), "interval", values) == pytest.approx(ref)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_sklearn(weights: str | None) -> None:
    rng = np.random.default_rng(5)
    for _ in range(10):
        codes = random_ratings(rng, n=50, m=2, k=4, missing=0.15)
        a, b = codes[:, 0], codes[:, 1]
        ok = (a >= 0) & (b >= 0)
        ref = cohen_kappa_score(a[ok], b[ok], labels=[0, 1, 2, 3], weights=weights)
        assert ag.cohen_kappa(a, b, 4, weights) == pytest.approx(ref, abs=1e-12)
        assert ag.percent_agreement(a, b) == pytest.approx(float(np.mean(a[ok] == b[ok])))


def test_fleiss_matches_statsmodels() -> None:
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    assert ag.fleiss_kappa(FLEISS_WIKI) == pytest.approx(inter_rater.fleiss_kappa(FLEISS_WIKI), abs=1e-12)
    rng = np.random.default_rng(6)
    for _ in range(5):
        codes = random_ratings(rng, n=40, m=5, k=3, missing=0.0)
        table, _ = inter_rater.aggregate_raters(codes, n_cat=3)
        assert ag.fleiss_kappa(ag.counts_from_matrix(codes, 3)) == pytest.approx(inter_rater.fleiss_kappa(table))


def test_gwet_and_fleiss_match_irrcac_when_installed() -> None:
    irr = pytest.importorskip("irrCAC.raw")
    import pandas as pd

    codes = random_ratings(np.random.default_rng(7), n=30, m=4, k=3, missing=0.2)
    df = pd.DataFrame(np.where(codes < 0, np.nan, codes + 1.0))
    cac = irr.CAC(df, categories=[1.0, 2.0, 3.0])
    counts = ag.counts_from_matrix(codes, 3)
    assert ag.gwet_ac1(counts, 3) == pytest.approx(cac.gwet()["est"]["coefficient_value"], abs=1e-4)
    assert ag.fleiss_kappa(counts) == pytest.approx(cac.fleiss()["est"]["coefficient_value"], abs=1e-4)


def test_two_rater_alpha_scott_pi_relation() -> None:
    # Krippendorff (2011): for 2 coders without missing data, nominal alpha = 1 - (2n-1)/(2n) * (1 - Scott's pi),
    # and Fleiss' kappa for 2 raters is Scott's pi.
    codes = random_ratings(np.random.default_rng(8), n=50, m=2, k=3, missing=0.0)
    counts = ag.counts_from_matrix(codes, 3)
    n = len(codes)
    pi_scott = ag.fleiss_kappa(counts)
    assert ag.krippendorff_alpha(counts, "nominal") == pytest.approx(1 - (2 * n - 1) / (2 * n) * (1 - pi_scott))


def test_category_kappa_equals_fleiss_kappa_j() -> None:
    # Fleiss (1971) eq. for kappa_j with a constant number of raters m
    t = FLEISS_WIKI.astype(float)
    N, m = t.shape[0], t[0].sum()
    p = t.sum(axis=0) / (N * m)
    direct = 1 - (t * (m - t)).sum(axis=0) / (N * m * (m - 1) * p * (1 - p))
    assert ag.category_kappa(FLEISS_WIKI) == pytest.approx(direct)


def test_specific_agreement_two_raters() -> None:
    # positive specific agreement for 2 raters: 2a / (2a + b + c)
    a = np.array([0, 0, 0, 1, 1, 0, 1])
    b = np.array([0, 0, 1, 1, 0, 0, 1])
    counts = ag.counts_from_matrix(np.stack([a, b], 1), 2)
    both0, both1, b01, b10 = 3, 2, 1, 1
    assert ag.specific_agreement(counts)[0] == pytest.approx(2 * both0 / (2 * both0 + b01 + b10))
    assert ag.specific_agreement(counts)[1] == pytest.approx(2 * both1 / (2 * both1 + b01 + b10))
    # teacher vs one human: same formula
    assert ag.cross_specific_agreement(a, ag.counts_from_matrix(b[:, None], 2))[0] == pytest.approx(6 / 8)


def test_undefined_values_are_nan() -> None:
    same = np.array([[3, 0], [3, 0]])
    assert math.isnan(ag.krippendorff_alpha(same))
    assert math.isnan(ag.cohen_kappa(np.array([0, 0]), np.array([0, 0]), 2))
    assert math.isnan(ag.fleiss_kappa(np.array([[1, 0], [0, 1]])))  # nobody has 2 ratings


# ----------------------------------------------------------------- classification


def test_classification_matches_sklearn() -> None:
    rng = np.random.default_rng(9)
    gold = rng.integers(0, 5, 80)
    pred = np.where(rng.random(80) < 0.6, gold, rng.integers(0, 4, 80))  # label 4 never predicted
    cm = cls.confusion_matrix(gold, pred, 5)
    s = cls.summary(cm)
    pc = cls.per_class(cm)
    for avg in ("macro", "micro", "weighted"):
        ref = precision_recall_fscore_support(gold, pred, average=avg, zero_division=0)[2]
        assert s[f"{avg}_f1"] == pytest.approx(ref)
    p, r, f1, sup = precision_recall_fscore_support(gold, pred, labels=range(5), zero_division=0)
    assert pc["precision"] == pytest.approx(p)
    assert pc["recall"] == pytest.approx(r)
    assert pc["f1"] == pytest.approx(f1)
    assert (pc["support"] == sup).all()
    assert s["accuracy"] == pytest.approx(float(np.mean(gold == pred)))


def test_macro_f1_ignores_labels_absent_from_gold_and_predictions() -> None:
    gold = np.array([0, 0, 1, 1])
    cm = cls.confusion_matrix(gold, gold, 4)
    assert cls.summary(cm)["macro_f1"] == 1.0


# ----------------------------------------------------------------- BY, bootstrap, calibration


def test_benjamini_yekutieli_matches_statsmodels() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(10)
    for m in (1, 3, 7, 20):
        p = rng.random(m) ** 3
        reject, adj, _, _ = multitest.multipletests(p, alpha=0.05, method="fdr_by")
        ours = benjamini_yekutieli(p)
        assert ours == pytest.approx(adj)
        assert ((ours <= 0.05) == reject).all()


def test_bootstrap_ci_is_reproducible_and_brackets_the_mean() -> None:
    x = np.random.default_rng(11).normal(size=200)

    def stat(idx: np.ndarray) -> dict[str, float]:
        return {"mean": float(x[idx].mean())}

    ci1 = bootstrap_ci(stat, len(x), 300, seed=1)
    ci2 = bootstrap_ci(stat, len(x), 300, seed=1)
    assert ci1 == ci2
    lo, hi = ci1["mean"]
    assert lo < x.mean() < hi
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert bootstrap_ci(stat, len(x), 0) == {}


def test_calibration_ece_by_hand() -> None:
    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55, 0.55, 0.55, np.nan])
    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    cal = calibrate(conf, correct)
    assert cal.available and cal.n == 8
    # bins (0.9,1]: acc .75 conf .95 ; (0.5,0.6]: acc .25 conf .55
    assert cal.ece == pytest.approx(0.5 * abs(0.75 - 0.95) + 0.5 * abs(0.25 - 0.55))
    rows = {t.threshold: t for t in cal.thresholds}
    assert rows[0.9].kept == 4 and rows[0.9].coverage == 0.5 and rows[0.9].accuracy == 0.75
    assert rows[0.5].kept == 8 and rows[0.5].accuracy == 0.5
    assert rows[1.0].kept == 0 and rows[1.0].accuracy is None
    upper_edge = calibrate(np.array([0.3, 0.0, 1.0]), np.array([True, True, True]))
    assert [b.n for b in upper_edge.bins] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]


def test_calibration_without_confidence() -> None:
    cal = calibrate(np.array([np.nan, np.nan]), np.array([True, False]))
    assert not cal.available and "no confidence" in (cal.reason or "")


def test_labels_only_predicted_count_in_the_averages_as_sklearn() -> None:
    """A label the teacher predicts but no human chose has F1 0 and counts in the macro average (sklearn's rule)."""
    gold = np.array([0, 0, 1, 1, 1, 0])
    pred = np.array([0, 2, 1, 1, 2, 0])  # label 2: predicted, never gold; label 3: neither
    s = cls.summary(cls.confusion_matrix(gold, pred, 4))
    for avg in ("macro", "weighted"):
        assert s[f"{avg}_f1"] == pytest.approx(
            precision_recall_fscore_support(gold, pred, average=avg, zero_division=0)[2]
        )
    assert s["macro_f1"] == pytest.approx((0.8 + 0.8 + 0.0) / 3)


def test_student_scores_use_the_audit_classification_and_match_sklearn() -> None:
    """The student's single-label scores (label names, the dataset's order) equal scikit-learn's."""
    from sklearn.metrics import accuracy_score, f1_score

    from annotator.student.evaluate import score

    rng = np.random.default_rng(3)
    names = ["sport", "economy", "health", "science", "culture"]
    gold = [names[i] for i in rng.integers(0, 5, 60)]
    pred = [g if rng.random() < 0.6 else names[i] for g, i in zip(gold, rng.integers(0, 3, 60))]
    pred[0] = "unlisted"  # a label outside the label set is scored too (after the listed ones)
    s = score(gold, pred, names, multi_label=False)
    labels = [n for n in names if n in set(gold) | set(pred)] + ["unlisted"]
    per = f1_score(gold, pred, labels=labels, average=None, zero_division=0)
    assert s.accuracy == round(accuracy_score(gold, pred), 4)
    assert s.macro_f1 == round(f1_score(gold, pred, labels=labels, average="macro", zero_division=0), 4)
    assert s.per_label_f1 == {lab: round(float(f), 4) for lab, f in zip(labels, per)}
    assert list(s.per_label_f1) == labels
    assert score([], [], names, multi_label=False).n == 0
