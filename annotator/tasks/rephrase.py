"""Rephrase task: N paraphrases of the input, each in one of the configured styles."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from annotator.config import RephraseTaskConfig
from annotator.inputs import InputRow
from annotator.tasks.base import Aggregate, common_variables, first_output


class RephraseTask:
    name = "rephrase"

    def __init__(self, cfg: RephraseTaskConfig):
        self.cfg = cfg
        style_type: Any = Literal[tuple(cfg.styles)]  # a Literal built at run time
        paraphrase = create_model(
            "Paraphrase", style=(style_type, ...), text=(str, Field(min_length=1, max_length=20000))
        )
        self.output_model = create_model(
            "RephraseOutput", paraphrases=(list[paraphrase], Field(min_length=cfg.n, max_length=cfg.n))
        )

    def styles_for(self, n: int) -> list[str]:
        return [self.cfg.styles[i % len(self.cfg.styles)] for i in range(n)]

    def template_variables(self, row: InputRow, rng: random.Random) -> dict[str, Any]:
        return {
            **common_variables(row, self.cfg.few_shot, self.cfg.instructions),
            "n": self.cfg.n,
            "styles": self.cfg.styles,
            "requested_styles": self.styles_for(self.cfg.n),
        }

    def check(self, output: BaseModel, row: InputRow) -> None:
        source = " ".join((row.text or "").split()).lower()
        for p in output.paraphrases:  # type: ignore[attr-defined]
            if " ".join(p.text.split()).lower() == source:
                raise ValueError("a paraphrase is identical to the input")

    def aggregate(self, outputs: list[BaseModel], requested: int) -> Aggregate:
        return first_output(outputs, requested)
