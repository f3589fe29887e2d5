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
from annotator.audit.tabular import to_float, to_label
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


_SCALAR = (str, int, float)


def _kind(value: Any) -> str:
    kinds: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    return kinds.get(type(value), type(value).__name__)


def _expect(value: Any, kind: type, where: str, what: str) -> Any:
    """``value`` when it is a ``kind`` (dict or list; None counts as empty), else one line naming ``where``."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        shape = "an object" if kind is dict else "a list"
        raise InputDataError(f"{where}: {what} is {_kind(value)}, not {shape} (is this a Label Studio JSON export?)")
    return value


def _annotator(ann: dict[str, Any], where: str) -> str | None:
    who = ann.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    if who is not None and not isinstance(who, _SCALAR):
        raise InputDataError(f"{where}: completed_by is {_kind(who)}, not a user id or an object with email/id")
    return to_label(who)


def _choice(ann: dict[str, Any], where: str) -> str | None:
    """The single chosen label of one annotation (None when it has none)."""
    results = [
        r
        for r in _expect(ann.get("result"), list, where, "result")
        if isinstance(r, dict) and isinstance(r.get("value"), dict) and "choices" in r["value"]
    ]
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
    if not isinstance(choices, list):
        raise InputDataError(f'{where}: value.choices is {_kind(choices)}, not a list of labels (["label"])')
    if len(choices) > 1:
        raise InputDataError(f"{where}: {len(choices)} choices selected; the audit needs one label per annotation")
    if choices and not isinstance(choices[0], _SCALAR):
        raise InputDataError(f"{where}: the chosen label is {_kind(choices[0])}, not a label")
    return to_label(choices[0]) if choices else None


def _inclusion_prob(data: dict[str, Any], where: str) -> float:
    raw = data[INCLUSION_COLUMN]
    p = None if isinstance(raw, bool) else to_float(raw)
    if p is None or not 0.0 < p <= 1.0:
        raise InputDataError(
            f"{where}: data.{INCLUSION_COLUMN} is {raw!r}; it must be a probability in (0, 1] "
            "(written by `annotator sample`), or drop it"
        )
    return p


def _task_rows(task: Any, n: int, p: Path) -> list[dict[str, Any]]:
    """The ratings of task ``n``: one row per annotation."""
    if not isinstance(task, dict):
        raise InputDataError(f"human annotations {p}: task {n} is not a JSON object")
    data = _expect(task.get("data"), dict, f"human annotations {p}: task {n}", "data")
    raw_item = data.get("item_id", data.get("id"))
    item = normalize_id(raw_item) if raw_item is None or isinstance(raw_item, _SCALAR) else None
    if item is None:
        raise InputDataError(
            f"human annotations {p}: task {n} (Label Studio id {task.get('id')!r}) has no data.item_id; "
            "import the tasks written by `annotator sample` (they carry it)"
        )
    where = f"human annotations {p}: task {n} (item {item!r})"
    prob = _inclusion_prob(data, where) if INCLUSION_COLUMN in data else None
    rows = []
    for k, ann in enumerate(_expect(task.get("annotations"), list, where, "annotations"), start=1):
        if not isinstance(ann, dict):
            raise InputDataError(f"{where}: annotation {k} is {_kind(ann)}, not an object")
        who = _annotator(ann, f"{where}, annotation {k}")
        if who is None:
            raise InputDataError(f"{where}: annotation {k} has no completed_by")
        label = None if ann.get("was_cancelled") else _choice(ann, f"{where}, annotation {k}")
        rows.append(
            {
                "item_id": item,
                "annotator": who,
                "label": label,
                **({INCLUSION_COLUMN: prob} if prob is not None else {}),
            }
        )
    return rows


def read_label_studio(path: str | Path) -> pl.DataFrame:
    """The export as a long table: item_id, annotator, label (None = missing), and inclusion_prob when present.
    Every field is checked for its shape: a task, annotation or choice of the wrong kind is one line naming it."""
    p = Path(path)
    rows = [row for n, task in enumerate(_load(p), start=1) for row in _task_rows(task, n, p)]
    if not rows:
        raise InputDataError(f"human annotations {p}: the Label Studio export has no annotations")
    schema: dict[str, type[pl.DataType]] = {"item_id": pl.String, "annotator": pl.String, "label": pl.String}
    if any(INCLUSION_COLUMN in r for r in rows):
        schema[INCLUSION_COLUMN] = pl.Float64
    return pl.DataFrame(rows, schema=schema)
