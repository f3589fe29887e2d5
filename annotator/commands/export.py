"""`annotator export RUN_DIR`: annotations -> datasets.DatasetDict (Arrow + Parquet + dataset card)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from annotator.choices import ExportFormat
from annotator.commands.output import JSON_HELP, emit_json, log_console, result_console

if TYPE_CHECKING:
    from annotator.export.summary import ExportSummary


def export_command(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory written by `annotator run` (or its annotations.jsonl).")
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: RUN_DIR/dataset).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split (a hash of seed and item id decides each split).")] = 42,
    gold: Annotated[
        Path | None,
        typer.Option(help="Human gold labels (as for audit/train-student): stratify the splits on them."),
    ] = None,
    split: Annotated[str, typer.Option(help="Fractions train,validation,test (or train,test).")] = "0.8,0.1,0.1",
    stratify_by: Annotated[
        str | None,
        typer.Option(
            "--stratify-by",
            metavar="COLUMN",
            help="Split every slice of this input column (e.g. language) in the fractions (with --gold: "
            "every slice's gold-label mix).",
        ),
    ] = None,
    min_confidence: Annotated[
        float | None, typer.Option("--min-confidence", help="Drop label rows whose teacher confidence is below this.")
    ] = None,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            case_sensitive=False,
            help="Rows of the dataset (auto: classification for label tasks, chat for rephrase/qa).",
        ),
    ] = ExportFormat.auto,
    push_to_hub: Annotated[
        str | None,
        typer.Option("--push-to-hub", metavar="REPO", help="Also push to the Hugging Face Hub (needs a login)."),
    ] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="Visibility of a pushed dataset.")] = True,
    route_below: Annotated[
        float | None,
        typer.Option(
            "--route-below",
            help="Keep label rows under this teacher confidence out of the dataset and write them to a "
            "sheet for humans.",
        ),
    ] = None,
    route_out: Annotated[
        Path | None,
        typer.Option("--route-out", help="Folder of that sheet (default RUN_DIR/routed; refuses to overwrite sheets)."),
    ] = None,
    route_annotators: Annotated[
        int,
        typer.Option("--route-annotators", help="Annotators on the routed sheet (each item gets min(K, 3) of them)."),
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Export a run's annotations as a Hugging Face dataset (splits by item id, same for every teacher) with a card."""
    from annotator.export import ExportOptions, export_run

    summary = export_run(
        run_dir,
        ExportOptions(
            out=out,
            seed=seed,
            split=split,
            min_confidence=min_confidence,
            fmt=fmt.value,
            push_to_hub=push_to_hub,
            private=private,
            gold=gold,
            stratify_by=stratify_by,
            route_below=route_below,
            route_out=route_out,
            route_annotators=route_annotators,
        ),
    )
    logs = log_console()
    for note in summary.notes:
        logs.print(f"[yellow]note:[/] {note}")
    if as_json:
        emit_json(summary)
    else:
        _print_summary(summary)


def _print_summary(summary: ExportSummary) -> None:
    """Rows per split, what was left out and where the dataset is."""
    console = result_console()
    c = summary.counts
    console.print(f"[bold]{summary.task}[/] task exported as [bold]{summary.format}[/] rows")
    table = Table(show_header=True)
    table.add_column("split")
    table.add_column("rows", justify="right")
    if summary.format != "classification":  # one row per input row in classification exports
        table.add_column("input rows", justify="right")
    for s, n in c.per_split.items():
        cells = [s, str(n)]
        if summary.format != "classification":  # one row per input row in classification exports
            cells.append(str(c.per_split_items.get(s, 0)))
        table.add_row(*cells)
    console.print(table)
    excluded = [
        f"{c.failed_excluded} failed",
        f"{c.below_threshold_excluded} below confidence",
        f"{c.invalid_label_excluded} without a valid label",
    ]
    if c.empty_output_excluded:
        excluded.append(f"{c.empty_output_excluded} empty")
    if summary.routed_sheet:
        excluded.append(f"{c.routed_to_humans} routed to humans")
    console.print(f"{c.total} annotated rows -> {c.exported_items} exported; excluded: {', '.join(excluded)}")
    if summary.routed_sheet:
        console.print(
            f"items for humans (confidence < {summary.route_below:g}): {summary.routed_sheet}", soft_wrap=True
        )
    console.print(f"dataset: [bold]{summary.out}[/] (load_from_disk, parquet/, README.md, export.json)", soft_wrap=True)
    if summary.pushed_to:
        console.print(f"pushed to the Hub: {summary.pushed_to}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
