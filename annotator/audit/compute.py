"""Every statistic of an audit, from the encoded data (:class:`~annotator.audit.dataset.AuditData`): point estimates,
bootstrap confidence intervals, the alt-test, calibration and the gate. The pooled audit and each slice
(:mod:`annotator.audit.slices`) are computed here, so each metric has one implementation."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import numpy as np

from annotator import __version__
from annotator.audit import agreement as ag
from annotator.audit import classification as cls
from annotator.audit.alt_test import MIN_ITEMS, AltTestResult, alt_test, verdict
from annotator.audit.bootstrap import bootstrap_ci
from annotator.audit.calibration import calibrate
from annotator.audit.dataset import AuditData, onehot
from annotator.audit.results import (
    Agreement,
    AuditReport,
    Category,
    Classification,
    ClassMetrics,
    ConfusionMatrix,
    Coverage,
    Estimate,
    Gate,
    GroupAgreement,
    HumanHuman,
    Inputs,
    Numeric,
    PairAgreement,
    SubstitutedAlpha,
    TeacherHuman,
    TeacherVsMajority,
)
from annotator.choices import GateMetric

LOW_CATEGORY_KAPPA = 0.4
MAX_BOOTSTRAP_PAIRS = 60

GATE_METRICS: dict[str, str] = {
    GateMetric.krippendorff_alpha.value: "Krippendorff's alpha, teacher vs human majority, at --level",
    GateMetric.cohen_kappa.value: "Cohen's kappa, teacher vs human majority",
    GateMetric.gwet_ac1.value: "Gwet's AC1, teacher vs human majority",
    GateMetric.accuracy.value: "accuracy vs human majority",
    GateMetric.macro_f1.value: "macro F1 vs human majority",
    GateMetric.mean_cohen_kappa.value: "mean Cohen's kappa of the teacher with each human",
    GateMetric.alpha_substituted.value: "Krippendorff's alpha with the teacher substituted for a human (mean)",
    GateMetric.winning_rate.value: "alt-test winning rate",
    GateMetric.advantage_probability.value: "alt-test average advantage probability",
}
KAPPA_WEIGHTS: dict[str, ag.Weights] = {"nominal": None, "ordinal": "linear", "interval": "quadratic"}


@dataclass
class AuditOptions:
    """What the user asked of an audit (``annotator audit``'s options)."""

    humans: Path
    teacher: Path
    out: Path | None = None
    labels: list[str] | None = None
    level: str = "nominal"
    epsilon: float = 0.2
    alpha: float = 0.05
    bootstrap: int = 1000
    seed: int = 0
    min_agreement: float | None = None
    gate_metric: str = "krippendorff_alpha"
    plots: bool = True
    alt_test_min_items: int = MIN_ITEMS
    by: str | None = None  # audit every slice of this column too (``annotator.audit.slices``)
    min_slice_items: int = 20


def _none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _nanmean(xs: list[float]) -> float:
    arr = np.asarray(xs, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if len(arr) else math.nan


class _Stats:
    """All bootstrappable statistics, computed from one item sample."""

    def __init__(self, d: AuditData) -> None:
        self.d = d
        self.k = d.n_labels
        self.w = KAPPA_WEIGHTS[d.level]
        self.t1 = onehot(d.teacher, self.k)
        self.m = len(d.annotators)
        self.pairs = list(combinations(range(self.m), 2))
        # Pairs that share items; with very many annotators the pairwise means are not bootstrapped (too slow).
        self.shared = [(a, b) for a, b in self.pairs if ((d.H[:, a] >= 0) & (d.H[:, b] >= 0)).sum() >= 2]
        self.boot_pairs = self.shared if len(self.shared) <= MAX_BOOTSTRAP_PAIRS else None
        self.h1 = [onehot(d.H[:, j], self.k) for j in range(self.m)]
        self.design_w = None if d.inclusion_prob is None else 1.0 / d.inclusion_prob

    def alpha(self, counts: np.ndarray) -> float:
        return ag.krippendorff_alpha(counts, self.d.level, self.d.values)

    def resample(self, idx: np.ndarray) -> dict[str, float]:
        """Statistics of one bootstrap sample; the per-pair ones only when there are not too many pairs."""
        return self(idx, pairs=self.boot_pairs) if self.boot_pairs is not None else self(idx, per_pair=False)

    def __call__(
        self, idx: np.ndarray, pairs: list[tuple[int, int]] | None = None, per_pair: bool = True
    ) -> dict[str, float]:
        d, k, w = self.d, self.k, self.w
        H, t, C, gold = d.H[idx], d.teacher[idx], d.counts[idx], d.majority[idx]
        g = gold >= 0
        cm = cls.confusion_matrix(gold, t, k)
        s = cls.summary(cm)
        pair_counts = (onehot(gold, k) + self.t1[idx])[g]
        Ct = C + self.t1[idx]
        out = {
            "accuracy": s["accuracy"],
            "micro_f1": s["micro_f1"],
            "macro_f1": s["macro_f1"],
            "tvm_pa": ag.percent_agreement(gold, t),
            "tvm_kappa": ag.kappa_from_confusion(cm, w),
            "tvm_alpha": self.alpha(pair_counts),
            "tvm_ac1": ag.gwet_ac1(pair_counts, k),
            "hh_fleiss": ag.fleiss_kappa(C),
            "hh_alpha": self.alpha(C),
            "hh_ac1": ag.gwet_ac1(C, k),
            "th_kappa": _nanmean([ag.cohen_kappa(t, H[:, j], k, w) for j in range(self.m)]),
            "th_pa": _nanmean([ag.percent_agreement(t, H[:, j]) for j in range(self.m)]),
            "ht_fleiss": ag.fleiss_kappa(Ct),
            "ht_alpha": self.alpha(Ct),
            "ht_ac1": ag.gwet_ac1(Ct, k),
        }
        if self.design_w is not None:
            w_g = self.design_w[idx][g]
            out["accuracy_design"] = float((w_g * (gold[g] == t[g])).sum() / w_g.sum()) if g.any() else math.nan
        if per_pair:
            pairs = self.shared if pairs is None else pairs
            out["hh_kappa"] = _nanmean([ag.cohen_kappa(H[:, a], H[:, b], k, w) for a, b in pairs])
            out["hh_pa"] = _nanmean([ag.percent_agreement(H[:, a], H[:, b]) for a, b in pairs])
            out["sub_alpha"] = _nanmean([self.alpha(self.substituted(idx, j)) for j in range(self.m)])
        return out

    def substituted(self, idx: np.ndarray, j: int) -> np.ndarray:
        rated = (self.d.H[idx, j] >= 0)[:, None]
        return self.d.counts[idx] - self.h1[j][idx] + self.t1[idx] * rated


def _per_category(d: AuditData) -> list[Category]:
    C = d.counts.astype(float)
    m = C.sum(axis=1)
    h_sa = ag.specific_agreement(C)
    t_sa = ag.cross_specific_agreement(d.teacher, C)
    kappa = ag.category_kappa(C)
    teacher_hits = C[np.arange(len(d.teacher)), d.teacher]
    out = []
    for c, label in enumerate(d.labels):
        sel = d.majority == c
        multi = sel & (m >= 2)
        pairs = (m[multi] * (m[multi] - 1)).sum()
        hh = (C[multi] * (C[multi] - 1)).sum() / pairs if pairs else math.nan
        th = teacher_hits[sel].sum() / m[sel].sum() if sel.any() else math.nan
        acc = float((d.teacher[sel] == c).mean()) if sel.any() else math.nan
        low = bool(math.isfinite(kappa[c]) and kappa[c] < LOW_CATEGORY_KAPPA)
        out.append(
            Category(
                label=label,
                n_majority_items=int(sel.sum()),
                human_pair_agreement=_none(hh),
                teacher_human_agreement=_none(th),
                teacher_accuracy=_none(acc),
                human_specific_agreement=_none(h_sa[c]),
                teacher_specific_agreement=_none(t_sa[c]),
                human_category_kappa=_none(kappa[c]),
                low_human_agreement=low,
            )
        )
    return out


def _numeric(d: AuditData) -> Numeric:
    v = d.values
    C = d.counts.astype(float)
    m = C.sum(axis=1)
    mean = (C @ v) / m
    tv = v[d.teacher]
    err = tv - mean
    r = float(np.corrcoef(tv, mean)[0, 1]) if np.std(tv) > 0 and np.std(mean) > 0 else math.nan
    loo = []
    for j in range(len(d.annotators)):
        rows = np.flatnonzero((d.H[:, j] >= 0) & (m >= 2))
        x = v[d.H[rows, j]]
        others = (C[rows] @ v - x) / (m[rows] - 1)
        loo.extend(np.abs(x - others).tolist())
    return Numeric(
        teacher_mae=_none(float(np.mean(np.abs(err)))),
        teacher_rmse=_none(float(np.sqrt(np.mean(err**2)))),
        teacher_pearson=_none(r),
        human_loo_mae=_none(float(np.mean(loo))) if loo else None,
    )


Est = Callable[[str], Estimate]


def compute(
    d: AuditData, opts: AuditOptions, humans_format: str, teacher_source: str, teacher_model: str | None
) -> AuditReport:
    """Every section of the report from the encoded data: point estimates, bootstrap CIs, alt-test, gate."""
    stats = _Stats(d)
    n = len(d.items)
    point = stats(np.arange(n))
    confidence_level = 1.0 - opts.alpha
    cis = bootstrap_ci(stats.resample, n, opts.bootstrap, seed=opts.seed, confidence=confidence_level)

    def est(key: str) -> Estimate:
        lo, hi = cis.get(key, (math.nan, math.nan))
        return Estimate(value=_none(point[key]), ci_low=_none(lo), ci_high=_none(hi))

    categories = _per_category(d)
    scoring = "neg_rmse" if d.level == "interval" else "accuracy"
    alt = alt_test(
        d.H,
        d.teacher,
        d.annotators,
        scoring=scoring,
        epsilon=opts.epsilon,
        alpha=opts.alpha,
        values=d.values,
        min_items=opts.alt_test_min_items,
    )
    g = d.majority >= 0
    calibration = calibrate(d.confidence[g], d.majority[g] == d.teacher[g])
    ratings = {a: int((d.H[:, j] >= 0).sum()) for j, a in enumerate(d.annotators)}
    return AuditReport(
        annotator_version=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        inputs=Inputs(
            humans=str(opts.humans),
            humans_format=humans_format,
            teacher=str(opts.teacher),
            teacher_source=teacher_source,
            teacher_model=teacher_model,
            level=d.level,
            labels=d.labels,
            label_source=d.label_source,
            epsilon=opts.epsilon,
            alpha=opts.alpha,
            bootstrap=opts.bootstrap,
            seed=opts.seed,
            confidence_level=confidence_level,
            kappa_weights=stats.w,
            gate_metric=opts.gate_metric,
            min_agreement=opts.min_agreement,
            alt_test_min_items=opts.alt_test_min_items,
        ),
        coverage=Coverage(annotators=d.annotators, ratings_per_annotator=ratings, **d.coverage),
        warnings=list(d.warnings),
        classification=_classification(d, est),
        agreement=_agreement(d, stats, est),
        per_category=categories,
        low_agreement_categories=[c.label for c in categories if c.low_human_agreement],
        alt_test=alt,
        alt_test_verdict=verdict(alt),
        calibration=calibration,
        numeric=_numeric(d) if d.level == "interval" else None,
        gate=_gate(point, alt, opts),
    )


def _classification(d: AuditData, est: Est) -> Classification:
    """Section 1: the teacher vs the human majority as a classifier."""
    cm = cls.confusion_matrix(d.majority, d.teacher, d.n_labels)
    pc = cls.per_class(cm)
    summ = cls.summary(cm)
    return Classification(
        n_items=int(cm.sum()),
        accuracy=est("accuracy"),
        micro_f1=est("micro_f1"),
        macro_f1=est("macro_f1"),
        weighted_f1=_none(summ["weighted_f1"]),
        design_weighted_accuracy=est("accuracy_design") if d.inclusion_prob is not None else None,
        per_class=[
            ClassMetrics(
                label=lab,
                precision=float(pc["precision"][i]),
                recall=float(pc["recall"][i]),
                f1=float(pc["f1"][i]),
                support=int(pc["support"][i]),
                predicted=int(pc["predicted"][i]),
            )
            for i, lab in enumerate(d.labels)
        ],
        confusion_matrix=ConfusionMatrix(labels=d.labels, matrix=cm.tolist()),
    )


def _agreement(d: AuditData, stats: _Stats, est: Est) -> Agreement:
    """Sections 2 and 3: teacher vs majority, humans among themselves, the teacher with (or for) each human."""
    k, w, t = d.n_labels, stats.w, d.teacher

    def pair(a: str, b: str, x: np.ndarray, y: np.ndarray) -> PairAgreement:
        both = int(((x >= 0) & (y >= 0)).sum())
        return PairAgreement(
            a=a,
            b=b,
            n_items=both,
            cohen_kappa=_none(ag.cohen_kappa(x, y, k, w)),
            percent_agreement=_none(ag.percent_agreement(x, y)),
        )

    names = d.annotators
    all_idx = np.arange(len(d.items))
    return Agreement(
        kappa_weights=w,
        teacher_vs_majority=TeacherVsMajority(
            n_items=int((d.majority >= 0).sum()),
            percent_agreement=est("tvm_pa"),
            cohen_kappa=est("tvm_kappa"),
            krippendorff_alpha=est("tvm_alpha"),
            gwet_ac1=est("tvm_ac1"),
        ),
        human_human=HumanHuman(
            fleiss_kappa=est("hh_fleiss"),
            krippendorff_alpha=est("hh_alpha"),
            gwet_ac1=est("hh_ac1"),
            mean_pairwise_cohen_kappa=est("hh_kappa"),
            mean_pairwise_percent_agreement=est("hh_pa"),
            pairs=[pair(names[a], names[b], d.H[:, a], d.H[:, b]) for a, b in stats.pairs],
        ),
        teacher_human=TeacherHuman(
            mean_cohen_kappa=est("th_kappa"),
            mean_percent_agreement=est("th_pa"),
            per_annotator=[pair("teacher", names[j], t, d.H[:, j]) for j in range(len(names))],
            with_teacher_added=GroupAgreement(
                fleiss_kappa=est("ht_fleiss"), krippendorff_alpha=est("ht_alpha"), gwet_ac1=est("ht_ac1")
            ),
            alpha_teacher_substituted=est("sub_alpha"),
            substituted=[
                SubstitutedAlpha(
                    annotator=names[j], krippendorff_alpha=_none(stats.alpha(stats.substituted(all_idx, j)))
                )
                for j in range(len(names))
            ],
        ),
    )


def _gate(point: dict[str, float], alt: AltTestResult, opts: AuditOptions) -> Gate:
    """The --gate-metric's value and whether it reaches --min-agreement (None when no minimum is given)."""
    gate_values = {
        "krippendorff_alpha": point["tvm_alpha"],
        "cohen_kappa": point["tvm_kappa"],
        "gwet_ac1": point["tvm_ac1"],
        "accuracy": point["accuracy"],
        "macro_f1": point["macro_f1"],
        "mean_cohen_kappa": point["th_kappa"],
        "alpha_substituted": point["sub_alpha"],
        "winning_rate": alt.winning_rate,
        "advantage_probability": alt.advantage_probability,
    }
    value = _none(gate_values[opts.gate_metric])
    passed = None if opts.min_agreement is None else (value is not None and value >= opts.min_agreement)
    return Gate(
        metric=opts.gate_metric,
        description=GATE_METRICS[opts.gate_metric],
        value=value,
        min_agreement=opts.min_agreement,
        passed=passed,
    )
