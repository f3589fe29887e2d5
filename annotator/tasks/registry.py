"""The task registry: task name -> task class.

Built-in tasks register themselves when :mod:`annotator.tasks` is imported. A task shipped in another package
registers through the ``annotator.tasks`` entry-point group (``name = "package.module:TaskClass"`` in its
``pyproject.toml``); those are loaded the first time the registry is consulted.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, TypeVar, cast

from annotator.errors import ConfigError
from annotator.plugins import load_plugins

if TYPE_CHECKING:
    from annotator.tasks.base import Task, TaskConfigBase

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "annotator.tasks"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_REQUIRED = ("config_model", "default_template", "aggregates_samples", "hub_category", "exporter")

_tasks: dict[str, type[Task]] = {}
_plugins_loaded = False

T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: register a task class under its ``name``. Registering another class under a taken name
    is an error; registering the same class again is a no-op."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"task class {cls.__qualname__}: name {name!r} must be lower-case letters, digits and _")
    missing = [attr for attr in _REQUIRED if not hasattr(cls, attr)]
    if missing:
        raise ConfigError(f"task class {cls.__qualname__} ({name}) does not declare {', '.join(missing)}")
    config_type = cls.config_model.model_fields.get("type")  # type: ignore[attr-defined]
    if config_type is None or getattr(config_type.annotation, "__args__", None) != (name,):
        raise ConfigError(f"task {name}: {cls.config_model.__name__}.type must be Literal[{name!r}]")  # type: ignore[attr-defined]
    other = _tasks.get(name)
    if other is not None and other is not cls:
        raise ConfigError(
            f"task {name!r} is registered twice: by {other.__module__}.{other.__qualname__} and by "
            f"{cls.__module__}.{cls.__qualname__} (give one of them another name)"
        )
    _tasks[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a task (tests that register throwaway tasks clean up with this)."""
    _tasks.pop(name, None)


SKIPPED: dict[str, str] = {}
"""Task plugins that failed to load: entry-point name -> the warning line saying why."""


def _accept(name: str, cls: object) -> None:
    """Register a plugin's task class under its entry-point ``name``; :class:`ConfigError` saying why it cannot."""
    if getattr(cls, "name", None) != name:
        raise ConfigError(f"the class's name is {getattr(cls, 'name', None)!r}, not {name!r}")
    register(cast(type, cls))


def _load_plugins() -> None:
    """Import the tasks of installed packages (entry-point group ``annotator.tasks``), once. A plugin that fails to
    load is skipped with one warning line naming it (as a broken backend plugin is), so the other tasks still work;
    a pipeline using it gets "unknown task" with the reason."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    SKIPPED.update(load_plugins(ENTRY_POINT_GROUP, "task", _accept))
    for line in SKIPPED.values():
        log.warning("%s", line)


def unknown_task(name: object) -> str:
    """The message for a task name nothing registered: the known names, and why a plugin of that name is missing."""
    _load_plugins()
    why = f"; {SKIPPED[str(name)]}" if str(name) in SKIPPED else ""
    return (
        f"unknown task {name!r}: the registered tasks are {', '.join(_tasks)} (a task from another package "
        f"registers through the {ENTRY_POINT_GROUP!r} entry-point group){why}"
    )


def task_names() -> list[str]:
    """The registered task names, in registration order (built-ins first)."""
    _load_plugins()
    return list(_tasks)


def get_task_class(name: str) -> type[Task]:
    """The task class registered as ``name``; :class:`ConfigError` naming the known tasks when there is none."""
    _load_plugins()
    try:
        return _tasks[name]
    except KeyError:
        raise ConfigError(unknown_task(name)) from None


def task_config_classes(plugins: bool = True) -> list[type[TaskConfigBase]]:
    """The config class of every registered task (the members of the pipeline's ``task:`` union);
    ``plugins=False``: without loading the entry points first (at import time, where a broken plugin's error
    would be a traceback)."""
    if plugins:
        _load_plugins()
    return [cls.config_model for cls in _tasks.values()]


def is_classification(name: str) -> bool:
    """Whether task ``name`` answers each row with labels from a label set (its class declares ``classifies``; its
    records carry ``label`` or ``labels``): ``audit`` and ``sample`` take its single-label runs. False for a task
    nothing registered (its plugin is not installed)."""
    _load_plugins()
    return bool(getattr(_tasks.get(name), "classifies", False))


def build_task(cfg: Any) -> Task:
    """The task object for a pipeline's ``task:`` section (any registered task's config)."""
    return get_task_class(cfg.type)(cfg)
