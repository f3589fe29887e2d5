"""The task protocol: what the pipeline engine needs from a task, and nothing more."""

from __future__ import annotations

import random
from typing import Any, Protocol

from pydantic import BaseModel

from annotator.inputs import InputRow


class Aggregate(BaseModel):
    """The combined answer of one or more samples for one row."""

    output: dict[str, Any]
    label: str | None = None
    labels: list[str] | None = None
    confidence: float | None = None
    votes: dict[str, int] | None = None


class Task(Protocol):
    """A kind of annotation (label, rephrase, qa)."""

    name: str
    output_model: type[BaseModel]

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


def common_variables(row: InputRow, few_shot: list[Any], instructions: str) -> dict[str, Any]:
    """Variables every task exposes to templates."""
    return {
        "id": row.id,
        "text": row.text,
        "row": row.columns,
        "few_shot": [{"text": ex.text, "output": ex.output} for ex in few_shot],
        "instructions": instructions,
    }


def first_output(outputs: list[BaseModel], requested: int) -> Aggregate:
    """Aggregation for generative tasks: keep the first valid sample."""
    return Aggregate(output=outputs[0].model_dump())
