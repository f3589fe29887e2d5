"""Rephrase task: N paraphrases of the input, each in one of the configured styles."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from annotator.inputs import InputRow
from annotator.tasks.base import (
    Exporter,
    ExportItem,
    FewShotExample,
    OneAnswerTask,
    TaskConfigBase,
    common_variables,
    format_row,
)
from annotator.tasks.registry import register

SYSTEM = "You rewrite texts faithfully: same meaning, different wording."


class RephraseTaskConfig(TaskConfigBase):
    type: Literal["rephrase"]
    n: int = Field(default=2, ge=1, le=20, description="Paraphrases per input.")
    styles: list[str] = Field(default_factory=lambda: ["plain"], min_length=1)
    few_shot: list[FewShotExample] = []
    instructions: str = ""


def _instruction(style: str) -> str:
    style = (style or "").strip()
    return f"Rewrite the text in a {style} style." if style else "Rewrite the text in other words."


class RephraseExporter(Exporter):
    """One row per paraphrase: the user asks for the text in a style, the assistant answers with the paraphrase."""

    output_key = "paraphrases"

    def rows(self, item: ExportItem) -> list[dict[str, Any]]:
        rec = item.record
        rows = []
        for i, p in enumerate((rec.output or {}).get("paraphrases") or []):
            style, text = str(p.get("style") or ""), str(p.get("text") or "")
            if not text.strip():
                continue
            instruction = _instruction(style)
            row: dict[str, Any] = {"id": f"{rec.id}#{i}", "source_id": rec.id, "style": style}
            rows.append(
                format_row(row, self.ctx.fmt, SYSTEM, f"{instruction}\n\n{rec.text}", instruction, rec.text, text)
            )
        return rows

    def leading_columns(self) -> dict[str, Any]:
        from datasets import Value

        return {"style": Value("string")}

    def statistics(
        self, items_by_split: dict[str, list[ExportItem]], rows_by_split: dict[str, list[dict[str, Any]]]
    ) -> dict[str, Any]:
        """``style_distribution``: split (and ``all``) -> style -> rows."""
        return {
            "style_distribution": {
                split: dict(sorted(Counter(r["style"] for r in rows).items())) for split, rows in rows_by_split.items()
            }
        }


@register
class RephraseTask(OneAnswerTask):
    """Paraphrases of the input text, one per requested style."""

    name = "rephrase"
    config_model = RephraseTaskConfig
    default_template = "rephrase.jinja"
    hub_category = "text-generation"
    exporter = RephraseExporter

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
