"""What a task is: its config, the run-time protocol the engine calls, and the export side ``annotator export``
calls. A task module defines these and registers its task class (:func:`annotator.tasks.register`).

Tasks sit below :mod:`annotator.config` (which builds its ``task:`` union from the registry): a task module may
import anything but the config and what imports it (the engine, the commands).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from annotator.inputs import InputRow
from annotator.records import AnnotationRecord, LabelInfo

if TYPE_CHECKING:
    from datasets import Features


class TaskConfigBase(BaseModel):
    """The base of every task's config class (the pipeline's ``task:`` section): unknown fields are errors and
    ``type`` is the task's registered name (declare it as ``type: Literal["<name>"]``). Tasks usually also take
    ``few_shot: list[FewShotExample]`` and ``instructions: str`` (see :func:`common_variables`)."""

    model_config = ConfigDict(extra="forbid")

    type: str


class FewShotExample(BaseModel):
    """One worked example shown in the prompt."""

    model_config = ConfigDict(extra="forbid")

    text: str
    output: dict[str, Any] = Field(description="The answer, in the task's output format, e.g. {label: sport}.")


class Aggregate(BaseModel):
    """The combined answer of one or more samples for one row."""

    output: dict[str, Any]
    label: str | None = None
    labels: list[str] | None = None
    confidence: float | None = None
    votes: dict[str, int] | None = None


@dataclass
class ExportContext:
    """What ``annotator export`` knows about a run, for the task's :class:`Exporter`."""

    task: str
    fmt: str  # the resolved --format (one of the exporter's formats)
    label_names: list[str] = field(default_factory=list)
    descriptions: dict[str, str] = field(default_factory=dict)
    multi_label: bool = False


@dataclass
class ExportItem:
    """One kept record and its answer as labels (label tasks; None otherwise: used for split strata and counts)."""

    record: AnnotationRecord
    labels: list[str] | None = None


