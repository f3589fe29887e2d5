"""Read a Label Studio JSON export (a list of tasks) as long-format human annotations.

Each task carries our item id in ``data.item_id`` (the import file written by ``annotator sample`` puts it there),
each annotation's ``completed_by`` (a user id, or an object with ``email``/``id`` in newer exports) names the
annotator, and ``result[].value.choices`` holds the label. Cancelled (skipped) annotations and annotations
without a choice are missing ratings. With several ``choices`` controls the one named ``label`` is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from annotator.audit.design import INCLUSION_COLUMN
from annotator.audit.tabular import to_label
from annotator.errors import InputDataError
from annotator.records import normalize_id

CONTROL_NAME = "label"


def is_label_studio_export(path: str | Path) -> bool:
    """A ``.json`` file holding a JSON array whose first element looks like a Label Studio task."""
    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    with p.open(encoding="utf-8", errors="replace") as fh:
        head = fh.read(4096).lstrip()
    if not head.startswith("["):
        return False
    data = _load(p)
    return bool(data) and isinstance(data[0], dict) and "annotations" in data[0] and "data" in data[0]


def _load(p: Path) -> list[Any]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputDataError(f"cannot read human annotations file {p}: not valid UTF-8 text") from None
    except ValueError as exc:
        raise InputDataError(f"human annotations {p}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise InputDataError(f"human annotations {p}: a Label Studio export is a JSON list of tasks")
    return data


def _annotator(ann: dict[str, Any]) -> str | None:
    who = ann.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return to_label(who)


def _choice(ann: dict[str, Any], where: str) -> str | None:
    """The single chosen label of one annotation (None when it has none)."""
    results = [r for r in ann.get("result") or [] if isinstance(r, dict) and "choices" in (r.get("value") or {})]
    if len(results) > 1:
        named = [r for r in results if r.get("from_name") == CONTROL_NAME]
        if len(named) != 1:
            names = sorted({str(r.get("from_name")) for r in results})
            raise InputDataError(
                f"{where}: several choices controls ({', '.join(names)}); name the label control "
                f"'{CONTROL_NAME}' in the labeling config"
            )
        results = named
    if not results:
        return None
    choices = results[0]["value"]["choices"]
    if not isinstance(choices, list) or len(choices) > 1:
        raise InputDataError(f"{where}: {len(choices)} choices selected; the audit needs one label per annotation")
    return to_label(choices[0]) if choices else None


def read_label_studio(path: str | Path) -> pl.DataFrame:
    """The export as a long table: item_id, annotator, label (None = missing), and inclusion_prob when present."""
    p = Path(path)
    rows: list[dict[str, Any]] = []
    for n, task in enumerate(_load(p), start=1):
        if not isinstance(task, dict):
            raise InputDataError(f"human annotations {p}: task {n} is not a JSON object")
        data = task.get("data") or {}
        item = normalize_id(data.get("item_id", data.get("id")))
        if item is None:
            raise InputDataError(
                f"human annotations {p}: task {n} (Label Studio id {task.get('id')!r}) has no data.item_id; "
                "import the tasks written by `annotator sample` (they carry it)"
            )
        for ann in task.get("annotations") or []:
            who = _annotator(ann)
            if who is None:
                raise InputDataError(f"human annotations {p}: task {n} (item {item!r}) has an annotation without completed_by")
            label = None if ann.get("was_cancelled") else _choice(ann, f"human annotations {p}: task {n} (item {item!r})")
            row = {"item_id": item, "annotator": who, "label": label}
            if INCLUSION_COLUMN in data:
                row[INCLUSION_COLUMN] = data[INCLUSION_COLUMN]
            rows.append(row)
    if not rows:
        raise InputDataError(f"human annotations {p}: the Label Studio export has no annotations")
    schema: dict[str, type[pl.DataType]] = {"item_id": pl.String, "annotator": pl.String, "label": pl.String}
    if any(INCLUSION_COLUMN in r for r in rows):
        schema[INCLUSION_COLUMN] = pl.Float64
    return pl.DataFrame(rows, schema=schema)
