"""What ``annotator export`` is asked (:class:`ExportOptions`) and what it wrote (:class:`ExportSummary`, saved as
``export.json`` and rendered as the dataset card by :mod:`annotator.export.card`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from annotator.choices import ExportFormat
from annotator.errors import AnnotatorError
from annotator.records import AnswerProvenance, CascadeSummary, Invocation

EXPORT_FILE = "export.json"
CARD_FILE = "README.md"
PARQUET_DIR = "parquet"
AUDIT_REPORT = Path("audit") / "report.json"

FORMATS = tuple(f.value for f in ExportFormat)


class ExportError(AnnotatorError):
    """The run cannot be exported as asked."""


class ExportCounts(BaseModel):
    total: int = Field(0, description="Rows in annotations.jsonl.")
    failed_excluded: int = Field(0, description="Rows the teacher failed on (status 'failed').")
    below_threshold_excluded: int = Field(0, description="Label rows with confidence < --min-confidence.")
    routed_to_humans: int = Field(0, description="Label rows with confidence < --route-below, written to a sheet.")
    invalid_label_excluded: int = Field(0, description="Label rows with no label or a label outside the label set.")
    empty_output_excluded: int = Field(0, description="Rephrase/QA rows without any paraphrase/pair.")
    exported_items: int = Field(0, description="Input rows that made it into the dataset.")
    exported_rows: int = Field(0, description="Dataset rows (rephrase/QA: one per paraphrase/pair).")
    per_split: dict[str, int] = Field(default_factory=dict, description="Dataset rows per split.")
    per_split_items: dict[str, int] = Field(default_factory=dict, description="Input rows per split.")


class ExportSummary(BaseModel):
    """What ``annotator export`` wrote; saved as ``export.json`` next to the dataset."""

    run_dir: str
    out: str
    created_at: str
    task: str
    format: str
    columns: list[str]
    label_names: list[str] = []
    multi_label: bool = False
    seed: int
    split_fractions: dict[str, float]
    split_method: str = Field(
        "item id",
        description="'item id' (seeded hash, same for every teacher of the input), plus ', gold strata' (--gold) "
        "and ', COLUMN strata' (--stratify-by COLUMN).",
    )
    stratify_by: str | None = Field(None, description="Input column the splits were stratified on (--stratify-by).")
    gold: str | None = Field(None, description="Gold label file the splits were stratified on (--gold).")
    min_confidence: float | None = None
    route_below: float | None = None
    routed_sheet: str | None = None
    counts: ExportCounts
    label_distribution: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Label tasks: split (and 'all') -> label -> rows carrying it."
    )
    style_distribution: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Rephrase: split -> style -> rows."
    )
    mean_confidence: dict[str, float | None] = Field(default_factory=dict)
    split_bytes: dict[str, int] = Field(default_factory=dict, description="Arrow size of each split.")
    teacher_model: str | None = None
    teacher_cost_usd: float | None = Field(
        default=None, description="What the run's annotations cost (teacher.price), failed rows' calls included."
    )
    teacher_cost_per_item_usd: float | None = None
    backend: str | None = None
    template_path: str | None = None
    template_sha256: str | None = None
    pipeline_name: str | None = None
    pipeline_path: str | None = None
    pipeline_config: dict[str, Any] = Field(default_factory=dict)
    annotator_version: str | None = None
    answers: AnswerProvenance | None = Field(
        default=None, description="How the annotations were obtained (None: run.json of an older version)."
    )
    history: list[Invocation] = Field(default_factory=list, description="The `annotator run` invocations.")
    cascade: CascadeSummary | None = Field(
        default=None,
        description="A cascade run: its stages, thresholds and guarantee (rows left to humans are not in the dataset).",
    )
    audit_summary: dict[str, Any] | None = None
    audit_report: str | None = None
    pushed_to: str | None = None
    notes: list[str] = []
    files: list[str] = Field(
        default_factory=list,
        description="Files this export wrote, relative to its folder: a later export into the same folder replaces "
        "these and never touches anything else.",
    )


@dataclass
class ExportOptions:
    out: Path | None = None
    seed: int = 42
    split: str = "0.8,0.1,0.1"
    min_confidence: float | None = None
    fmt: str = "auto"
    push_to_hub: str | None = None
    private: bool = True
    gold: Path | None = None  # human gold labels: stratify the splits on them (never on the teacher's labels)
    stratify_by: str | None = None  # an input column (e.g. language): every slice is split in the fractions
    route_below: float | None = None
    route_out: Path | None = None
    route_annotators: int = 1
