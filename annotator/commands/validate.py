"""`annotator validate PIPELINE.yaml`"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.panel import Panel

from annotator.commands.output import JSON_HELP, SET_HELP, emit_json, jsonable, result_console
from annotator.config import load_config
from annotator.engine import Pipeline
from annotator.inputs import check_ids, count_rows


def validate_command(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file.", show_default=False),
    show_schema: bool = typer.Option(False, "--schema", help="Also print the JSON schema the teacher must follow."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check a pipeline without calling the teacher: config, input file (columns, rows, every id present and
    unique), template (renders the first row's prompt, which is printed)."""
    cfg = load_config(pipeline, overrides)
    runner = Pipeline(cfg)
    n = count_rows(cfg.input)
    check_ids(cfg.input)
    row, messages = runner.preview()
    if as_json:
        emit_json({
            "ok": True, "pipeline": str(pipeline), "task": cfg.task.type, "rows": n, "backend": cfg.teacher.backend,
            "model": cfg.teacher.model, "output": str(cfg.output.dir), "template": runner.template.name,
            "overrides": cfg.overrides, "env_vars": cfg.env_vars, "first_row": row.id, "messages": messages,
            "config": jsonable(cfg), **({"schema": runner.schema} if show_schema else {}),
        })
        return
    console = result_console()
    console.print(f"[green]ok[/] {pipeline}: task [bold]{cfg.task.type}[/], {n:,} input rows, "
                  f"teacher [bold]{cfg.teacher.backend}[/] {cfg.teacher.model or '(default model)'}, "
                  f"output {cfg.output.dir}")
    for m in messages:
        console.print(Panel(m["content"], title=f"{m['role']} message for row {row.id!r}", expand=False))
    if show_schema:
        console.print_json(json.dumps(runner.schema))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
