"""`annotator calibrate PIPELINE.yaml --humans FILE`: choose a cascade's thresholds on a human sample (see
``annotator.cascade``); `--draw N --out DIR` writes the blank sheets of such a sample."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from annotator.commands.output import JSON_HELP, SET_HELP, emit_json, jsonable, log_console, result_console

if TYPE_CHECKING:
    from annotator.cascade.calibration import CalibrationFile
    from annotator.config import PipelineConfig


def calibrate_command(
    pipeline: Path = typer.Argument(..., help="A pipeline YAML file with a cascade section.", show_default=False),
    humans: Path | None = typer.Option(
        None,
        "--humans",
        help="The filled human sample: a sheet from --draw or `annotator sample` (long, wide or "
        "Label Studio export; inclusion probabilities are honoured). Default: the sample of the "
        "pipeline's current calibration (to calibrate again after the pipeline changed).",
    ),
    draw: int | None = typer.Option(
        None,
        "--draw",
        min=1,
        help="Instead: write blank sheets for a random sample of N input rows to --out (no teacher call).",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="--draw: the folder for the sheets."),
    seed: int = typer.Option(0, "--seed", min=0, help="--draw: random seed (0 or more)."),
    annotators: int = typer.Option(3, "--annotators", help="--draw: number of annotators."),
    per_item: int = typer.Option(
        3, "--per-item", help="--draw: annotators per item (their majority is the reference)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " (the calibration, without its per-item data)"),
) -> None:
    """Choose the confidence threshold of every cascade stage so that the labels the cascade keeps agree with the
    human majority at cascade.target, with probability at least 1 - cascade.delta.

    Every stage answers the human sample's rows (in its own run directory, so `annotator run` reuses the answers).
    Then, stage by stage (each on the items no earlier stage kept), thresholds are tested from the most confident
    down with an exact binomial test at delta / number of stages, stopping at the first that fails (fixed-sequence
    testing, as in Trust or Escalate, Jung et al., ICLR 2025). Writes cascade.calibration (default
    OUTPUT_DIR/calibration.json), which `annotator run` reads, and OUTPUT_DIR/cascade/report.md|json +
    frontier.png. Assumption: the human sample is a random draw from the input (simple, or with the inclusion
    probabilities its sheet records). See docs/cascade.md.

    A human sample: `annotator calibrate P.yaml --draw 300 --out humans/` writes blank sheets (and Label Studio
    files) for a random sample of the input; any sheet from `annotator sample` of a run of the same input works too.
    Without --humans, the sample of the current calibration is used again (after a change to the pipeline: the
    answers already obtained are reused).

    Exit codes: 0 certified; 3 the target cannot be certified with this sample (the file is written: every row
    goes to humans; the message says how many human items would do); 2 bad input (no cascade, a sample that does
    not overlap the input, ...); 5 a stage's teacher is unreachable (rerun: answers so far are kept); 6 the output
    directory is in use; 8 a stage's teacher.max_cost is reached; 130 interrupted (rerun to resume).
    """
    from annotator.cascade.calibration import calibrate, draw_sample
    from annotator.cascade.stages import calibration_path, cascade_of
    from annotator.config import load_config
    from annotator.errors import GateFailed, InputDataError

    cfg = load_config(pipeline, overrides)
    cascade_of(cfg)
    if humans is not None and draw is not None:
        raise InputDataError(
            "give either --humans FILE (calibrate on a filled sample) or --draw N --out DIR (write "
            "the sheets of a new one), not both"
        )
    if humans is None and draw is None:
        humans = _current_sample(cfg)
    if draw is not None:
        if out is None:
            raise InputDataError("--draw needs --out DIR: the folder for the blank sheets")
        files, drawn = draw_sample(cfg, draw, out, seed, annotators, per_item)
        if as_json:
            emit_json({"files": files, "rows": drawn})
        else:
            result_console().print(
                f"sheets for {drawn} random input rows: {files['long']} (long), {files['wide']} "
                f"(wide), Label Studio {files['label_studio_tasks']}. Fill one, then: annotator "
                f"calibrate {pipeline} --humans {files['long']}",
                soft_wrap=True,
            )
        return
    assert humans is not None
    from annotator.cascade.report import REPORT_DIR, REPORT_MD, write_report
    from annotator.commands.run import StageBars

    report = Path(cfg.output.dir) / REPORT_DIR / REPORT_MD
    with StageBars(quiet) as bars:
        try:
            cal = asyncio.run(
                calibrate(cfg, humans, hook=bars, then=lambda c: write_report(report.parent, c, None, c.input_rows))
            )
        except KeyboardInterrupt:  # typer would exit 130 without a word
            bars.stop()
            Console(stderr=True).print(
                "[yellow]interrupted[/]: every answer obtained so far is saved in the stages' "
                "directories; run the same command again to resume (none is asked twice)."
            )
            sys.exit(130)
    if as_json:
        emit_json(
            {
                "calibration": str(calibration_path(cfg)),
                "report": str(report),
                **jsonable(cal.model_copy(update={"items": []})),
            }
        )
    else:
        _print(cal, calibration_path(cfg), report)
    if not cal.certified:
        raise GateFailed(cal.statement)


def _current_sample(cfg: PipelineConfig) -> Path:
    """The human sample the pipeline's calibration file names (to calibrate again on it, even when the file is
    stale or damaged), or a one-line error saying what to give."""
    import json

    from annotator.cascade.stages import calibration_path
    from annotator.errors import InputDataError

    path = calibration_path(cfg)
    try:
        recorded = json.loads(path.read_bytes()).get("humans") if path.is_file() else None
    except (OSError, ValueError, AttributeError, RecursionError):
        recorded = None
    if not isinstance(recorded, str) or not recorded:
        raise InputDataError(
            f"no calibration at {path} names a human sample: give --humans FILE (a filled human "
            "sample) or --draw N --out DIR (write the sheets of a new one)"
        )
    return Path(recorded)


def _print(cal: CalibrationFile, path: Path, report: Path) -> None:
    """The thresholds, what each stage keeps on the sample, and the guarantee."""
    table = Table(title=f"calibration on {cal.used} human items (target {cal.target!r}, delta {cal.delta!r})")
    for col in ("stage", "threshold", "asked", "kept", "agreement of kept (95% CI)"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in cal.stages:
        ci = f" [{s.agreement_ci[0]:.1%}, {s.agreement_ci[1]:.1%}]" if s.agreement_ci else ""
        table.add_row(
            s.name,
            "none (not asked)" if s.threshold is None else f"{s.threshold:.3g}",
            str(s.reached),
            f"{s.kept} ({s.coverage:.1%})",
            ("-" if s.agreement is None else f"{s.agreement:.1%}") + ci,
        )
    console = result_console()
    console.print(table)
    console.print(cal.statement, soft_wrap=True)
    console.print(f"thresholds: {path}; report: {report}", soft_wrap=True)
    skipped = cal.no_majority + cal.not_in_input + cal.not_sendable
    if skipped:
        log_console().print(
            f"[yellow]note:[/] {skipped} human item(s) left out ({cal.no_majority} without a majority, "
            f"{cal.not_in_input} not in the input, {cal.not_sendable} not sendable)"
        )


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
