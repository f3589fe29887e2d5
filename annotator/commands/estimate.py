"""`annotator estimate`: label shares of a corpus with valid confidence intervals (see ``annotator.estimate``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from annotator.commands.output import JSON_HELP, emit_json, log_console, result_console
from annotator.errors import InputDataError

if TYPE_CHECKING:
    from annotator.estimate.report import EstimateReport


def estimate_command(
    humans: Path = typer.Option(
        ...,
        "--humans",
        help="Human labels of a sample of the run's items: a sheet of `annotator sample` (its "
        "inclusion_prob column is the design), or any long/wide/item_id,label file or Label "
        "Studio export (then: a simple random sample).",
    ),
    teacher: list[Path] = typer.Option(
        ...,
        "--teacher",
        help="Run directory (or its annotations.jsonl, or an item_id,label table) whose labelled "
        "items are the population. Repeat to compare teachers side by side.",
    ),
    by: list[str] | None = typer.Option(
        None,
        "--by",
        help="Also estimate every slice of this column of the run's input file (e.g. language); "
        "repeat to cross columns (language x month).",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Output directory. Default: TEACHER_RUN/estimate (several teachers: "
        "FIRST_TEACHER/../estimate-comparison).",
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Comma-separated label set. Default: the run.json labels, else every label observed."
    ),
    min_slice_humans: int = typer.Option(
        30, "--min-slice-humans", help="--by: slices with fewer human items are listed as too small (not estimated)."
    ),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level of the intervals."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the forest plot (forest.png)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " (estimate.json)"),
) -> None:
    """What share of the corpus has each label? Teacher labels corrected by a human sample, with valid intervals.

    For every label: the teacher's raw share (biased by its errors), the corrected share with a confidence interval (valid whatever the teacher's errors), the share in the human sample alone with its interval, and the effective number of human labels (how many human labels a random sample would need, without the teacher, for the corrected precision).

    Method: with a random human sample, PPI++ (Angelopoulos, Duchi & Zrnic 2023); with the inclusion probabilities written by `annotator sample` (e.g. --strategy confidence, Confidence-Driven Inference, Gligoric et al. 2025), the design-based estimator (Egami et al. 2023) weighted by 1/inclusion_prob. Both tune how much the teacher's labels count (0 = humans only), so the corrected interval is never wider than the human-only one.

    The population is the run's items with an ok teacher label (failed rows are outside it); an item's human label is the majority of its ratings, a tie split evenly. Details, formulas and the measured coverage: docs/estimate.md.

    Writes OUT/estimate.json, OUT/estimate.md and OUT/forest.png.

    Typical flow: annotator sample runs/X --strategy confidence --n 400 --per-item 1 --annotators 2 --out sheets/ ; (humans fill sheets/sheet_long.csv) ; annotator estimate --humans sheets/sheet_long.csv --teacher runs/X --by language

    Exit codes: 0 ok, 2 bad input.
    """  # noqa: E501 - typer keeps line breaks in --help: one paragraph per line, rich wraps it
    from annotator.estimate.run import EstimateOptions, run_estimate

    first = teacher[0]
    base = first if first.is_dir() else first.parent
    if out is None:
        out = base / "estimate" if len(teacher) == 1 else base.parent / "estimate-comparison"
    label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels is not None else None
    if label_list == []:
        raise InputDataError(
            f"--labels {labels!r} names no label; give them comma-separated (e.g. --labels neg,pos) "
            "or leave --labels out (the run's labels)"
        )
    opts = EstimateOptions(
        humans=humans,
        teachers=list(teacher),
        out=out,
        labels=label_list,
        by=list(by) if by else None,
        min_slice_humans=min_slice_humans,
        confidence=confidence,
        plots=plots,
    )
    report = run_estimate(opts)
    logs = log_console()
    for t in report.teachers:
        for note in t.notes:
            logs.print(f"[yellow]note{f' ({t.name})' if len(report.teachers) > 1 else ''}:[/] {note}", soft_wrap=True)
    if as_json:
        emit_json(report)
    else:
        _print(report, out)


def _print(report: EstimateReport, out: Path) -> None:
    from annotator.audit.report import f, fe
    from annotator.estimate.report import MAX_LISTED

    console = result_console()
    ci = f"{int(round(report.confidence_level * 100))}% CI"
    for t in report.teachers:
        table = Table(title=f"{t.name}: {t.population:,} items, {t.human_items:,} human ({t.design})")
        for col in ("slice", "label", "teacher (raw)", f"corrected [{ci}]", f"humans only [{ci}]", "eff. humans"):
            table.add_column(col, justify="left" if col in ("slice", "label") else "right")
        small = [s for s in t.slices or [] if s.too_small]
        for s in [t.overall, *(t.slices or [])]:
            if s.too_small:
                continue
            for x in s.shares:
                n_eff = "n/a" if x.effective_human_labels is None else f"{x.effective_human_labels:,.0f}"
                table.add_row(s.slice, x.label, f(x.teacher_share), fe(x.corrected), fe(x.human_only), n_eff)
        for s in small[:MAX_LISTED]:
            table.add_row(s.slice, f"too small ({s.n_humans} human items)", "", "", "", "")
        if len(small) > MAX_LISTED:
            table.add_row(
                "...", f"{len(small) - MAX_LISTED:,} more slices too small (see estimate.json)", "", "", "", ""
            )
        console.print(table)
    console.print(
        f"Report: {out / 'estimate.md'}  (JSON: {out / 'estimate.json'}"
        + (f"; plot: {out / 'forest.png'})" if "forest_plot" in report.files else ")"),
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_command)
