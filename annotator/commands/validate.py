"""`annotator validate PIPELINE.yaml`"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.panel import Panel
from rich.table import Table

from annotator.cache import typical_completion_tokens
from annotator.cascade.stages import stage_dir
from annotator.commands.output import JSON_HELP, SET_HELP, emit_json, jsonable, result_console
from annotator.config import BaseTeacherConfig, PipelineConfig, load_config
from annotator.costs import Budget, RunEstimate, estimate_prompt_tokens
from annotator.engine import Pipeline
from annotator.inputs import check_ids, count_rows, iter_rows
from annotator.records import CACHE_FILE
from annotator.redact import redact


def validate_command(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file.", show_default=False),
    show_schema: bool = typer.Option(False, "--schema", help="Also print the JSON schema the teacher must follow."),
    estimate: bool = typer.Option(
        False,
        "--estimate",
        help="Render every prompt and estimate the run's tokens and cost (teacher.price) before any call.",
    ),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check a pipeline without calling the teacher: config, input file (columns, rows, every id present and
    unique), template (renders the first row's prompt, which is printed).

    --estimate streams every row through the template: prompt tokens are estimated as characters / 4 (no
    tokenizer), completion tokens as teacher.max_tokens per call (an upper bound) and, when the output directory
    holds earlier answers, as their mean (typical); calls = rows x teacher.samples (first attempts only). A cascade:
    each stage on the share of rows it will be asked about, from the calibration's coverage on the human sample
    (without a calibration, every stage on every row: an upper bound), next to the last stage alone on every row."""
    cfg = load_config(pipeline, overrides)
    runner = Pipeline(cfg)
    n = count_rows(cfg.input)
    check_ids(cfg.input)
    row, messages = runner.preview()
    estimates = _estimates(runner, cfg) if estimate else None
    run_estimate = estimates[0] if estimates and cfg.cascade is None else None
    cascade_estimate = None
    if estimates and cfg.cascade is not None:
        from annotator.cascade.estimate import CascadeEstimate

        cascade_estimate = CascadeEstimate.of(cfg, estimates)
    if as_json:
        emit_json(
            {
                **({"estimate": run_estimate.summary()} if run_estimate else {}),
                **({"estimate": cascade_estimate.summary()} if cascade_estimate else {}),
                "ok": True,
                "pipeline": str(pipeline),
                "task": cfg.task.type,
                "rows": n,
                "backend": "cascade" if cfg.cascade else cfg.teacher.backend,
                "model": " > ".join(str(t.model) for _, t in cfg.stage_teachers())
                if cfg.cascade
                else cfg.teacher.model,
                "output": str(cfg.output.dir),
                "template": runner.template.name,
                "overrides": cfg.overrides,
                "env_vars": cfg.env_vars,
                "first_row": row.id,
                "messages": messages,
                "config": jsonable(cfg),
                **({"schema": runner.schema} if show_schema else {}),
            }
        )
        return
    console = result_console()
    teachers = ", ".join(f"[bold]{t.backend}[/] {t.model or '(default model)'}" for _, t in cfg.stage_teachers())
    console.print(
        redact(
            f"[green]ok[/] {pipeline}: task [bold]{cfg.task.type}[/], {n:,} input rows, "
            f"{'cascade of' if cfg.cascade else 'teacher'} {teachers}, output {cfg.output.dir}"
        )
    )
    for m in messages:
        console.print(Panel(redact(m["content"]), title=f"{m['role']} message for row {row.id!r}", expand=False))
    if show_schema:
        console.print_json(json.dumps(runner.schema))
    if run_estimate:
        console.print(_estimate_table(run_estimate, cfg.teacher))
    if cascade_estimate:
        cascade_estimate.print(console)


def _estimates(runner: Pipeline, cfg: PipelineConfig) -> list[RunEstimate]:
    """Tokens and cost of every row through each teacher of the pipeline (the teacher, or each cascade stage), from
    every rendered prompt (streamed once)."""
    teachers = [t for _, t in cfg.stage_teachers()]
    dirs = [stage_dir(cfg, k) for k in range(len(teachers))] if cfg.cascade else [Path(cfg.output.dir)]
    ests = [
        RunEstimate(price=Budget.of(t).price, typical_completion=typical_completion_tokens(d / CACHE_FILE))
        for t, d in zip(teachers, dirs)
    ]
    for row in iter_rows(cfg.input):
        messages = runner.prompt_of(row)
        if isinstance(messages, str):
            for est in ests:
                est.rows_skipped += 1
            continue
        tokens = estimate_prompt_tokens(messages)
        for est, t in zip(ests, teachers):
            est.add_prompt(tokens, t.samples, t.max_tokens)
    return ests


def _estimate_table(est: RunEstimate, t: BaseTeacherConfig) -> Table:
    max_cost = Budget.of(t).max_cost
    typical = est.completion_tokens_typical
    table = Table(
        title=f"estimate: {est.rows:,} rows x {t.samples} sample(s) = {est.calls:,} calls"
        + (f" ({est.rows_skipped:,} rows not sendable)" if est.rows_skipped else ""),
        show_header=False,
    )
    table.add_row("prompt tokens", f"{est.prompt_tokens:,}", "rendered prompt characters / 4")
    table.add_row(
        "completion tokens", f"<= {est.completion_tokens_max:,}", f"teacher.max_tokens={t.max_tokens} per call"
    )
    if typical is not None and est.typical_completion is not None:
        per_call, n = est.typical_completion
        table.add_row("", f"~ {typical:,}", f"typical: {per_call:,.1f} per call over {n:,} earlier calls")
    if est.price is None:
        table.add_row("cost", "unknown", "set teacher.price (USD per 1M tokens) for a cost estimate")
    else:
        table.add_row(
            "cost",
            f"<= ${est.cost_max or 0.0:,.4f}",
            f"${est.price.input:g} input / ${est.price.output:g} output per 1M tokens",
        )
        if est.cost_typical is not None:
            table.add_row("", f"~ ${est.cost_typical:,.4f}", "with the typical completion length")
        if max_cost is not None:
            table.add_row("budget", f"${max_cost:g}", "teacher.max_cost")
    return table


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
