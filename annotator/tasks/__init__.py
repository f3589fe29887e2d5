"""Tasks: one module per kind of annotation, registered by name (see :mod:`annotator.tasks.registry`).

A task module declares its config class, output model, default template, checks, aggregation and export
side (:mod:`annotator.tasks.base`); adding a task is one new module that calls :func:`register`.
"""

from __future__ import annotations

# the built-in tasks register themselves on import
from annotator.tasks import label, qa, rephrase  # noqa: F401
from annotator.tasks.base import (
    Aggregate,
    ExportContext,
    Exporter,
    ExportItem,
    FewShotExample,
    Task,
    TaskConfigBase,
)
from annotator.tasks.registry import (
    build_task,
    get_task_class,
    is_classification,
    register,
    task_config_classes,
    task_names,
    unknown_task,
    unregister,
)

__all__ = [
    "Aggregate",
    "ExportContext",
    "ExportItem",
    "Exporter",
    "FewShotExample",
    "Task",
    "TaskConfigBase",
    "build_task",
    "get_task_class",
    "is_classification",
    "register",
    "task_config_classes",
    "task_names",
    "unknown_task",
    "unregister",
]
