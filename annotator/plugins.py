"""Entry-point plugins: the one loader behind task plugins (``annotator.tasks``) and backend plugins
(``annotator.backends``). A plugin that fails to load is skipped with one line naming it, so the others still work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from annotator.errors import AnnotatorError, ConfigError

log = logging.getLogger(__name__)


def load_plugins(group: str, kind: str, accept: Callable[[str, object], None]) -> dict[str, str]:
    """Import every entry point of ``group`` and hand it to ``accept(name, obj)``, which registers it or raises
    :class:`ConfigError` saying why it cannot be a ``kind``. Returns the skipped plugins: name -> the line saying
    why (``<kind> plugin <name> = <value> (entry point group <group>) skipped: <why>``)."""
    skipped: dict[str, str] = {}
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
        except SystemExit as exc:  # a plugin may not end the process: it would exit 0 with nothing done
            why = f"it called sys.exit({exc.code!r}) while being imported"
        except Exception as exc:  # noqa: BLE001 - a broken plugin: one line naming it, the others still work
            why = f"it failed to import: {type(exc).__name__}: {exc}"
        else:
            try:
                accept(ep.name, obj)
            except ConfigError as exc:
                why = str(exc)
            except Exception as exc:  # noqa: BLE001 - not the kind of object the group holds
                why = f"it is not a {kind} ({type(exc).__name__}: {exc})"
            else:
                log.debug("%s %s loaded from %s", kind, ep.name, ep.value)
                continue
        skipped[ep.name] = f"{kind} plugin {ep.name} = {ep.value} (entry point group {group}) skipped: {why}"
    return skipped


def foreign_exit(exc: SystemExit) -> AnnotatorError | None:
    """A ``SystemExit`` raised by a plugin's code (not annotator, click or typer) as the error it is: one line naming
    the module and line (exit 2: a plugin may not decide annotator's exit code). None for annotator's own exits."""
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", "?"))
    if module.split(".")[0] in ("annotator", "click", "typer"):
        return None
    return AnnotatorError(
        f"{module} (line {tb.tb_lineno}) called sys.exit({exc.code!r}): a plugin may not end "
        "annotator (exit codes must tell what annotator did); fix or uninstall it"
    )
