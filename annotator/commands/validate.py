"""`annotator validate PIPELINE.yaml`"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.panel import Panel
from rich.table import Table

from annotator.cache import typical_completion_tokens
from annotator.commands.output import JSON_HELP, SET_HELP, emit_json, jsonable, result_console
from annotator.config import PipelineConfig, load_config
from annotator.costs import Budget, RunEstimate, estimate_prompt_tokens
from annotator.engine import Pipeline
from annotator.inputs import check_ids, count_rows, iter_rows
from annotator.records import CACHE_FILE
from annotator.redact import redact


def validate_command(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file.", show_default=False),
    show_schema: bool = typer.Option(False, "--schema", help="Also print the JSON schema the teacher must follow."),
    estimate: bool = typer.Option(
        False, "--estimate",
        help="Render every prompt and estimate the run's tokens and cost (teacher.price) before any call.",
    ),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check a pipeline without calling the teacher: config, input file (columns, rows, every id present and
    unique), template (renders the first row's prompt, which is printed).

    --estimate streams every row through the template: prompt tokens are estimated as characters / 4 (no
    tokenizer), completion tokens as teacher.max_tokens per call (an upper bound) and, when the output directory
    holds earlier answers, as their mean (typical); calls = rows x teacher.samples (first attempts only)."""
    cfg = load_config(pipeline, overrides)
    runner = Pipeline(cfg)
    n = count_rows(cfg.input)
    check_ids(cfg.input)
    row, messages = runner.preview()
    run_estimate = _estimate(runner, cfg) if estimate else None
    if as_json:
        emit_json({
            **({"estimate": run_estimate.summary()} if run_estimate else {}),
            "ok": True, "pipeline": str(pipeline), "task": cfg.task.type, "rows": n, "backend": cfg.teacher.backend,
            "model": cfg.teacher.model, "output": str(cfg.output.dir), "template": runner.template.name,
            "overrides": cfg.overrides, "env_vars": cfg.env_vars, "first_row": row.id, "messages": messages,
            "config": jsonable(cfg), **({"schema": runner.schema} if show_schema else {}),
        })
        return
    console = result_console()
    console.print(redact(f"[green]ok[/] {pipeline}: task [bold]{cfg.task.type}[/], {n:,} input rows, "
                         f"teacher [bold]{cfg.teacher.backend}[/] {cfg.teacher.model or '(default model)'}, "
                         f"output {cfg.output.dir}"))
    for m in messages:
        console.print(Panel(redact(m["content"]), title=f"{m['role']} message for row {row.id!r}", expand=False))
    if show_schema:
        console.print_json(json.dumps(runner.schema))
    if run_estimate:
        console.print(_estimate_table(run_estimate, cfg))


def _estimate(runner: Pipeline, cfg: PipelineConfig) -> RunEstimate:
    """Tokens and cost of the whole run, from every rendered prompt (streamed)."""
    t = cfg.teacher
    est = RunEstimate(price=Budget.of(t).price, typical_completion=typical_completion_tokens(cfg.output.dir / CACHE_FILE))
    for row in iter_rows(cfg.input):
        messages = runner.prompt_of(row)
        if isinstance(messages, str):
            est.rows_skipped += 1
            continue
        est.add_prompt(estimate_prompt_tokens(messages), t.samples, t.max_tokens)
    return est


def _estimate_table(est: RunEstimate, cfg: PipelineConfig) -> Table:
    t = cfg.teacher
    max_cost = Budget.of(t).max_cost
    typical = est.completion_tokens_typical
    table = Table(title=f"estimate: {est.rows:,} rows x {t.samples} sample(s) = {est.calls:,} calls"
                        + (f" ({est.rows_skipped:,} rows not sendable)" if est.rows_skipped else ""),
                  show_header=False)
    table.add_row("prompt tokens", f"{est.prompt_tokens:,}", "rendered prompt characters / 4")
    table.add_row("completion tokens", f"<= {est.completion_tokens_max:,}", f"teacher.max_tokens={t.max_tokens} per call")
    if typical is not None and est.typical_completion is not None:
        per_call, n = est.typical_completion
        table.add_row("", f"~ {typical:,}", f"typical: {per_call:,.1f} per call over {n:,} earlier calls")
    if est.price is None:
        table.add_row("cost", "unknown", "set teacher.price (USD per 1M tokens) for a cost estimate")
    else:
        table.add_row("cost", f"<= ${est.cost_max or 0.0:,.4f}",
                      f"${est.price.input:g} input / ${est.price.output:g} output per 1M tokens")
        if est.cost_typical is not None:
            table.add_row("", f"~ ${est.cost_typical:,.4f}", "with the typical completion length")
        if max_cost is not None:
            table.add_row("budget", f"${max_cost:g}", "teacher.max_cost")
    return table


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
