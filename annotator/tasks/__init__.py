"""Task registry."""

from __future__ import annotations

from annotator.config import LabelTaskConfig, QATaskConfig, RephraseTaskConfig
from annotator.tasks.base import Aggregate, Task
from annotator.tasks.label import LabelTask
from annotator.tasks.qa import QATask
from annotator.tasks.rephrase import RephraseTask


def build_task(cfg: LabelTaskConfig | RephraseTaskConfig | QATaskConfig) -> Task:
    """The task object for a pipeline's ``task:`` section."""
    if isinstance(cfg, LabelTaskConfig):
        return LabelTask(cfg)
    if isinstance(cfg, RephraseTaskConfig):
        return RephraseTask(cfg)
    return QATask(cfg)


__all__ = ["Aggregate", "Task", "build_task"]
