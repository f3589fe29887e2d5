"""``audit --by COLUMN``: the same audit per slice of the items (e.g. per language).

The slice column is read from the human annotations file when it has that column (long format: one value per item,
repeated on each rating row), else from the teacher run's input file (the path recorded in run.json's config).
Every slice is audited by :func:`annotator.audit.compute.compute` on the slice's items, so each metric has one
implementation; slices with fewer evaluated items than ``min_items`` get no metrics and are marked too small.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from annotator.audit.compute import AuditOptions, compute
from annotator.audit.dataset import AuditData
from annotator.audit.results import SliceResult, Slices
from annotator.audit.tabular import find_id_column, to_label
from annotator.errors import InputDataError
from annotator.records import normalize_id, read_manifest
from annotator.tables import read_table

log = logging.getLogger(__name__)

MISSING = "(missing)"


def _values_from(path: Path, column: str, id_col: str | None, what: str) -> dict[str, str | None] | None:
    """Item id -> slice value from ``path``; None when the file has no ``column``."""
    df = read_table(path, what)
    if column not in df.columns:
        return None
    id_col = id_col if id_col in df.columns else find_id_column(df.columns)
    if id_col is None:
        raise InputDataError(f"{what} {path}: no item id column to join column {column!r} on")
    out: dict[str, str | None] = {}
    for raw_id, raw_value in zip(df[id_col].to_list(), df[column].to_list()):
        item, value = normalize_id(raw_id), to_label(raw_value)
        if item is None:
            continue
        if item in out and out[item] is not None and value is not None and out[item] != value:
            raise InputDataError(
                f"{what} {path}: item {item!r} has two values of column {column!r} ({out[item]!r}, {value!r})"
            )
        if out.get(item) is None:
            out[item] = value
    return out


def read_slice_column(column: str, teacher: Path, humans: Path | None = None) -> tuple[dict[str, str | None], str]:
    """Item id -> value of ``column``, and the file it came from: the humans file when given and it has the column,
    else the run's input file (run.json ``config.input.path``). Used by ``audit --by`` and ``export --stratify-by``."""
    found = None if humans is None else _values_from(humans, column, None, "human annotations")
    if found is not None:
        return found, str(humans)
    manifest = read_manifest(teacher if teacher.is_dir() else teacher.parent)
    inp = (manifest.config.get("input") or {}) if manifest is not None else {}
    if inp.get("path"):
        path = Path(inp["path"])
        if not path.exists():
            raise InputDataError(f"column {column!r}: the run's input file {path} (run.json config.input.path) is gone")
        found = _values_from(path, column, inp.get("id_column"), "run input")
        if found is not None:
            return found, str(path)
    places = [str(p) for p in (humans, inp.get("path")) if p]
    where = " or ".join(places) if places else f"{teacher} (no run.json input path)"
    raise InputDataError(
        f"no column {column!r} in {where}; add it to the input file" + (" or the humans file" if humans else "")
    )


def subset(d: AuditData, rows: np.ndarray) -> AuditData:
    """The audit data of some items; annotators with no rating on them are dropped."""
    H = d.H[rows]
    keep = np.flatnonzero((H >= 0).any(axis=0))
    per_item = d.counts[rows].sum(axis=1)
    coverage = dict(
        d.coverage,
        evaluated_items=len(rows),
        items_with_2plus_ratings=int((per_item >= 2).sum()),
        tied_majority_items=int((d.majority[rows] < 0).sum()),
        min_ratings_per_item=int(per_item.min()),
        max_ratings_per_item=int(per_item.max()),
    )
    return replace(
        d,
        items=[d.items[i] for i in rows],
        annotators=[d.annotators[j] for j in keep],
        H=H[:, keep],
        teacher=d.teacher[rows],
        confidence=d.confidence[rows],
        counts=d.counts[rows],
        majority=d.majority[rows],
        coverage=coverage,
        warnings=[],
        inclusion_prob=None if d.inclusion_prob is None else d.inclusion_prob[rows],
    )


def _slice_result(
    value: str, sub: AuditData, opts: AuditOptions, humans_format: str, teacher_source: str
) -> SliceResult:
    r = compute(sub, replace(opts, min_agreement=None), humans_format, teacher_source, None)
    ag = r.agreement
    return SliceResult(
        value=value,
        n_items=len(sub.items),
        too_small=False,
        n_annotators=len(sub.annotators),
        accuracy=r.classification.accuracy,
        macro_f1=r.classification.macro_f1,
        teacher_vs_majority_alpha=ag.teacher_vs_majority.krippendorff_alpha,
        human_human_kappa=ag.human_human.mean_pairwise_cohen_kappa,
        teacher_human_kappa=ag.teacher_human.mean_cohen_kappa,
        human_human_alpha=ag.human_human.krippendorff_alpha,
        alt_test_passed=r.alt_test.passed,
        alt_test_verdict=r.alt_test_verdict,
    )


def audit_slices(
    d: AuditData,
    opts: AuditOptions,
    column: str,
    values: dict[str, str | None],
    source: str,
    min_items: int,
    humans_format: str,
    teacher_source: str,
) -> Slices:
    """Audit every slice: each value of ``column`` seen in ``values`` (a value with no evaluated item is an empty
    slice), plus ``(missing)`` for evaluated items without a value."""
    of_item = [values.get(i) or MISSING for i in d.items]
    names = sorted({v for v in values.values() if v is not None} | set(of_item))
    out: list[SliceResult] = []
    for name in names:
        rows = np.array([r for r, v in enumerate(of_item) if v == name], dtype=np.int64)
        if len(rows) < max(min_items, 1):
            n_ann = int((d.H[rows] >= 0).any(axis=0).sum()) if len(rows) else 0
            out.append(SliceResult(value=name, n_items=len(rows), too_small=True, n_annotators=n_ann))
            continue
        log.info("auditing slice %s=%s (%d items)", column, name, len(rows))
        out.append(_slice_result(name, subset(d, rows), opts, humans_format, teacher_source))
    return Slices(column=column, source=source, min_slice_items=min_items, slices=out)
