"""Classification task: single-label or multi-label, labels restricted to the configured set."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator

from annotator.config import LabelTaskConfig
from annotator.inputs import InputRow
from annotator.tasks.base import Aggregate, common_variables


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
    return create_model(
        "MultiLabelOutput" if cfg.multi_label else "LabelOutput", __validators__=validators, **fields
    )


class LabelTask:
    """Classify a text into one (or several) of the configured labels."""

    name = "label"

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
