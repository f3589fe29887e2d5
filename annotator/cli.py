"""The `annotator` command line. Each sub-command lives in ``annotator/commands/<name>.py``."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from annotator.errors import AnnotatorError
from annotator.ray_support import optional_ray_value
from annotator.redact import redact

app = typer.Typer(
    name="annotator",
    help=(
        "Turn a teacher LLM into a data annotator.\n\n"
        "Typical flow:  annotator validate P.yaml  ->  annotator run P.yaml  ->  "
        "annotator audit --humans H.csv --teacher runs/X  ->  annotator export runs/X  ->  "
        "annotator train-student runs/X/dataset"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = ("run", "validate", "audit", "export", "train_student", "deps", "sample", "predict")
err_console = Console(stderr=True)


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"annotator.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"annotator.commands.{name}":
                continue
            raise
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one red line and a non-zero exit code."""
    try:
        app(args=optional_ray_value(sys.argv[1:] if argv is None else argv), standalone_mode=True)
    except AnnotatorError as exc:
        err_console.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", soft_wrap=True)  # one line, verbatim
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: everything finished so far is saved; rerun to resume.")
        sys.exit(130)


if __name__ == "__main__":
    main()
