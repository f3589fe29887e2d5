"""`annotator run PIPELINE.yaml`"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from annotator.backends import RayConfig
from annotator.commands.output import JSON_HELP, SET_HELP, emit_json, jsonable, log_console, result_console
from annotator.config import PipelineConfig, load_config
from annotator.engine import Pipeline, RunStats
from annotator.errors import BudgetReached, ConfigError, TooManyFailures
from annotator.progress import ProgressDisplay
from annotator.records import ANNOTATIONS_FILE, MANIFEST_FILE, AnnotationRecord, RunManifest


def _progress_text(stats: RunStats) -> str:
    cost = f"  ${stats.cost_usd:,.4f}" if stats.cost_usd is not None else ""
    return (
        f"[green]{stats.rows_ok} ok[/] [red]{stats.rows_failed} failed[/]  "
        f"{stats.tokens:,} tok{cost}  {stats.rows_per_s:,.1f} rows/s  "
        f"calls {stats.teacher_calls:,} cached {stats.cache_hits:,}"
    )


def run_command(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file (see pipelines/).", show_default=False),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Ask the teacher again for rows that failed validation in an earlier run."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only annotate the first N rows (a quick trial)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="Spread the teacher over a Ray cluster: an address, or `--ray` alone for ray.init()'s default.",
    ),
    max_failed_fraction: float | None = typer.Option(
        None,
        "--max-failed-fraction",
        min=0.0,
        max=1.0,
        help="Exit 4 when more than this share of rows failed (default: validation.max_failed_fraction, 0.1).",
    ),
) -> None:
    """Annotate every input row with the teacher.

    Results are saved the moment they arrive (SQLite cache in the output directory): stop at any time (Ctrl-C,
    crash, kill) and run the same command again to resume; finished rows are never sent to the teacher again.
    A finished run re-run makes zero teacher calls. Rows whose output stays invalid after the configured attempts
    are recorded as failed with the raw output and the reason (see --retry-failed).

    With teacher.max_cost, no new teacher call starts once the output directory's spend plus the call's upper-bound
    cost would pass it: calls in flight finish and are saved, one line says so, and the exit code is 8. Raise
    teacher.max_cost and run the same command again to continue (saved answers cost nothing again).

    Outputs: OUTPUT_DIR/annotations.jsonl (one record per input row, input order) and OUTPUT_DIR/run.json.
    The summary goes to stdout (--json: run.json's content plus the output paths); progress goes to stderr.

    A cascade pipeline (a cascade section; see docs/cascade.md) needs its thresholds first (`annotator calibrate`):
    stage 1 labels every row, each later stage the rows the one before was unsure of, each in its own run directory
    (OUTPUT_DIR/stages/<name>); rows no stage keeps go to OUTPUT_DIR/human_queue (blank sheets) and stay out of
    annotations.jsonl, whose records carry their stage; OUTPUT_DIR/cascade/report.md compares the cost per stage
    with the strongest stage alone.

    Exit codes: 0 done; 2 a problem to fix (config, input, output.dir; a cascade without a calibration or with a
    stale one); 4 done, but more rows failed than --max-failed-fraction allows; 5 stopped early, the teacher (a
    cascade: the stage named) is unreachable (rerun to resume); 6 another process is using the output directory;
    7 run.json and annotations.jsonl disagree; 8 teacher.max_cost reached; 130 interrupted.
    """
    cfg = _configure(pipeline, overrides, limit, max_failed_fraction, ray)
    started = time.monotonic()
    if cfg.cascade is not None:
        manifest, stats = _run_cascade(cfg, retry_failed, quiet)
    else:
        progress = _RunProgress(cfg.name, quiet)
        runner = Pipeline(cfg, retry_failed=retry_failed, on_row=progress.on_row)
        runner.on_batch = progress.on_batch
        manifest = _run_until_done(runner.run(), progress.display, cfg.output.dir, lambda: runner.stats.rows_done)
        stats = runner.stats
    _print_summary(cfg.name, manifest, time.monotonic() - started, Path(cfg.output.dir), as_json)
    _report_failures(manifest, stats, cfg.validation.max_failed_fraction)


def _run_cascade(cfg: PipelineConfig, retry_failed: bool, quiet: bool) -> tuple[RunManifest, RunStats]:
    """A cascade pipeline (docs/cascade.md): its stages in turn, one progress bar each."""
    from annotator.cascade.runner import CascadeRun

    bars = StageBars(quiet)
    runner = CascadeRun(cfg, retry_failed=retry_failed, hook=bars)
    return _run_until_done(runner.run(), bars, cfg.output.dir, lambda: runner.stats.rows_done), runner.stats


def _configure(
    pipeline: Path, overrides: list[str], limit: int | None, max_failed_fraction: float | None, ray: str | None
) -> PipelineConfig:
    """The pipeline's config with the command-line options applied (they win over the file and --set)."""
    cfg = load_config(pipeline, overrides)
    if limit:
        cfg.input.limit = limit
    if max_failed_fraction is not None:
        cfg.validation.max_failed_fraction = max_failed_fraction
    if ray is not None and cfg.cascade is not None:
        raise ConfigError(
            "--ray: a cascade's stages each have their own teacher: set teacher.ray in the stages "
            "that should run on Ray"
        )
    if ray is not None:
        cfg.teacher.ray = RayConfig(
            **{**(cfg.teacher.ray.model_dump() if cfg.teacher.ray else {}), "address": None if ray == "local" else ray}
        )
    return cfg


class _RunProgress:
    """The run's progress on stderr (:class:`annotator.progress.ProgressDisplay`): rows, failures, tokens, rows/s."""

    def __init__(self, name: str, quiet: bool) -> None:
        self.display = ProgressDisplay(name, "rows", enabled=not quiet, info="loading teacher...")

    def on_row(self, record: AnnotationRecord, stats: RunStats) -> None:
        """After each row (the display redraws at most 5 times a second, and at the last row)."""
        self.display.update(stats.rows_done, stats.rows_total, _progress_text(stats))

    def on_batch(self, done: int, total: int, status: str) -> None:
        """While a Batch API job runs: its requests answered so far and its status."""
        self.display.update(done, total or None, f"Batch API: {status}", unit="requests", force=True)


class StageBars:
    """One progress bar per stage of a cascade (a :data:`annotator.cascade.stages.StageHook`): a stage's bar
    closes when the next stage starts, the last one when the run ends."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.current: _RunProgress | None = None

    def __call__(self, label: str, pipeline: Pipeline) -> None:
        self.stop()
        self.current = _RunProgress(label, self.quiet)
        self.current.display.start()
        pipeline.on_row, pipeline.on_batch = self.current.on_row, self.current.on_batch

    def stop(self) -> None:
        if self.current is not None:
            self.current.display.stop()
            self.current = None

    def __enter__(self) -> StageBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_until_done(
    run: Coroutine[Any, Any, RunManifest],
    progress: ProgressDisplay | StageBars,
    out_dir: Path,
    rows_done: Callable[[], int],
) -> RunManifest:
    """Run the pipeline; Ctrl-C exits 130 and a reached teacher.max_cost exits 8, each with one line (shown even
    with --quiet: it is why the run stopped)."""
    console = Console(stderr=True)
    with progress:
        try:
            return asyncio.run(run)
        except KeyboardInterrupt:
            progress.stop()
            console.print(
                f"[yellow]interrupted[/] after {rows_done()} rows; every finished answer is saved in "
                f"{out_dir}. Run the same command again to resume."
            )
            sys.exit(130)
        except BudgetReached as exc:
            progress.stop()
            console.print(f"[yellow]stopped[/] after {rows_done()} rows: {exc}")
            sys.exit(BudgetReached.exit_code)


def _print_summary(name: str, manifest: RunManifest, elapsed: float, out_dir: Path, as_json: bool) -> None:
    """The run's summary on stdout: a table, or (--json) run.json's content plus the output paths."""
    if as_json:
        emit_json(
            {
                "annotations": str(out_dir / ANNOTATIONS_FILE),
                "run_json": str(out_dir / MANIFEST_FILE),
                "elapsed_s": round(elapsed, 3),
                **jsonable(manifest),
            }
        )
    else:
        result_console().print(_summary_table(name, manifest, elapsed, out_dir))


_HINTS = {
    "transport": "the teacher call failed (connection, timeout, HTTP error): such failures are not cached, so "
    "check the teacher and run the same command again",
    "validation": "the teacher's answers stayed invalid: rerun with --retry-failed to ask again, or read 'raw' "
    "and 'error' to fix the prompt",
    "input": "the row could not be sent (empty or too long text, template error): fix those input rows",
}


def _report_failures(manifest: RunManifest, stats: RunStats, max_fraction: float) -> None:
    """One hint per failure kind; exit 4 (outputs are written) when the failed share is above ``max_fraction``."""
    if not manifest.rows_failed:
        return
    console = log_console()
    console.print(
        f"[yellow]{manifest.rows_failed} row(s) failed[/]; their reasons are in the 'error' field of annotations.jsonl."
    )
    for kind, n in sorted(stats.failed_by_kind.items()):
        console.print(f"  {n} row(s): {_HINTS[kind]}.")
    share = manifest.rows_failed / manifest.rows_total
    if share > max_fraction:
        raise TooManyFailures(
            f"{manifest.rows_failed} of {manifest.rows_total} rows failed ({share:.0%}), more than "
            f"validation.max_failed_fraction={max_fraction:g} allows (outputs are written; see the hints above)"
        )


def _summary_table(name: str, manifest: RunManifest, elapsed: float, out_dir: Path) -> Table:
    table = Table(title=f"{name}: done in {elapsed:.1f}s", show_header=False)
    table.add_row("rows", f"{manifest.rows_total:,}")
    table.add_row("annotated", f"[green]{manifest.rows_ok:,}[/]")
    table.add_row("failed", f"[red]{manifest.rows_failed:,}[/]" if manifest.rows_failed else "0")
    table.add_row("teacher calls", f"{manifest.teacher_calls:,}")
    table.add_row("cache hits", f"{manifest.cache_hits:,}")
    table.add_row("tokens", f"{manifest.tokens:,}")
    if manifest.cost_usd is not None or manifest.cost_total_usd is not None:
        table.add_row(
            "cost",
            f"${manifest.cost_usd or 0.0:,.4f} this run, "
            f"${manifest.cost_total_usd or 0.0:,.4f} in this output directory",
        )
    table.add_row("rows/s", f"{manifest.rows_total / elapsed:,.1f}" if elapsed > 0 else "-")
    table.add_row("teacher", manifest.model)
    if manifest.cascade is not None:
        for st in manifest.cascade.stages:
            at = "not asked (keeps nothing)" if st.threshold is None else f"confidence >= {st.threshold:.3g}"
            table.add_row(f"stage {st.name}", f"asked {st.rows_asked:,}, kept {st.rows_kept:,} ({at})")
        table.add_row(
            "left to humans", f"{manifest.cascade.rows_to_humans:,} (sheets in {manifest.cascade.human_queue})"
        )
        table.add_row("guarantee", manifest.cascade.statement)
    table.add_row("annotations", str(out_dir / ANNOTATIONS_FILE))
    table.add_row("manifest", str(out_dir / MANIFEST_FILE))
    return table


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
