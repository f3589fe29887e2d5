"""Several teachers in one audit: each teacher is audited against the same humans, then compared side by side.

``annotator audit --humans H --teacher runs/a --teacher runs/b`` writes one full audit per teacher in
``OUT/<teacher>/`` and a comparison (``OUT/comparison.json``, ``OUT/comparison.md``) in the spirit of the alt-test
paper's tables: accuracy and agreement with confidence intervals, the alt-test winning rate and average advantage
probability per teacher (the paper ranks candidate LLMs by the advantage probability), per-category accuracy,
tokens per item from each run's ``run.json``, and which teachers pass.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from annotator import __version__
from annotator.audit.compute import AuditOptions
from annotator.audit.report import f, fe, markdown_table
from annotator.audit.results import AuditReport, Comparison, TeacherSummary
from annotator.audit.run_audit import run_audit
from annotator.errors import InputDataError
from annotator.guard import check_distinct, check_folder, has_keys
from annotator.records import read_manifest
from annotator.rundir import atomic_write_files

log = logging.getLogger(__name__)

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"


def teacher_names(paths: list[Path]) -> list[str]:
    """A short unique name per teacher: the run directory's name (or the file's stem), numbered when repeated."""
    raw = [
        (p.name if p.is_dir() else (p.parent.name if p.name == "annotations.jsonl" else p.stem)) or "teacher"
        for p in paths
    ]
    out: list[str] = []
    for i, name in enumerate(raw):
        out.append(name if raw.count(name) == 1 else f"{name}-{raw[: i + 1].count(name)}")
    return out


def _tokens(path: Path) -> tuple[int | None, float | None]:
    """Tokens spent on a run's answers and per input row, from ``run.json`` (None for a plain table)."""
    if not (path.is_dir() or path.name == "annotations.jsonl"):
        return None, None
    try:
        manifest = read_manifest(path)
    except ValueError:
        return None, None
    if manifest is None or not manifest.rows_total:
        return None, None
    # the tokens behind the annotations, not the last invocation's (a cached rerun spends none)
    tokens = manifest.answers.tokens if manifest.answers is not None else manifest.tokens
    return tokens, tokens / manifest.rows_total


def summarise(name: str, path: Path, report: AuditReport, out: Path) -> TeacherSummary:
    c, ag, alt = report.classification, report.agreement, report.alt_test
    tokens, per_item = _tokens(path)
    return TeacherSummary(
        name=name,
        teacher=str(path),
        model=report.inputs.teacher_model,
        report_dir=str(out),
        evaluated_items=report.coverage.evaluated_items,
        accuracy=c.accuracy,
        design_weighted_accuracy=c.design_weighted_accuracy,
        macro_f1=c.macro_f1,
        cohen_kappa_vs_majority=ag.teacher_vs_majority.cohen_kappa,
        alpha_vs_majority=ag.teacher_vs_majority.krippendorff_alpha,
        alpha_teacher_substituted=ag.teacher_human.alpha_teacher_substituted,
        winning_rate=alt.winning_rate if alt.ran else None,
        advantage_probability=alt.advantage_probability if alt.ran else None,
        alt_test_passed=alt.passed,
        alt_test_weak=alt.weak,
        alt_test_verdict=report.alt_test_verdict,
        gate_passed=report.gate.passed,
        tokens=tokens,
        tokens_per_item=per_item,
        per_category_accuracy={k.label: k.teacher_accuracy for k in report.per_category},
    )


