"""The audit report as Markdown (``report.md``), and the number formats every audit table shares."""

from __future__ import annotations

import math
from typing import Any

from annotator.audit.results import AuditReport, Estimate, Slices

MAX_PAIR_ROWS = 45


def f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def fe(e: Estimate | None) -> str:
    """An estimate and its interval in a table cell (``n/a`` when it is missing or undefined)."""
    if e is None or e.value is None:
        return "n/a"
    if e.ci_low is None or e.ci_high is None:
        return f(e.value)
    return f"{f(e.value)} [{f(e.ci_low)}, {f(e.ci_high)}]"


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def render_markdown(r: AuditReport) -> str:
    """report.md: the verdict and summary, then one section per part of the audit, then the method notes."""
    L = _md_summary(r) + _md_data(r) + _md_classification(r) + _md_chance_agreement(r)
    L += _md_teacher_vs_humans(r) + _md_alt_test(r) + _md_calibration(r) + _md_numeric(r)
    if r.slices is not None:
        L += _slices_markdown(r.slices, "agreement_by_slice" in r.files)
    return "\n".join(L + _md_method_notes(r))


def _ci(r: AuditReport) -> str:
    return f"{int(round(r.inputs.confidence_level * 100))}%"


def _md_summary(r: AuditReport) -> list[str]:
    """Title, alt-test verdict, gate, headline numbers and the categories where humans disagree."""
    ag = r.agreement
    L: list[str] = ["# Teacher-human agreement audit", ""]
    L += [f"**{r.alt_test_verdict}**", ""]
    g = r.gate
    if g.min_agreement is not None:
        state = "PASSED" if g.passed else "FAILED"
        L += [f"**Gate {state}:** {g.metric} = {f(g.value)} (minimum {g.min_agreement:g}; {g.description}).", ""]
    else:
        L += [f"Gate metric {g.metric} = {f(g.value)} ({g.description}); no `--min-agreement` given.", ""]
    tvm, hh = ag.teacher_vs_majority, ag.human_human
    L += [
        f"Teacher vs human majority: accuracy {fe(r.classification.accuracy)}, Krippendorff's alpha "
        f"{fe(tvm.krippendorff_alpha)}. Humans among themselves: alpha {fe(hh.krippendorff_alpha)}; with the "
        f"teacher in place of a human: alpha {fe(ag.teacher_human.alpha_teacher_substituted)}. "
        f"Brackets are {_ci(r)} bootstrap confidence intervals ({r.inputs.bootstrap} resamples of items).",
        "",
    ]
    if r.low_agreement_categories:
        L += [
            "**Categories where the humans themselves disagree** (category kappa < 0.4): "
            + ", ".join(f"`{c}`" for c in r.low_agreement_categories)
            + ". Teacher errors there are partly ambiguity in the guidelines, not only teacher mistakes.",
            "",
        ]
    return L


def _md_data(r: AuditReport) -> list[str]:
    """## Data: the inputs, coverage and the warnings."""
    inp, cov = r.inputs, r.coverage
    L = ["## Data", ""]
    L += markdown_table(
        ["", ""],
        [
            ["human file", f"`{inp.humans}` ({inp.humans_format} format)"],
            [
                "teacher",
                f"`{inp.teacher}` ({inp.teacher_source}"
                + (f", model `{inp.teacher_model}`)" if inp.teacher_model else ")"),
            ],
            ["annotators", ", ".join(f"{a} ({cov.ratings_per_annotator[a]})" for a in cov.annotators)],
            ["label set", f"{', '.join(inp.labels)} (from {inp.label_source}; level {inp.level})"],
            ["human items / ratings", f"{cov.human_items} / {cov.human_ratings}"],
            [
                "evaluated items",
                f"{cov.evaluated_items} (ratings per item {cov.min_ratings_per_item}-{cov.max_ratings_per_item})",
            ],
            [
                "teacher items / failed",
                f"{cov.teacher_items} / {cov.teacher_failed} ({cov.teacher_failed_on_human_items} on "
                f"human items, excluded)",
            ],
            ["teacher-only items (no human label)", cov.teacher_only_items],
            *(
                [
                    [
                        "teacher cost",
                        f"${inp.teacher_cost_usd:,.4f} in all, ${inp.teacher_cost_per_item_usd:.6f} per item",
                    ]
                ]
                if inp.teacher_cost_usd is not None and inp.teacher_cost_per_item_usd is not None
                else []
            ),
            ["tied human majority (excluded from 1 and 5)", cov.tied_majority_items],
        ],
    )
    if r.warnings:
        L += ["Warnings:", ""] + [f"- {w}" for w in r.warnings] + [""]
    return L


