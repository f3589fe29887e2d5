"""Load the teacher's labels: a pipeline run (directory or ``annotations.jsonl``) or a plain table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from annotator.audit.design import WIDE_SHEET
from annotator.audit.tabular import few, find_id_column, to_float, to_label
from annotator.costs import CostSummary, CostTally
from annotator.errors import InputDataError
from annotator.records import ANNOTATIONS_FILE, RunManifest, iter_annotations, normalize_id, read_manifest
from annotator.tables import read_table
from annotator.tasks import is_classification

_RECORD_KEYS = {"status", "task", "prompt_hash"}


@dataclass
class TeacherAnnotations:
    labels: dict[str, str]
    confidence: dict[str, float]
    failed: list[str]
    ids: set[str]
    source: str
    path: str
    manifest_labels: list[str] | None = None
    model: str | None = None
    notes: list[str] = field(default_factory=list)
    cost: CostSummary | None = None  # runs with teacher.price only
    left_to_humans: set[str] = field(default_factory=set)
    """A cascade run: the rows no stage kept (in ``ids``, without a label: they are in its human queue)."""


def _is_record_file(p: Path) -> bool:
    if p.name == ANNOTATIONS_FILE:
        return True
    if p.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
        return False
    with p.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    return False
                return isinstance(first, dict) and set(first) >= _RECORD_KEYS
    return False


def load_teacher(path: str | Path) -> TeacherAnnotations:
    p = Path(path)
    if not p.exists():
        raise InputDataError(f"teacher path not found: {p} (give a run directory, its annotations.jsonl, or a table)")
    if p.is_dir() or _is_record_file(p):
        return _load_run(p)
    return _load_table(p)


def _load_run(p: Path) -> TeacherAnnotations:
    # read_manifest() given a *file* would parse that file itself; hand it the run directory instead.
    manifest = read_manifest(p if p.is_dir() else p.parent)
    if manifest is not None:
        if not is_classification(manifest.task):
            raise InputDataError(
                f"teacher run {p} is a '{manifest.task}' task; audit and estimate need a single-label task"
            )
        if manifest.multi_label:
            raise InputDataError(f"teacher run {p} is multi-label; audit and estimate support single-label tasks only")
    labels: dict[str, str] = {}
    confidence: dict[str, float] = {}
    failed: list[str] = []
    ids: set[str] = set()
    model = manifest.model if manifest else None
    tally = CostTally()
    for rec in iter_annotations(p):
        tally.add(rec.cost)
        if not is_classification(rec.task):
            raise InputDataError(
                f"teacher run {p} has '{rec.task}' records; audit and estimate need a single-label task"
            )
        ids.add(rec.id)
        model = model or rec.model
        label = rec.single_label()
        if rec.status != "ok" or label is None:
            if rec.status == "ok" and rec.labels is not None:
                raise InputDataError(
                    f"teacher run {p} has multi-label records; audit and estimate support single-label tasks only"
                )
            failed.append(rec.id)
            continue
        labels[rec.id] = label
        if rec.confidence is not None:
            confidence[rec.id] = float(rec.confidence)
    queued = _left_to_humans(manifest)
    if not ids and not queued:
        raise InputDataError(f"teacher run {p} has no annotation records")
    manifest_labels = [lab.name for lab in manifest.labels] if manifest and manifest.labels else None
    return TeacherAnnotations(
        labels=labels,
        confidence=confidence,
        failed=failed,
        ids=ids | queued,
        source="run",
        path=str(p),
        manifest_labels=manifest_labels,
        model=model,
        cost=tally.summary(),
        left_to_humans=queued,
    )


def _left_to_humans(manifest: RunManifest | None) -> set[str]:
    """The ids of a cascade run's human queue (read from its wide sheet); empty for any other run."""
    cascade = manifest.cascade if manifest is not None else None
    if cascade is None or not cascade.human_queue or not cascade.rows_to_humans:
        return set()
    sheet = Path(cascade.human_queue) / WIDE_SHEET
    if not sheet.exists():
        raise InputDataError(f"cascade run: its human queue {sheet} is missing (run `annotator run` again to write it)")
    ids = read_table(sheet, "human queue")["item_id"].to_list()
    return {i for i in (normalize_id(v) for v in ids) if i is not None}


def _load_table(p: Path) -> TeacherAnnotations:
    df = read_table(p, "teacher")
    id_col = find_id_column(df.columns)
    if id_col is None or "label" not in df.columns:
        raise InputDataError(
            f"teacher file {p}: needs columns item_id (or id) and label, optional confidence; "
            f"found: {', '.join(df.columns)}"
        )
    conf_col = df["confidence"].to_list() if "confidence" in df.columns else [None] * df.height
    labels: dict[str, str] = {}
    confidence: dict[str, float] = {}
    failed: list[str] = []
    ids: set[str] = set()
    repeated: list[str] = []
    for n, (raw_id, raw_label, raw_conf) in enumerate(
        zip(df[id_col].to_list(), df["label"].to_list(), conf_col), start=2
    ):
        item = normalize_id(raw_id)
        if item is None:
            raise InputDataError(f"teacher file {p}: row {n} has no {id_col}")
        if item in ids:
            repeated.append(item)
        ids.add(item)
        label = to_label(raw_label)
        if label is None:
            failed.append(item)
            continue
        labels[item] = label
        conf = to_float(raw_conf)
        if raw_conf is not None and str(raw_conf).strip() and conf is None:
            raise InputDataError(f"teacher file {p}: row {n} has a non-numeric confidence {raw_conf!r}")
        if conf is not None:
            if not 0.0 <= conf <= 1.0:
                raise InputDataError(f"teacher file {p}: row {n} confidence {conf} is outside [0, 1]")
            confidence[item] = conf
    if repeated:
        raise InputDataError(f"teacher file {p}: repeated item ids: {few(repeated)}")
    return TeacherAnnotations(labels=labels, confidence=confidence, failed=failed, ids=ids, source="table", path=str(p))
