"""JSON-schema helpers: turn a pydantic output model into a self-contained, strict schema that every
structured-output engine accepts (OpenAI strict mode, llama.cpp grammars, vLLM/xgrammar)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

_DROP_KEYS = {"title", "default"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].split("/")[-1]
            return _inline(defs[name], defs)
        out = {k: _inline(v, defs) for k, v in node.items() if k not in _DROP_KEYS and k != "$defs"}
        if out.get("type") == "object":
            out.setdefault("additionalProperties", False)
            if "properties" in out:
                out["required"] = list(out["properties"])
        return out
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Self-contained schema (no $ref), every property required, no extra properties."""
    raw = model.model_json_schema()
    return _inline(raw, raw.get("$defs", {}))


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """Parse JSON from model text: the whole text, else the JSON in fenced blocks and balanced ``{...}`` objects.

    Several JSON answers that agree count as one; answers that disagree are ambiguous (which one did the model
    mean?) and rejected. Raises ``ValueError`` with a short reason when there is no single answer.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty output")
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        pass
    answers: list[Any] = []
    for candidate in [*(_fenced(s)), *(_objects(s))]:
        if candidate not in answers:
            answers.append(candidate)
    if not answers:
        raise ValueError("output is not valid JSON")
    if len(answers) > 1:
        shown = "; ".join(json.dumps(a, ensure_ascii=False)[:80] for a in answers[:3])
        raise ValueError(f"ambiguous output: {len(answers)} different JSON answers ({shown})")
    return answers[0]


def _fenced(s: str) -> list[Any]:
    """The JSON of every fenced code block that parses."""
    found = []
    for m in _FENCE.finditer(s):
        try:
            found.append(json.loads(m.group(1)))
        except json.JSONDecodeError:
            pass
    return found


def _objects(s: str) -> list[Any]:
    """Every top-level balanced ``{...}`` object in ``s`` (objects nested in one found are not listed again)."""
    decoder = json.JSONDecoder()
    found = []
    start = s.find("{")
    while start != -1:
        try:
            obj, end = decoder.raw_decode(s, start)
        except json.JSONDecodeError:
            start = s.find("{", start + 1)
            continue
        found.append(obj)
        start = s.find("{", end)
    return found