def _md_classification(r: AuditReport) -> list[str]:
    """## 1: accuracy, F1 and the coefficients vs the human majority, per-class scores, confusion matrix."""
    c, ag, inp = r.classification, r.agreement, r.inputs
    tvm = ag.teacher_vs_majority
    L = ["## 1. Teacher vs human majority", "", f"{c.n_items} items with a majority label.", ""]
    if c.design_weighted_accuracy is not None:
        L += [
            "The human sheet records its sampling design (`inclusion_prob`): the design-corrected accuracy weights "
            "each item by 1/inclusion_prob (Hajek estimator) and estimates the accuracy over the whole run; the "
            "other numbers describe the sampled items as they are.",
            "",
        ]
    L += markdown_table(
        ["metric", f"value [{_ci(r)} CI]"],
        [
            ["accuracy", fe(c.accuracy)],
            *(
                [["accuracy, design-corrected (weights 1/inclusion_prob)", fe(c.design_weighted_accuracy)]]
                if c.design_weighted_accuracy is not None
                else []
            ),
            ["micro F1", fe(c.micro_f1)],
            ["macro F1", fe(c.macro_f1)],
            ["weighted F1", f(c.weighted_f1)],
            ["Cohen's kappa" + (f" ({ag.kappa_weights} weights)" if ag.kappa_weights else ""), fe(tvm.cohen_kappa)],
            [f"Krippendorff's alpha ({inp.level})", fe(tvm.krippendorff_alpha)],
            ["Gwet's AC1", fe(tvm.gwet_ac1)],
        ],
    )
    L += markdown_table(
        ["label", "precision", "recall", "F1", "support", "predicted"],
        [[f"`{p.label}`", f(p.precision), f(p.recall), f(p.f1), p.support, p.predicted] for p in c.per_class],
    )
    L += ["Confusion matrix (rows: human majority, columns: teacher):", ""]
    cm = c.confusion_matrix
    L += markdown_table(
        [""] + [f"`{x}`" for x in cm.labels], [[f"`{x}`"] + row for x, row in zip(cm.labels, cm.matrix)]
    )
    if "confusion_matrix" in r.files:
        L += ["![confusion matrix](confusion_matrix.png)", ""]
    return L


def _md_chance_agreement(r: AuditReport) -> list[str]:
    """## 2: chance-corrected coefficients (humans, humans + teacher, teacher vs majority) and every pair."""
    ag, inp = r.agreement, r.inputs
    tvm, hh, th = ag.teacher_vs_majority, ag.human_human, ag.teacher_human
    L = ["## 2. Chance-corrected agreement", ""]
    L += markdown_table(
        ["coefficient", "humans only", "humans + teacher", "teacher vs majority"],
        [
            ["Fleiss' kappa", fe(hh.fleiss_kappa), fe(th.with_teacher_added.fleiss_kappa), "-"],
            [
                f"Krippendorff's alpha ({inp.level})",
                fe(hh.krippendorff_alpha),
                fe(th.with_teacher_added.krippendorff_alpha),
                fe(tvm.krippendorff_alpha),
            ],
            ["Gwet's AC1", fe(hh.gwet_ac1), fe(th.with_teacher_added.gwet_ac1), fe(tvm.gwet_ac1)],
            ["Cohen's kappa (mean over pairs)", fe(hh.mean_pairwise_cohen_kappa), "-", fe(tvm.cohen_kappa)],
        ],
    )
    shown = [p for p in hh.pairs if p.n_items > 0]
    L += ["Pairwise Cohen's kappa (means above use the pairs sharing at least 2 items):", ""]
    L += markdown_table(
        ["rater A", "rater B", "items", "kappa", "agreement"],
        [
            [p.a, p.b, p.n_items, f(p.cohen_kappa), f(p.percent_agreement)]
            for p in shown[:MAX_PAIR_ROWS] + th.per_annotator
        ],
    )
    if len(shown) > MAX_PAIR_ROWS:
        L += [f"({len(shown) - MAX_PAIR_ROWS} more human pairs in report.json.)", ""]
    return L