class Exporter:
    """The export side of a task: which rows a record becomes, their HF features and the summary's statistics.

    This base class exports generative tasks (chat / instruction rows, no confidence); a task overrides what
    differs. One exporter is made per export (:meth:`Task.exporter`).
    """

    formats: ClassVar[tuple[str, ...]] = ("chat", "instruction")  # the first is what --format auto picks
    has_confidence: ClassVar[bool] = False  # records carry a confidence (--min-confidence, --route-below apply)
    output_key: ClassVar[str | None] = None  # output field that must be non-empty (else: empty_output_excluded)

    def __init__(self, ctx: ExportContext):
        self.ctx = ctx

    def prepare(self, records: list[AnnotationRecord]) -> None:
        """Look at every record once before anything is kept (e.g. infer label names)."""

    def keep(self, rec: AnnotationRecord) -> ExportItem | str:
        """The item of an ``ok`` record, or the :class:`~annotator.export.dataset_builder.ExportCounts` field that
        counts why it is left out."""
        if self.output_key and not (rec.output or {}).get(self.output_key):
            return "empty_output_excluded"
        return ExportItem(rec)

    def finish_selection(self, kept: list[ExportItem]) -> None:
        """Called once with every kept item, before rows are made (e.g. decide optional columns)."""

    def rows(self, item: ExportItem) -> list[dict[str, Any]]:
        """The dataset rows of one kept item (each with a unique ``id``)."""
        raise NotImplementedError

    def columns(self) -> dict[str, Any]:
        """The task's dataset features beyond the format's (``datasets`` feature types)."""
        return {}

    def features(self) -> Features:
        """The HF features of every row: ``id``, ``source_id``, the format's columns and :meth:`columns`."""
        from datasets import Features, Value

        s = Value("string")
        cols: dict[str, Any] = {"id": s, "source_id": s}
        cols.update(self.leading_columns())
        if self.ctx.fmt == "chat":
            cols["messages"] = [{"role": s, "content": s}]
        else:
            cols.update(instruction=s, input=s, output=s)
        cols.update(self.columns())
        return Features(cols)

    def leading_columns(self) -> dict[str, Any]:
        """Task columns placed before the format's columns."""
        return {}

    def statistics(
        self, items_by_split: dict[str, list[ExportItem]], rows_by_split: dict[str, list[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Fields of the export summary computed per split (and ``all``), e.g. ``label_distribution``."""
        return {}

    def summary_labels(self) -> tuple[list[str], bool]:
        """The label names and multi-label flag recorded in the export summary (none for generative tasks)."""
        return [], False


class Task(Protocol):
    """A kind of annotation. A task class declares, next to the methods below:

    ``name`` (its registered name, the ``task.type`` of pipelines), ``config_model`` (its config class),
    ``default_template`` (the file name of its default template, looked up beside the module that defines the
    task class, so a plugin ships its own, then in ``annotator/prompts``; or None: pipelines must set
    ``prompt.template``), ``aggregates_samples`` (whether ``teacher.samples > 1`` is meaningful),
    ``hub_category`` (the Hugging Face task category of its dataset card) and ``exporter`` (its
    :class:`Exporter` class); optionally ``classifies`` (default False: True when each row's answer is one or more
    labels from a label set, so its records carry ``label`` or ``labels``; ``audit`` and ``sample`` take the
    single-label runs of such a task, see :func:`annotator.tasks.registry.is_classification`).
    """

    name: ClassVar[str]
    config_model: ClassVar[type[TaskConfigBase]]
    default_template: ClassVar[str | None]
    aggregates_samples: ClassVar[bool]
    hub_category: ClassVar[str]
    exporter: ClassVar[type[Exporter]]
    output_model: type[BaseModel]

    def __init__(self, cfg: Any) -> None: ...

    def template_variables(self, row: InputRow, rng: random.Random) -> dict[str, Any]:
        """Variables for the prompt template of this row (``rng`` is seeded per item)."""
        ...

    def check(self, output: BaseModel, row: InputRow) -> None:
        """Semantic checks beyond the schema; raise ``ValueError`` to reject (the sample is retried)."""
        ...

    def aggregate(self, outputs: list[BaseModel], requested: int) -> Aggregate:
        """Combine valid samples (at least one) into the row's answer; ``requested`` is the number of samples
        asked for (``teacher.samples``): a confidence is a share of those, so invalid samples count against it."""
        ...

    def manifest_labels(self) -> tuple[list[LabelInfo], bool]:
        """The label set and multi-label flag recorded in ``run.json`` (empty for tasks without labels)."""
        ...


def common_variables(row: InputRow, few_shot: list[FewShotExample], instructions: str) -> dict[str, Any]:
    """Variables every task exposes to templates."""
    return {
        "id": row.id,
        "text": row.text,
        "row": row.columns,
        "few_shot": [{"text": ex.text, "output": ex.output} for ex in few_shot],
        "instructions": instructions,
    }


class OneAnswerTask:
    """Base of a generative task (rephrase, QA, a plugin's): one answer per row, so ``teacher.samples > 1`` is
    refused at config load, the row's answer is its one valid sample, and the run has no label set."""

    aggregates_samples = False
    classifies = False

    def aggregate(self, outputs: list[BaseModel], requested: int) -> Aggregate:
        """The one valid sample."""
        return Aggregate(output=outputs[0].model_dump())

    def manifest_labels(self) -> tuple[list[LabelInfo], bool]:
        """No labels: ``([], False)``."""
        return [], False


def format_row(
    row: dict[str, Any], fmt: str, system: str, user: str, instruction: str, source: str, answer: str
) -> dict[str, Any]:
    """Fill ``row`` in the chat (system/user/assistant ``messages``, as chat-template SFT trainers such as TRL's
    ``SFTTrainer`` read them) or instruction (Alpaca ``instruction``/``input``/``output``) format."""
    if fmt == "chat":
        row["messages"] = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    else:
        row.update(instruction=instruction, input=source, output=answer)
    return row
