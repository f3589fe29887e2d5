"""Classification task: single-label or multi-label, labels restricted to the configured set."""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from annotator.inputs import InputRow
from annotator.records import AnnotationRecord, LabelInfo
from annotator.tasks.base import (
    Aggregate,
    ExportContext,
    Exporter,
    ExportItem,
    FewShotExample,
    TaskConfigBase,
    common_variables,
    format_row,
)
from annotator.tasks.registry import register

if TYPE_CHECKING:
    from datasets import Features


class LabelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""


class LabelTaskConfig(TaskConfigBase):
    type: Literal["label"]
    labels: list[LabelSpec] = Field(min_length=2)
    multi_label: bool = False
    rationale: bool = Field(default=False, description="Ask for a short rationale before the label.")
    shuffle_labels: bool = Field(default=True, description="Shuffle label order per item (position-bias control).")
    few_shot: list[FewShotExample] = []
    instructions: str = ""

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_strings(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return [{"name": k, "description": d or ""} for k, d in v.items()]
        if isinstance(v, list):
            return [{"name": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _unique_labels(self) -> LabelTaskConfig:
        names = [lab.name for lab in self.labels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate label names: {', '.join(dupes)}")
        return self

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]


def _output_model(cfg: LabelTaskConfig) -> type[BaseModel]:
    label_type = Literal[tuple(cfg.label_names)]  # type: ignore[valid-type]
    fields: dict[str, Any] = {}
    if cfg.rationale:  # rationale first: the model reasons before it commits to a label
        fields["rationale"] = (str, Field(description="One or two sentences of reasoning.", max_length=1000))
    if cfg.multi_label:
        fields["labels"] = (list[label_type], Field(min_length=1, max_length=len(cfg.label_names)))  # type: ignore[valid-type]
        validators = {"_dedupe": field_validator("labels")(lambda cls, v: list(dict.fromkeys(v)))}
    else:
        fields["label"] = (label_type, ...)
        validators = {}
    return create_model("MultiLabelOutput" if cfg.multi_label else "LabelOutput", __validators__=validators, **fields)


def record_labels(rec: AnnotationRecord, multi_label: bool) -> list[str] | None:
    """The label(s) of a record: its ``label``/``labels`` fields, else those of its output (None: none)."""
    out = rec.output or {}
    if multi_label:
        labels = rec.labels if rec.labels is not None else out.get("labels")
        if labels is None and (rec.label or out.get("label")):
            labels = [rec.label or out.get("label")]
        return None if labels is None else [str(x) for x in labels]
    label = rec.single_label()
    if label is None and isinstance(out.get("labels"), list) and len(out["labels"]) == 1:
        label = out["labels"][0]
    return None if label is None else [str(label)]


class LabelExporter(Exporter):
    """Label runs: ``classification`` rows (a ClassLabel column) or chat/instruction rows answering the label."""

    formats = ("classification", "chat", "instruction")
    has_confidence = True

    def __init__(self, ctx: ExportContext):
        super().__init__(ctx)
        self.with_rationale = False  # classification rows get a rationale column when some answer has one

    def prepare(self, records: list[AnnotationRecord]) -> None:
        """Without a label set in run.json, the labels the teacher answered (sorted)."""
        if not self.ctx.label_names:
            seen: set[str] = set()
            for rec in records:
                if rec.status == "ok":
                    seen.update(record_labels(rec, self.ctx.multi_label) or [])
            self.ctx.label_names = sorted(seen)

    def keep(self, rec: AnnotationRecord) -> ExportItem | str:
        answer = record_labels(rec, self.ctx.multi_label)
        known = set(self.ctx.label_names)
        if answer is None or any(a not in known for a in answer) or (not self.ctx.multi_label and len(answer) != 1):
            return "invalid_label_excluded"
        return ExportItem(rec, answer)

    def finish_selection(self, kept: list[ExportItem]) -> None:
        self.with_rationale = self.ctx.fmt == "classification" and any(
            isinstance((it.record.output or {}).get("rationale"), str) for it in kept
        )

    def rows(self, item: ExportItem) -> list[dict[str, Any]]:
        rec, answer = item.record, item.labels or []
        if self.ctx.fmt != "classification":
            instruction = self._instruction()
            row: dict[str, Any] = {"id": rec.id, "source_id": rec.id}
            format_row(row, self.ctx.fmt, instruction, rec.text, instruction, rec.text, ", ".join(answer))
            row["confidence"] = rec.confidence
            return [row]
        row = {"id": rec.id, "text": rec.text, "confidence": rec.confidence}
        if self.ctx.multi_label:
            row["labels"] = list(answer)
        else:
            row["label"] = (answer or [""])[0]
        if self.with_rationale:
            rat = (rec.output or {}).get("rationale")
            row["rationale"] = rat if isinstance(rat, str) else None
        return [row]

    def _instruction(self) -> str:
        lines = []
        for name in self.ctx.label_names:
            desc = self.ctx.descriptions.get(name, "")
            lines.append(f"- {name}: {desc}" if desc else f"- {name}")
        ask = (
            "Classify the text. Answer with every label that applies, comma-separated, from:"
            if self.ctx.multi_label
            else "Classify the text. Answer with exactly one label from:"
        )
        return ask + "\n" + "\n".join(lines)

    def columns(self) -> dict[str, Any]:
        from datasets import Value

        return {"confidence": Value("float64")}

    def features(self) -> Features:
        if self.ctx.fmt != "classification":
            return super().features()
        from datasets import ClassLabel, Features, Sequence, Value

        s = Value("string")
        cols: dict[str, Any] = {"id": s, "text": s}
        if self.ctx.multi_label:
            cols["labels"] = Sequence(ClassLabel(names=self.ctx.label_names))
        else:
            cols["label"] = ClassLabel(names=self.ctx.label_names)
        cols["confidence"] = Value("float64")
        if self.with_rationale:
            cols["rationale"] = s
        return Features(cols)

    def statistics(
        self, items_by_split: dict[str, list[ExportItem]], rows_by_split: dict[str, list[dict[str, Any]]]
    ) -> dict[str, Any]:
        """``label_distribution`` (split -> label -> items) and ``mean_confidence`` per split and ``all``."""
        label_dist: dict[str, dict[str, int]] = {}
        mean_conf: dict[str, float | None] = {}
        for split, items in items_by_split.items():
            c = Counter(lab for it in items for lab in (it.labels or []))
            label_dist[split] = {name: c.get(name, 0) for name in self.ctx.label_names}
            confs = [it.record.confidence for it in items if it.record.confidence is not None]
            mean_conf[split] = round(sum(confs) / len(confs), 4) if confs else None
        return {"label_distribution": label_dist, "mean_confidence": mean_conf}

    def summary_labels(self) -> tuple[list[str], bool]:
        return self.ctx.label_names, self.ctx.multi_label


@register
class LabelTask:
    """Classify a text into one (or several) of the configured labels."""

    name = "label"
    config_model = LabelTaskConfig
    default_template = "label.jinja"
    aggregates_samples = True  # majority vote; the confidence is the winner's share
    classifies = True  # records carry label / labels from the label set (audit and sample take single-label runs)
    hub_category = "text-classification"
    exporter = LabelExporter

    def __init__(self, cfg: LabelTaskConfig):
        self.cfg = cfg
        self.output_model = _output_model(cfg)

    def template_variables(self, row: InputRow, rng: random.Random) -> dict[str, Any]:
        labels = [lab.model_dump() for lab in self.cfg.labels]
        if self.cfg.shuffle_labels:
            rng.shuffle(labels)
        return {
            **common_variables(row, self.cfg.few_shot, self.cfg.instructions),
            "labels": labels,
            "multi_label": self.cfg.multi_label,
            "rationale": self.cfg.rationale,
        }

    def check(self, output: BaseModel, row: InputRow) -> None:
        return None

    def manifest_labels(self) -> tuple[list[LabelInfo], bool]:
        return [LabelInfo(name=lab.name, description=lab.description) for lab in self.cfg.labels], self.cfg.multi_label

    def aggregate(self, outputs: list[BaseModel], requested: int) -> Aggregate:
        """Majority vote over the valid samples; confidence = the winner's share of the ``requested`` samples."""
        n = len(outputs)
        requested = max(requested, n)
        if not self.cfg.multi_label:
            votes = Counter(o.label for o in outputs)  # type: ignore[attr-defined]
            # most_common keeps first-seen order among ties, so ties go to the earliest sample
            label, count = votes.most_common(1)[0]
            chosen = next(o for o in outputs if o.label == label)  # type: ignore[attr-defined]
            return Aggregate(output=chosen.model_dump(), label=label, confidence=count / requested, votes=dict(votes))
        votes = Counter(lab for o in outputs for lab in o.labels)  # type: ignore[attr-defined]
        order = {name: i for i, name in enumerate(self.cfg.label_names)}
        chosen_set = sorted((lab for lab, c in votes.items() if c * 2 > n), key=order.__getitem__)
        if not chosen_set:  # no label has a majority: fall back to the most voted one
            chosen_set = [votes.most_common(1)[0][0]]
        agree = sum(set(o.labels) == set(chosen_set) for o in outputs)  # type: ignore[attr-defined]
        output = outputs[0].model_dump()
        output["labels"] = chosen_set
        return Aggregate(output=output, labels=chosen_set, confidence=agree / requested, votes=dict(votes))
