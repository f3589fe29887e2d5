"""QA task: question-answer pairs generated from a document, each grounded by a verbatim evidence quote."""

from __future__ import annotations

import random
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, model_validator

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

SYSTEM = "Answer the question using only the given passage."


class QATaskConfig(TaskConfigBase):
    type: Literal["qa"]
    min_pairs: int = Field(default=1, ge=1)
    max_pairs: int = Field(default=3, ge=1, le=50)
    require_grounding: bool = Field(
        default=True,
        description="Reject a pair whose evidence is not a verbatim quote of the document or does not "
        "support the answer.",
    )
    min_evidence_chars: int = Field(
        default=12,
        ge=1,
        description="Grounding: an evidence quote must have at least this many characters (or be the whole document).",
    )
    min_answer_support: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Grounding: share of the answer's content words that must occur in its evidence "
        "(an answer found verbatim in its evidence always passes).",
    )
    few_shot: list[FewShotExample] = []
    instructions: str = ""

    @model_validator(mode="after")
    def _bounds(self) -> QATaskConfig:
        if self.min_pairs > self.max_pairs:
            raise ValueError(f"min_pairs ({self.min_pairs}) is larger than max_pairs ({self.max_pairs})")
        return self


def _norm(s: str) -> str:
    return " ".join(s.split()).lower()


# Words that carry no content of their own: an answer made only of these ("yes", "no") needs no word overlap.
_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "not",
        "no",
        "yes",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "they",
        "he",
        "she",
        "his",
        "her",
        "him",
        "we",
        "you",
        "i",
    }
)


def content_words(s: str) -> set[str]:
    """Lower-cased words of ``s`` that carry content: not a stopword, and 3+ characters or containing a digit."""
    return {
        w for w in re.findall(r"\w+", s.lower()) if w not in _STOPWORDS and (len(w) >= 3 or any(c.isdigit() for c in w))
    }


def support(answer: str, evidence: str) -> float:
    """How well ``evidence`` supports ``answer``: 1.0 when the answer occurs in it verbatim (whitespace and case
    aside), else the share of the answer's content words found in the evidence (1.0 when it has none)."""
    a, e = _norm(answer), _norm(evidence)
    if a and a in e:
        return 1.0
    words = content_words(a)
    if not words:
        return 1.0
    return len(words & set(re.findall(r"\w+", e))) / len(words)


class QAExporter(Exporter):
    """One row per question-answer pair: the user gives the passage and the question, the assistant answers;
    ``evidence`` keeps the teacher's verbatim quote."""

    output_key = "pairs"

    def rows(self, item: ExportItem) -> list[dict[str, Any]]:
        rec = item.record
        rows = []
        for i, p in enumerate((rec.output or {}).get("pairs") or []):
            q, a = str(p.get("question") or ""), str(p.get("answer") or "")
            if not q.strip() or not a.strip():
                continue
            row: dict[str, Any] = {"id": f"{rec.id}#{i}", "source_id": rec.id}
            format_row(row, self.ctx.fmt, SYSTEM, f"Passage:\n{rec.text}\n\nQuestion: {q}", q, rec.text, a)
            row["evidence"] = str(p.get("evidence") or "")
            rows.append(row)
        return rows

    def columns(self) -> dict[str, Any]:
        from datasets import Value

        return {"evidence": Value("string")}


@register
class QATask(OneAnswerTask):
    """Question-answer pairs, each grounded (``require_grounding``) by an evidence quote that is verbatim in the
    document, at least ``min_evidence_chars`` long, and supports the answer (see :func:`support`)."""

    name = "qa"
    config_model = QATaskConfig
    default_template = "qa.jinja"
    hub_category = "question-answering"
    exporter = QAExporter

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
        min_chars = min(self.cfg.min_evidence_chars, len(doc))
        for i, p in enumerate(output.pairs, 1):  # type: ignore[attr-defined]
            evidence = _norm(p.evidence)
            if evidence not in doc:
                raise ValueError(f"pair {i}: evidence is not a verbatim quote of the document")
            if len(evidence) < min_chars:
                raise ValueError(
                    f"pair {i}: evidence {evidence!r} is too short to ground an answer "
                    f"({len(evidence)} < task.min_evidence_chars={self.cfg.min_evidence_chars} characters)"
                )
            share = support(p.answer, evidence)
            if share < self.cfg.min_answer_support:
                raise ValueError(
                    f"pair {i}: the evidence does not support the answer ({share:.0%} of the answer's content words "
                    f"are in it; task.min_answer_support={self.cfg.min_answer_support:g})"
                )