def _md_teacher_vs_humans(r: AuditReport) -> list[str]:
    """## 3: teacher-human next to human-human agreement, overall and per category."""
    hh, th = r.agreement.human_human, r.agreement.teacher_human
    L = ["## 3. Teacher-human vs human-human agreement", ""]
    L += markdown_table(
        ["", "human-human", "teacher-human"],
        [
            ["mean pairwise Cohen's kappa", fe(hh.mean_pairwise_cohen_kappa), fe(th.mean_cohen_kappa)],
            ["mean pairwise % agreement", fe(hh.mean_pairwise_percent_agreement), fe(th.mean_percent_agreement)],
            [
                "Krippendorff's alpha (humans / teacher substituted for one human)",
                fe(hh.krippendorff_alpha),
                fe(th.alpha_teacher_substituted),
            ],
        ],
    )
    if th.substituted:
        L += [
            "Alpha with the teacher substituted for: "
            + ", ".join(f"{s.annotator} {f(s.krippendorff_alpha)}" for s in th.substituted)
            + ".",
            "",
        ]
    L += [
        "Per category (rows with **LOW** are categories where humans disagree: category kappa < 0.4). "
        "*Items* = items whose human majority is the label; *specific agreement* = of the ratings of that label, "
        "the share matched by the other rater of a pair.",
        "",
    ]
    L += markdown_table(
        [
            "label",
            "items",
            "human-human pairs agree",
            "teacher-human pairs agree",
            "teacher acc.",
            "human specific agr.",
            "teacher specific agr.",
            "human category kappa",
            "flag",
        ],
        [
            [
                f"`{k.label}`",
                k.n_majority_items,
                f(k.human_pair_agreement),
                f(k.teacher_human_agreement),
                f(k.teacher_accuracy),
                f(k.human_specific_agreement),
                f(k.teacher_specific_agreement),
                f(k.human_category_kappa),
                "**LOW**" if k.low_human_agreement else "",
            ]
            for k in r.per_category
        ],
    )
    if "per_class_agreement" in r.files:
        L += ["![per-class agreement](per_class_agreement.png)", ""]
    return L


def _md_alt_test(r: AuditReport) -> list[str]:
    """## 4: the Alternative Annotator Test, per annotator, with its exclusions and warnings."""
    a = r.alt_test
    L = ["## 4. Alternative Annotator Test (Calderon, Reichart & Dror, ACL 2025)", "", f"**{r.alt_test_verdict}**", ""]
    L += [
        f"Leave-one-annotator-out: for each human, on the items they labelled, is the teacher at least as aligned "
        f"with the remaining humans as that human is (alignment = {a.scoring})? One-sided t-test of "
        f"H0: rho_teacher <= rho_human - epsilon (epsilon = {a.epsilon:g}), Benjamini-Yekutieli correction at "
        f"{a.alpha:g}. The teacher passes when it wins against at least half of the annotators.",
        "",
    ]
    if a.ran:
        L += markdown_table(
            ["annotator", "items", "rho teacher", "rho human", "t", "p", "p (BY)", "teacher wins"],
            [
                [
                    t.annotator,
                    t.n_items,
                    f(t.rho_teacher),
                    f(t.rho_human),
                    f(t.t_statistic, 2),
                    f(t.p_value, 4),
                    f(t.p_adjusted, 4),
                    ("yes" if t.teacher_wins else "no") if t.skipped is None else f"skipped: {t.skipped}",
                ]
                for t in a.annotators
            ],
        )
        L += [
            f"Winning rate omega = {f(a.winning_rate, 2)}; average advantage probability rho = "
            f"{f(a.advantage_probability, 3)} ({a.n_items} items).",
            "",
        ]
    L += [
        f"Annotators with fewer than {a.min_items} items (`--alt-test-min-items`) are excluded, as in the "
        "authors' reference implementation"
        + (f"; excluded: {', '.join(a.excluded)}." if a.excluded else "; none was."),
        "",
    ]
    L += [f"- {w}" for w in a.warnings]
    if a.warnings:
        L += [""]
    return L


