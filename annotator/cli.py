"""The `annotator` command line. Each sub-command lives in ``annotator/commands/<name>.py``."""

from __future__ import annotations

import errno
import importlib
import logging
import sys

import typer
from rich.console import Console
from rich.markup import escape

from annotator import __version__
from annotator.backends import warn_skipped_plugins
from annotator.errors import AnnotatorError
from annotator.plugins import foreign_exit
from annotator.ray_support import optional_ray_value
from annotator.redact import redact

app = typer.Typer(
    name="annotator",
    help=(
        "Turn a teacher LLM into a data annotator.\n\n"
        "Typical flow:  annotator validate P.yaml  ->  annotator run P.yaml  ->  "
        "annotator audit --humans H.csv --teacher runs/X  ->  annotator export runs/X  ->  "
        "annotator train-student runs/X/dataset. A cascade of teachers (docs/cascade.md): annotator calibrate "
        "P.yaml --humans H.csv before annotator run"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = (
    "run",
    "validate",
    "audit",
    "export",
    "train_student",
    "deps",
    "sample",
    "predict",
    "estimate",
    "calibrate",
    "distill",
)
err_console = Console(stderr=True)
log = logging.getLogger(__name__)


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is when they are written (results keep stdout to themselves)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """The ``annotator`` logger's level: WARNING by default (the messages alone, on stderr, as Python prints
    them without any configuration), DEBUG with ``--verbose`` (``LEVEL logger: message``), ERROR with ``--quiet``.
    Idempotent: a second call replaces the first one's handler."""
    logger = logging.getLogger("annotator")
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler()
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log everything (DEBUG) to stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log errors only: no warnings or notes on stderr."),
) -> None:
    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet exclude each other", param_hint="-v/-q")
    configure_logging(verbose, quiet)
    warn_skipped_plugins()  # found at import, before the level above was set
    log.debug("annotator %s, Python %s, %s", __version__, sys.version.split()[0], sys.argv[0])


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
    except OSError as exc:  # the environment (a full disk, permissions) where no command caught it: one line
        err_console.print(f"[bold red]error:[/] {escape(redact(_os_line(exc)))}", soft_wrap=True)
        sys.exit(2)
    except SystemExit as exc:
        foreign = foreign_exit(exc)
        if foreign is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(foreign))}", soft_wrap=True)
        sys.exit(foreign.exit_code)


def _os_line(exc: OSError) -> str:
    from annotator.rundir import output_error

    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS):
        return str(
            output_error(
                exc, exc.filename or "a file", kept="the rerun finishes what is missing; nothing half-written is kept"
            )
        )
    return f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)


if __name__ == "__main__":
    main()
