"""Turn annotation records into rows of the usual fine-tuning formats.

* ``chat``        - ``messages``: a list of ``{"role", "content"}`` (system / user / assistant), the
  format of chat-template SFT trainers (e.g. TRL's ``SFTTrainer``).
* ``instruction`` - ``instruction`` / ``input`` / ``output`` columns (Alpaca style).

Rephrase: one row per paraphrase (the user asks for the text in a style, the assistant answers
with the paraphrase). QA: one row per question-answer pair (the user gives the passage and the
question, the assistant answers; ``evidence`` keeps the teacher's verbatim quote). Label tasks can
be exported as chat/instruction rows too (the assistant answers with the label name(s)).
Every row keeps ``id`` (unique per row) and ``source_id`` (the input row it came from).
"""

from __future__ import annotations

from typing import Any

from annotator.records import AnnotationRecord

REPHRASE_SYSTEM = "You rewrite texts faithfully: same meaning, different wording."
QA_SYSTEM = "Answer the question using only the given passage."


def _rephrase_instruction(style: str) -> str:
    style = (style or "").strip()
    return f"Rewrite the text in a {style} style." if style else "Rewrite the text in other words."


def _label_instruction(label_names: list[str], descriptions: dict[str, str], multi_label: bool) -> str:
    lines = []
    for name in label_names:
        desc = descriptions.get(name, "")
        lines.append(f"- {name}: {desc}" if desc else f"- {name}")
    ask = (
        "Classify the text. Answer with every label that applies, comma-separated, from:"
        if multi_label
        else "Classify the text. Answer with exactly one label from:"
    )
    return ask + "\n" + "\n".join(lines)


def _format_row(
    row: dict[str, Any], fmt: str, system: str, user: str, instruction: str, source: str, answer: str
) -> dict[str, Any]:
    """Fill ``row`` in the chat (system/user/assistant messages) or instruction (Alpaca) format."""
    if fmt == "chat":
        row["messages"] = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    else:
        row.update(instruction=instruction, input=source, output=answer)
    return row


def rephrase_rows(rec: AnnotationRecord, fmt: str) -> list[dict[str, Any]]:
    rows = []
    for i, p in enumerate((rec.output or {}).get("paraphrases") or []):
        style, text = str(p.get("style") or ""), str(p.get("text") or "")
        if not text.strip():
            continue
        instruction = _rephrase_instruction(style)
        row: dict[str, Any] = {"id": f"{rec.id}#{i}", "source_id": rec.id, "style": style}
        rows.append(_format_row(row, fmt, REPHRASE_SYSTEM, f"{instruction}\n\n{rec.text}", instruction, rec.text, text))
    return rows


def qa_rows(rec: AnnotationRecord, fmt: str) -> list[dict[str, Any]]:
    rows = []
    for i, p in enumerate((rec.output or {}).get("pairs") or []):
        q, a = str(p.get("question") or ""), str(p.get("answer") or "")
        if not q.strip() or not a.strip():
            continue
        row: dict[str, Any] = {"id": f"{rec.id}#{i}", "source_id": rec.id}
        _format_row(row, fmt, QA_SYSTEM, f"Passage:\n{rec.text}\n\nQuestion: {q}", q, rec.text, a)
        row["evidence"] = str(p.get("evidence") or "")
        rows.append(row)
    return rows


def label_rows(
    rec: AnnotationRecord,
    fmt: str,
    label_names: list[str],
    descriptions: dict[str, str],
    multi_label: bool,
    answer: list[str],
) -> list[dict[str, Any]]:
    instruction = _label_instruction(label_names, descriptions, multi_label)
    row: dict[str, Any] = {"id": rec.id, "source_id": rec.id}
    _format_row(row, fmt, instruction, rec.text, instruction, rec.text, ", ".join(answer))
    row["confidence"] = rec.confidence
    return [row]