def _md_calibration(r: AuditReport) -> list[str]:
    """## 5: the teacher's confidence against the human majority (ECE, bins, accuracy kept per threshold)."""
    cal = r.calibration
    L = ["## 5. Calibration of the teacher's confidence", ""]
    if not cal.available:
        return L + [f"Skipped: {cal.reason}.", ""]
    L += [
        f"Against the human majority label on {cal.n} items: ECE = {f(cal.ece)}, mean confidence "
        f"{f(cal.mean_confidence)}, accuracy {f(cal.accuracy)}." + (f" Note: {cal.reason}." if cal.reason else ""),
        "",
    ]
    L += markdown_table(
        ["confidence bin", "items", "mean confidence", "accuracy"],
        [[f"({b.low:.1f}, {b.high:.1f}]", b.n, f(b.confidence), f(b.accuracy)] for b in cal.bins if b.n],
    )
    L += ["Accuracy kept at each confidence threshold:", ""]
    L += markdown_table(
        ["keep confidence >=", "items kept", "coverage", "accuracy"],
        [[f"{t.threshold:g}", t.kept, f(t.coverage), f(t.accuracy)] for t in cal.thresholds],
    )
    if "calibration" in r.files:
        L += ["![calibration](calibration.png)", ""]
    return L


def _md_numeric(r: AuditReport) -> list[str]:
    """## Numeric ratings (--level interval): the teacher's error against the human mean."""
    n = r.numeric
    if n is None:
        return []
    return ["## Numeric ratings", ""] + markdown_table(
        ["", "value"],
        [
            ["teacher MAE vs human mean", f(n.teacher_mae)],
            ["teacher RMSE vs human mean", f(n.teacher_rmse)],
            ["teacher Pearson r vs human mean", f(n.teacher_pearson)],
            ["human MAE vs mean of the other humans", f(n.human_loo_mae)],
        ],
    )


def _md_method_notes(r: AuditReport) -> list[str]:
    """## Method notes: majority rule, coefficients and the bootstrap."""
    inp, weights = r.inputs, r.agreement.kappa_weights
    return [
        "## Method notes",
        "",
        "- Majority label: the most frequent human label of an item; items with a tied vote have no majority.",
        "- Cohen's kappa per pair on the items both labelled"
        + (f", {weights} weights on the label order" if weights else "")
        + "; Fleiss' kappa and Gwet's AC1 allow a varying number of raters per item (Gwet 2014); "
        "AC1 is nominal and uses the size of the label set. Krippendorff's alpha uses the coincidence matrix "
        f"at the {inp.level} level (Krippendorff 2011).",
        f"- Confidence intervals: {_ci(r)} percentile bootstrap, {inp.bootstrap} resamples of items, seed {inp.seed}.",
        "",
    ]


def _slices_markdown(s: Slices, plot: bool) -> list[str]:
    """The per-slice table of ``audit --by COLUMN``."""
    L = [
        f"## Results by slice: `{s.column}`",
        "",
        f"Each slice is audited on its own (same metrics, bootstrap and alt-test as above); `{s.column}` read from "
        f"{s.source}. Slices with fewer than {s.min_slice_items} items (`--min-slice-items`) are "
        f"reported as too small.",
        "",
    ]
    rows = []
    for x in s.slices:
        if x.too_small:
            rows.append([x.value, x.n_items, x.n_annotators, "", "", "", "", "", "too small"])
            continue
        verdict = {True: "PASSED", False: "FAILED", None: "not run"}[x.alt_test_passed]
        rows.append(
            [
                x.value,
                x.n_items,
                x.n_annotators,
                fe(x.accuracy),
                fe(x.macro_f1),
                fe(x.teacher_vs_majority_alpha),
                fe(x.human_human_kappa),
                fe(x.teacher_human_kappa),
                verdict,
            ]
        )
    L += markdown_table(
        [
            "slice",
            "items",
            "annotators",
            "accuracy",
            "macro F1",
            "alpha teacher vs majority",
            "human-human kappa",
            "teacher-human kappa",
            "alt-test",
        ],
        rows,
    )
    if plot:
        L += ["![agreement by slice](agreement_by_slice.png)", ""]
    return L
