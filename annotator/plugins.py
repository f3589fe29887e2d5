"""Entry-point plugins: the one loader behind task plugins (``annotator.tasks``) and backend plugins
(``annotator.backends``). A plugin that fails to load is skipped with one line naming it, so the others still work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from annotator.errors import ConfigError

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
