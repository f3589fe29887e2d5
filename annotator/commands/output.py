"""One output convention for every command: results to stdout, progress and logs to stderr.

With ``--json`` a command prints one JSON document (its machine-readable summary) to stdout and nothing else
there; errors stay one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from annotator.progress import quiet
from annotator.redact import redact_data

JSON_HELP = "Print a machine-readable JSON summary to stdout instead of tables (logs and progress go to stderr)."
SET_HELP = (
    "Override a pipeline setting without editing the file, e.g. --set teacher.base_url=http://127.0.0.1:8000/v1 "
    "(repeatable; VALUE is parsed as YAML; validated like the file; recorded in run.json)."
)


def result_console() -> Console:
    """Where results go: stdout."""
    return Console()


def log_console() -> Console:
    """Where warnings and notes go: stderr (nothing with ``annotator --quiet``, :func:`annotator.progress.quiet`;
    progress bars: :class:`annotator.progress.ProgressDisplay`)."""
    return Console(stderr=True, quiet=quiet())


def jsonable(model: BaseModel) -> dict[str, Any]:
    """A model as strict-JSON-able data (pydantic's JSON mode: NaN and infinities become null)."""
    return json.loads(model.model_dump_json())


def emit_json(data: BaseModel | dict[str, Any]) -> None:
    """Write ``data`` as one strict JSON document to stdout (secrets redacted: :mod:`annotator.redact`)."""
    if isinstance(data, BaseModel):
        data = jsonable(data)
    data = redact_data(data)
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def fitted_table(
    console: Console, title: str, columns: list[str], rows: list[list[str]], left: tuple[str, ...] = ()
) -> RenderableType:
    """A table of ``rows`` under ``columns`` (right-aligned but for the ``left`` ones) as wide as its content when
    that fits the console, else one block per row (its first column and cell, then ``column  value`` lines), so no
    cell is cut (an 80-column terminal would shrink a name such as ``teacher-big`` to ``teach...``)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    for row in rows:
        table.add_row(*row)
    natural = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    if natural <= console.width:
        return table
    blocks: list[RenderableType] = [Text(title, style="italic", justify="center")]
    for row in rows:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        for col, cell in zip(columns[1:], row[1:]):
            grid.add_row(col, cell)
        blocks += [Text(f"{columns[0]} {row[0]}", style="bold"), grid]
    return Group(*blocks)