def compare_teachers(opts: AuditOptions, teachers: list[Path], out: Path) -> tuple[Comparison, list[AuditReport]]:
    """Audit every teacher (``out/<name>/``) and write ``comparison.json`` / ``comparison.md`` in ``out``."""
    if len(teachers) < 2:
        raise InputDataError("comparing teachers needs at least 2 --teacher values")
    names = teacher_names(teachers)
    check_distinct(
        "audit", {"--out": out}, {"--humans file": Path(opts.humans), **{f"--teacher {t}": t for t in teachers}}
    )
    check_folder(
        out,
        "audit",
        (COMPARISON_JSON, COMPARISON_MD, *names),
        COMPARISON_JSON,
        has_keys("teachers", "passing", "ranking"),
    )
    reports: list[AuditReport] = []
    summaries: list[TeacherSummary] = []
    for name, path in zip(names, teachers):
        log.info("auditing teacher %s (%s)", name, path)
        report = run_audit(replace(opts, teacher=path, out=out / name))
        reports.append(report)
        summaries.append(summarise(name, path, report, out / name))
    first = reports[0]
    notes = []
    counts = {s.name: s.evaluated_items for s in summaries}
    if len(set(counts.values())) > 1:
        notes.append(
            "the teachers are evaluated on different numbers of items (a teacher's failed rows are left out): "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
    ranked = sorted(summaries, key=lambda s: -(s.advantage_probability if s.advantage_probability is not None else -1))
    comparison = Comparison(
        annotator_version=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        humans=str(opts.humans),
        annotators=first.coverage.annotators,
        human_alpha=first.agreement.human_human.krippendorff_alpha,
        level=first.inputs.level,
        epsilon=opts.epsilon,
        alpha=opts.alpha,
        alt_test_min_items=opts.alt_test_min_items,
        gate_metric=opts.gate_metric,
        min_agreement=opts.min_agreement,
        teachers=summaries,
        passing=[s.name for s in summaries if s.alt_test_passed],
        ranking=[s.name for s in ranked if s.advantage_probability is not None],
        notes=notes,
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_files(
        {
            out / COMPARISON_MD: render_comparison(comparison),
            out / COMPARISON_JSON: comparison.model_dump_json(indent=2),
        }
    )
    return comparison, reports


def alt_test_cell(s: TeacherSummary) -> str:
    """The alt-test verdict of one teacher in a table cell."""
    if s.alt_test_passed is None:
        return "not run"
    return ("PASSED" if s.alt_test_passed else "FAILED") + (" (weak)" if s.alt_test_weak else "")


def render_comparison(c: Comparison) -> str:
    """The comparison as Markdown: headline table, per-category accuracy, verdicts."""
    ci = f"{int(round((1 - c.alpha) * 100))}%"
    passing = ", ".join(f"`{n}`" for n in c.passing) or "none"
    headline = (
        f"**Teachers that pass the Alternative Annotator Test: {passing}** (epsilon {c.epsilon:g}, "
        f"BY-corrected alpha {c.alpha:g}, annotators with fewer than {c.alt_test_min_items} items excluded)."
    )
    L = ["# Teacher comparison", "", headline, ""]
    if c.ranking:
        L += [
            "Ranked by average advantage probability (the alt-test paper's measure for comparing LLM annotators): "
            + " > ".join(f"`{n}`" for n in c.ranking)
            + ".",
            "",
        ]
    humans = (
        f"Humans: `{c.humans}`, {len(c.annotators)} annotators ({', '.join(c.annotators)}); Krippendorff's "
        f"alpha among them {fe(c.human_alpha)} ({c.level}). Brackets are {ci} bootstrap confidence intervals."
    )
    L += [humans, ""]
    with_design = any(s.design_weighted_accuracy is not None for s in c.teachers)
    header = (
        ["teacher", "model", "items", "accuracy"]
        + (["accuracy (design-corrected)"] if with_design else [])
        + [
            "macro F1",
            "kappa vs majority",
            "alpha vs majority",
            "alpha substituted",
            "winning rate",
            "advantage prob.",
            "alt-test",
            "tokens / item",
        ]
    )
    rows = []
    for s in c.teachers:
        rows.append(
            [f"`{s.name}`", s.model or "", s.evaluated_items, fe(s.accuracy)]
            + ([fe(s.design_weighted_accuracy) if s.design_weighted_accuracy else "n/a"] if with_design else [])
            + [
                fe(s.macro_f1),
                fe(s.cohen_kappa_vs_majority),
                fe(s.alpha_vs_majority),
                fe(s.alpha_teacher_substituted),
                f(s.winning_rate, 2),
                f(s.advantage_probability, 3),
                alt_test_cell(s),
                f(s.tokens_per_item, 1),
            ]
        )
    L += markdown_table(header, rows)
    labels = list(c.teachers[0].per_category_accuracy)
    L += ["Accuracy per category (items whose human majority is the label):", ""]
    L += markdown_table(
        ["label"] + [f"`{s.name}`" for s in c.teachers],
        [[f"`{lab}`"] + [f(s.per_category_accuracy.get(lab)) for s in c.teachers] for lab in labels],
    )
    if c.min_agreement is not None:
        L += [
            "Gate `"
            + c.gate_metric
            + f"` >= {c.min_agreement:g}: "
            + ", ".join(f"`{s.name}` {'passed' if s.gate_passed else 'failed'}" for s in c.teachers)
            + ".",
            "",
        ]
    if c.notes:
        L += ["Notes:", ""] + [f"- {n}" for n in c.notes] + [""]
    L += [
        "Full reports: " + ", ".join(f"[`{s.name}`]({s.name}/report.md)" for s in c.teachers) + ". Cost per item: "
        "multiply tokens per item by your provider's price per token (run.json records tokens, not prices).",
        "",
    ]
    return "\n".join(L)
