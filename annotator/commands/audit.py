"""`annotator audit`: teacher-human agreement audit (see ``annotator.audit`` for the details)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from annotator.choices import GateMetric, Level
from annotator.commands.output import JSON_HELP, emit_json, fitted_table, jsonable, log_console, result_console

if TYPE_CHECKING:
    from annotator.audit.compare import Comparison
    from annotator.audit.compute import AuditOptions
    from annotator.audit.results import AuditReport


def audit_command(
    humans: Path = typer.Option(
        ..., "--humans", help="Human annotations: CSV/JSONL/Parquet, long, wide or item_id,label (one annotator: gold)."
    ),
    teacher: list[Path] = typer.Option(
        ...,
        "--teacher",
        help="Run directory, its annotations.jsonl, or a table (item_id|id, label[, confidence]). "
        "Repeat to compare teachers.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Output directory. Default: TEACHER_RUN/audit (several teachers: FIRST_TEACHER/../audit-comparison).",
    ),
    labels: str | None = typer.Option(
        None,
        "--labels",
        help="Comma-separated label set (and scale order for --level ordinal). Default: the run.json "
        "labels, else all observed labels.",
    ),
    level: Level = typer.Option(
        Level.nominal,
        "--level",
        case_sensitive=False,
        help="Measurement level of the labels. ordinal: the --labels order is the scale; interval: "
        "numeric ratings (it also switches the alt-test scoring to negative RMSE).",
    ),
    min_agreement: float | None = typer.Option(
        None, "--min-agreement", help="Exit with code 3 when the gate metric is below this value."
    ),
    gate_metric: GateMetric = typer.Option(
        GateMetric.krippendorff_alpha,
        "--gate-metric",
        case_sensitive=False,
        help="The statistic --min-agreement gates on: krippendorff_alpha, cohen_kappa, gwet_ac1, "
        "accuracy and macro_f1 are the teacher vs the human majority (alpha at --level); "
        "mean_cohen_kappa: the teacher with each human; alpha_substituted: the teacher in place "
        "of a human; winning_rate, advantage_probability: the alt-test.",
    ),
    epsilon: float = typer.Option(
        0.2,
        "--epsilon",
        help="Alt-test cost-benefit allowance: 0.2 expert annotators, 0.15 skilled, 0.1 crowd workers.",
    ),
    alpha: float = typer.Option(
        0.05, "--alpha", help="Significance level of the alt-test (BY-corrected); the confidence intervals are 1-alpha."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", help="Bootstrap resamples of items for the confidence intervals (0 = none)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the bootstrap."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    alt_test_min_items: int = typer.Option(
        30,
        "--alt-test-min-items",
        help="Alt-test: annotators with fewer items (shared with another annotator and the teacher) "
        "are excluded, as in the reference implementation.",
    ),
    by: str | None = typer.Option(
        None,
        "--by",
        help="Also audit each slice of this column (e.g. language), read from the humans file, else "
        "from the run's input file: report.md 'Results by slice', report.json 'slices', "
        "agreement_by_slice.png.",
    ),
    min_slice_items: int = typer.Option(
        20, "--min-slice-items", help="--by: slices with fewer evaluated items are reported as too small (no metrics)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help=JSON_HELP + " (report.json; with several teachers the comparison)"
    ),
) -> None:
    """Can this teacher replace my human annotators? Compare the teacher's labels with human annotations.

    Writes OUT/report.json, OUT/report.md and PNG plots (confusion_matrix, per_class_agreement, calibration):

    1. teacher vs human majority: accuracy, macro/micro F1, per-class P/R/F1, confusion matrix;
    2. Cohen's and Fleiss' kappa, Krippendorff's alpha, Gwet's AC1, with bootstrap confidence intervals;
    3. teacher-human next to human-human agreement, overall and per category (categories where humans disagree are flagged);
    4. the Alternative Annotator Test (Calderon et al., ACL 2025), with a PASSED or FAILED verdict;
    5. calibration of the teacher's confidence (ECE, accuracy kept at each confidence threshold).

    HUMANS: long format (item_id or id, annotator, label) or wide format (item_id or id, plus one column per annotator), as CSV, JSONL or Parquet; empty cells are missing ratings.

    HUMANS may also be a Label Studio JSON export (tasks imported from `annotator sample`), and a sheet written by `annotator sample` read back as it is; when it records inclusion probabilities, the report adds the design-corrected accuracy.

    TEACHER: a run directory or its annotations.jsonl (failed rows are excluded and counted), or a table with item_id or id, label and optional confidence. Repeat --teacher to compare several teachers: each gets a full report in OUT/<name>/ and OUT/comparison.md puts them side by side (with several teachers, --min-agreement exits 3 when no teacher passes the gate).

    Exit codes: 0 ok, 2 bad input, 3 the --min-agreement gate failed (the report is still written).
    """  # noqa: E501 - typer keeps line breaks in --help: one paragraph per line, rich wraps it
    from annotator.audit.compute import AuditOptions
    from annotator.audit.run_audit import check_gate, run_audit

    first = teacher[0]
    base = first if first.is_dir() else first.parent
    if out is None:
        out = base / "audit" if len(teacher) == 1 else base.parent / "audit-comparison"
    label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    opts = AuditOptions(
        humans=humans,
        teacher=first,
        out=out,
        labels=label_list,
        level=level.value,
        epsilon=epsilon,
        alpha=alpha,
        bootstrap=bootstrap,
        seed=seed,
        min_agreement=min_agreement,
        gate_metric=gate_metric.value,
        plots=plots,
        alt_test_min_items=alt_test_min_items,
        by=by,
        min_slice_items=min_slice_items,
    )
    if len(teacher) > 1:
        _compare(opts, teacher, out, as_json)
        return
    report = run_audit(opts)
    logs = log_console()
    for w in report.warnings + report.alt_test.warnings:
        logs.print(f"[yellow]warning:[/] {w}")
    if report.low_agreement_categories:
        logs.print("[yellow]humans disagree on:[/] " + ", ".join(report.low_agreement_categories))
    if as_json:
        emit_json(report)
    else:
        _print_report(report, out)
    check_gate(report)


def _print_report(report: AuditReport, out: Path) -> None:
    from annotator.audit.report import f, fe

    console = result_console()
    ag, cov = report.agreement, report.coverage
    hh, th, tvm = ag.human_human, ag.teacher_human, ag.teacher_vs_majority
    ci = f"{int(round(report.inputs.confidence_level * 100))}% CI"
    table = Table(
        title=f"Teacher-human agreement ({cov.evaluated_items} items, {len(cov.annotators)} annotators; [{ci}])"
    )
    table.add_column("metric")
    table.add_column("human-human", justify="right")
    table.add_column("teacher-human", justify="right")
    table.add_row("accuracy vs majority", "", fe(report.classification.accuracy))
    if report.classification.design_weighted_accuracy is not None:
        table.add_row("accuracy, design-corrected", "", fe(report.classification.design_weighted_accuracy))
    table.add_row("macro F1 vs majority", "", fe(report.classification.macro_f1))
    table.add_row("mean pairwise Cohen's kappa", fe(hh.mean_pairwise_cohen_kappa), fe(th.mean_cohen_kappa))
    table.add_row("mean pairwise % agreement", fe(hh.mean_pairwise_percent_agreement), fe(th.mean_percent_agreement))
    table.add_row(
        f"Krippendorff's alpha ({report.inputs.level})",
        fe(hh.krippendorff_alpha),
        f"{fe(th.alpha_teacher_substituted)} (substituted)",
    )
    table.add_row("alpha teacher vs majority", "", fe(tvm.krippendorff_alpha))
    table.add_row("Fleiss' kappa (humans / + teacher)", fe(hh.fleiss_kappa), fe(th.with_teacher_added.fleiss_kappa))
    table.add_row("Gwet's AC1 (humans / + teacher)", fe(hh.gwet_ac1), fe(th.with_teacher_added.gwet_ac1))
    if report.calibration.available:
        table.add_row("calibration ECE", "", f(report.calibration.ece))
    console.print(table)
    colour = {True: "green", False: "red", None: "yellow"}[report.alt_test.passed]
    console.print(f"[bold {colour}]{report.alt_test_verdict}[/]")
    g = report.gate
    if g.min_agreement is not None:
        state = "[green]PASSED[/]" if g.passed else "[red]FAILED[/]"
        console.print(f"Gate {state}: {g.metric} = {f(g.value)} (min {g.min_agreement:g})")
    pngs = [Path(v).name for k, v in report.files.items() if v.endswith(".png")]
    console.print(
        f"Report: {out / 'report.md'}  (JSON: {out / 'report.json'}" + (f"; plots: {', '.join(pngs)})" if pngs else ")")
    )


def _compare(opts: AuditOptions, teachers: list[Path], out: Path, as_json: bool) -> None:
    """Several teachers: audit each, print the side-by-side table, gate = at least one teacher passes."""
    from annotator.audit.compare import compare_teachers
    from annotator.errors import GateFailed

    comparison, reports = compare_teachers(opts, teachers, out)
    logs = log_console()
    for s, r in zip(comparison.teachers, reports):
        for w in r.warnings + r.alt_test.warnings:
            logs.print(f"[yellow]warning ({s.name}):[/] {w}")
    for note in comparison.notes:
        logs.print(f"[yellow]note:[/] {note}")
    if as_json:
        emit_json({"comparison": jsonable(comparison), "reports": [jsonable(r) for r in reports]})
    else:
        _print_comparison(comparison, out, opts.alpha)
    if opts.min_agreement is not None and not any(s.gate_passed for s in comparison.teachers):
        raise GateFailed(
            f"audit gate failed for every teacher: {opts.gate_metric} < --min-agreement {opts.min_agreement:g}"
        )


def _print_comparison(comparison: Comparison, out: Path, alpha: float) -> None:
    from annotator.audit.compare import COMPARISON_MD, alt_test_cell
    from annotator.audit.report import f, fe

    console = result_console()
    title = f"Teachers vs {len(comparison.annotators)} human annotators ({int(round((1 - alpha) * 100))}% CI)"
    columns = [
        "teacher",
        "items",
        "accuracy",
        "alpha vs majority",
        "winning rate",
        "advantage prob.",
        "alt-test",
        "tokens/item",
    ]
    rows = [
        [
            s.name,
            str(s.evaluated_items),
            fe(s.accuracy),
            fe(s.alpha_vs_majority),
            f(s.winning_rate, 2),
            f(s.advantage_probability, 3),
            alt_test_cell(s),
            f(s.tokens_per_item, 1),
        ]
        for s in comparison.teachers
    ]
    console.print(fitted_table(console, title, columns, rows, left=("teacher",)))
    console.print(f"[bold]Pass the alt-test:[/] {', '.join(comparison.passing) or 'none'}")
    console.print(f"Comparison: {out / COMPARISON_MD}  (per-teacher reports in {out}/<teacher>/)")


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_command)
