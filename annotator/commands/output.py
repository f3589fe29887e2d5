"""One output convention for every command: results to stdout, progress and logs to stderr.

With ``--json`` a command prints one JSON document (its machine-readable summary) to stdout and nothing else
there; errors stay one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from annotator.redact import redact_data

JSON_HELP = "Print a machine-readable JSON summary to stdout instead of tables (logs and progress go to stderr)."
SET_HELP = (
    "Override a pipeline setting without editing the file, e.g. --set teacher.base_url=http://127.0.0.1:8000/v1 "
    "(repeatable; VALUE is parsed as YAML; validated like the file; recorded in run.json)."
)


def result_console() -> Console:
    """Where results go: stdout."""
    return Console()


_quiet = False


def set_quiet(quiet: bool) -> None:
    """``annotator --quiet``: the consoles :func:`log_console` makes from now on print nothing."""
    global _quiet
    _quiet = quiet


def log_console() -> Console:
    """Where progress, warnings and notes go: stderr (nothing with ``annotator --quiet``)."""
    return Console(stderr=True, quiet=_quiet)


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
