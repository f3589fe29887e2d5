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
    """Parse JSON from model text: the whole text, a fenced block, or the first balanced {...} object.

    Raises ``ValueError`` with a short reason when there is none.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty output")
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        pass
    m = _FENCE.search(s)
    if m:
        try:
            return json.loads(m.group(1))
        except json.JSONDecodeError:
            pass
    start = s.find("{")
    while start != -1:
        try:
            obj, _ = json.JSONDecoder().raw_decode(s[start:])
            return obj
        except json.JSONDecodeError:
            start = s.find("{", start + 1)
    raise ValueError("output is not valid JSON")
