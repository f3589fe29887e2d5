"""QA task: question-answer pairs generated from a document, each grounded by a verbatim evidence quote."""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, Field, create_model

from annotator.config import QATaskConfig
from annotator.inputs import InputRow
from annotator.tasks.base import Aggregate, common_variables, first_output


def _norm(s: str) -> str:
    return " ".join(s.split()).lower()


class QATask:
    name = "qa"

    def __init__(self, cfg: QATaskConfig):
        self.cfg = cfg
        pair = create_model(
            "QAPair",
            question=(str, Field(min_length=3, max_length=2000)),
            answer=(str, Field(min_length=1, max_length=4000)),
            evidence=(str, Field(min_length=1, max_length=4000, description="Verbatim quote from the document.")),
        )
        self.output_model = create_model(
            "QAOutput", pairs=(list[pair], Field(min_length=cfg.min_pairs, max_length=cfg.max_pairs))
        )

    def template_variables(self, row: InputRow, rng: random.Random) -> dict[str, Any]:
        return {
            **common_variables(row, self.cfg.few_shot, self.cfg.instructions),
            "min_pairs": self.cfg.min_pairs,
            "max_pairs": self.cfg.max_pairs,
        }

    def check(self, output: BaseModel, row: InputRow) -> None:
        if not self.cfg.require_grounding:
            return
        doc = _norm(row.text or "")
        for i, p in enumerate(output.pairs, 1):  # type: ignore[attr-defined]
            if _norm(p.evidence) not in doc:
                raise ValueError(f"pair {i}: evidence is not a verbatim quote of the document")

    def aggregate(self, outputs: list[BaseModel]) -> Aggregate:
        return first_output(outputs)
