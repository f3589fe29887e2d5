"""Build a ``datasets.DatasetDict`` from a pipeline run and write it (save_to_disk + Parquet + card)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, Field

from annotator.costs import CostTally
from annotator.errors import AnnotatorError, InputDataError
from annotator.export.chat_formats import label_rows, qa_rows, rephrase_rows
from annotator.export.splits import (
    assign_by_id,
    multilabel_strata,
    parse_split_spec,
    split_counts,
)
from annotator.records import (
    ANNOTATIONS_FILE,
    MANIFEST_FILE,
    AnnotationRecord,
    AnswerProvenance,
    Invocation,
    RunManifest,
    iter_annotations,
    read_manifest,
)

EXPORT_FILE = "export.json"
CARD_FILE = "README.md"
PARQUET_DIR = "parquet"
AUDIT_REPORT = Path("audit") / "report.json"

FORMATS = ("auto", "classification", "chat", "instruction")


class ExportError(AnnotatorError):
    """The run cannot be exported as asked."""


class ExportCounts(BaseModel):
    total: int = Field(0, description="Rows in annotations.jsonl.")
    failed_excluded: int = Field(0, description="Rows the teacher failed on (status 'failed').")
    below_threshold_excluded: int = Field(0, description="Label rows with confidence < --min-confidence.")
    routed_to_humans: int = Field(0, description="Label rows with confidence < --route-below, written to a sheet.")
    invalid_label_excluded: int = Field(0, description="Label rows with no label or a label outside the label set.")
    empty_output_excluded: int = Field(0, description="Rephrase/QA rows without any paraphrase/pair.")
    exported_items: int = Field(0, description="Input rows that made it into the dataset.")
    exported_rows: int = Field(0, description="Dataset rows (rephrase/QA: one per paraphrase/pair).")
    per_split: dict[str, int] = Field(default_factory=dict, description="Dataset rows per split.")
    per_split_items: dict[str, int] = Field(default_factory=dict, description="Input rows per split.")


class ExportSummary(BaseModel):
    """What ``annotator export`` wrote; saved as ``export.json`` next to the dataset."""

    run_dir: str
    out: str
    created_at: str
    task: str
    format: str
    columns: list[str]
    label_names: list[str] = []
    multi_label: bool = False
    seed: int
    split_fractions: dict[str, float]
    split_method: str = Field(
        "item id",
        description="'item id' (seeded hash, same for every teacher of the input), plus ', gold strata' (--gold) "
        "and ', COLUMN strata' (--stratify-by COLUMN).",
    )
    stratify_by: str | None = Field(None, description="Input column the splits were stratified on (--stratify-by).")
    gold: str | None = Field(None, description="Gold label file the splits were stratified on (--gold).")
    min_confidence: float | None = None
    route_below: float | None = None
    routed_sheet: str | None = None
    counts: ExportCounts
    label_distribution: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Label tasks: split (and 'all') -> label -> rows carrying it."
    )
    style_distribution: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Rephrase: split -> style -> rows."
    )
    mean_confidence: dict[str, float | None] = Field(default_factory=dict)
    split_bytes: dict[str, int] = Field(default_factory=dict, description="Arrow size of each split.")
    teacher_model: str | None = None
    teacher_cost_usd: float | None = Field(
        default=None, description="What the run's annotations cost (teacher.price), failed rows' calls included."
    )
    teacher_cost_per_item_usd: float | None = None
    backend: str | None = None
    template_path: str | None = None
    template_sha256: str | None = None
    pipeline_name: str | None = None
    pipeline_path: str | None = None
    pipeline_config: dict[str, Any] = Field(default_factory=dict)
    annotator_version: str | None = None
    answers: AnswerProvenance | None = Field(
        default=None, description="How the annotations were obtained (None: run.json of an older version)."
    )
    history: list[Invocation] = Field(default_factory=list, description="The `annotator run` invocations.")
    audit_summary: dict[str, Any] | None = None
    audit_report: str | None = None
    pushed_to: str | None = None
    notes: list[str] = []
    files: list[str] = Field(
        default_factory=list,
        description="Files this export wrote, relative to its folder: a later export into the same folder replaces "
        "these and never touches anything else.",
    )


@dataclass
class ExportOptions:
    out: Path | None = None
    seed: int = 42
    split: str = "0.8,0.1,0.1"
    min_confidence: float | None = None
    fmt: str = "auto"
    push_to_hub: str | None = None
    private: bool = True
    gold: Path | None = None  # human gold labels: stratify the splits on them (never on the teacher's labels)
    stratify_by: str | None = None  # an input column (e.g. language): every slice is split in the fractions
    route_below: float | None = None
    route_out: Path | None = None
    route_annotators: int = 1


# --------------------------------------------------------------------------------------------- helpers


def _run_base(run_dir: Path) -> Path:
    return run_dir if run_dir.is_dir() else run_dir.parent


# Headline numbers of annotator's own audit report (annotator/audit/report.py), looked up defensively.
AUDIT_HEADLINES = (
    "gate.metric",
    "gate.value",
    "gate.min_agreement",
    "gate.passed",
    "alt_test_verdict",
    "coverage.evaluated_items",
    "coverage.teacher_failed",
    "classification.accuracy",
    "classification.macro_f1",
    "agreement.teacher_vs_majority.cohen_kappa",
    "agreement.teacher_vs_majority.krippendorff_alpha",
    "agreement.human_human.krippendorff_alpha",
    "agreement.human_human.mean_pairwise_cohen_kappa",
    "agreement.teacher_human.mean_cohen_kappa",
    "agreement.teacher_human.alpha_teacher_substituted",
    "low_agreement_categories",
)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _headline_value(v: Any) -> tuple[bool, Any]:
    """(usable, value): scalars as they are, estimates ``{value, ci_low, ci_high}`` as their value, short lists joined."""
    if _scalar(v):
        return True, v
    if isinstance(v, dict) and "value" in v and _scalar(v["value"]):
        return True, v["value"]
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return True, ", ".join(v) if v else "none"
    return False, None


def load_audit_summary(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Headline numbers of ``<run>/audit/report.json`` when it exists (read as generic JSON: keys may vary).

    Order of preference: a ``summary``/``headline`` mapping; the known headline paths of annotator's
    audit report (gate, teacher-vs-majority kappa, human alpha, accuracy, macro-F1...); otherwise the
    top-level scalar entries (and one level of nested scalars, as ``outer.inner``).
    """
    path = _run_base(run_dir) / AUDIT_REPORT
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"note": "audit/report.json exists but is not readable JSON"}, str(path)
    if not isinstance(data, dict):
        return None, str(path)
    out: dict[str, Any] = {}
    for key in ("summary", "headline", "headlines"):
        if isinstance(data.get(key), dict):
            for k, v in data[key].items():
                ok, val = _headline_value(v)
                if ok:
                    out[str(k)] = val
            if out:
                return out, str(path)
    for dotted in AUDIT_HEADLINES:
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        ok, val = _headline_value(node)
        if node is not None and ok:
            out[dotted] = round(val, 4) if isinstance(val, float) else val
    if out:
        return out, str(path)
    for k, v in data.items():
        ok, val = _headline_value(v)
        if ok:
            out[str(k)] = val
        elif isinstance(v, dict) and v and len(v) <= 12:
            for k2, v2 in v.items():
                ok2, val2 = _headline_value(v2)
                if ok2:
                    out[f"{k}.{k2}"] = val2
        if len(out) >= 40:
            break
    return out, str(path)


def _label_answer(rec: AnnotationRecord, multi_label: bool) -> list[str] | None:
    out = rec.output or {}
    if multi_label:
        labels = rec.labels if rec.labels is not None else out.get("labels")
        if labels is None and (rec.label or out.get("label")):
            labels = [rec.label or out.get("label")]
        return None if labels is None else [str(x) for x in labels]
    label = rec.label if rec.label is not None else out.get("label")
    if label is None and isinstance(out.get("labels"), list) and len(out["labels"]) == 1:
        label = out["labels"][0]
    return None if label is None else [str(label)]


def _split_strata(run_path: Path, opts: ExportOptions, label_names: list[str], multi_label: bool) -> dict[str, Hashable] | None:
    """item id -> stratum of the split: the gold label (--gold), the --stratify-by column's value, or both."""
    gold = _gold_strata(opts.gold, label_names, multi_label)
    if not opts.stratify_by:
        return gold  # type: ignore[return-value]
    from annotator.audit.slices import read_slice_column

    values, _ = read_slice_column(opts.stratify_by, _run_base(run_path))
    ids = set(values) | set(gold or {})
    return {i: (values.get(i), None if gold is None else gold.get(i)) for i in ids}


def _gold_strata(gold: Path | None, label_names: list[str], multi_label: bool) -> dict[str, str] | None:
    """item id -> gold stratum (label; multi-label: the rarest gold label) from a human label file."""
    if gold is None:
        return None
    from annotator.student.gold import load_gold

    labels = load_gold(gold, label_names or None, multi_label).labels
    keys = multilabel_strata(list(labels.values())) if multi_label else [v[0] for v in labels.values()]
    return dict(zip(labels, keys))


def _resolve_format(task: str, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if task == "label":
        return "classification" if fmt == "auto" else fmt
    if fmt == "classification":
        raise ExportError(
            f"--format classification needs a label task; this run is a {task} task (use chat or instruction)"
        )
    return "chat" if fmt == "auto" else fmt


def _prepare_out(out: Path) -> tuple[Path, set[str]]:
    """A fresh staging dir next to ``out``, and the files in ``out`` that a previous export wrote (the only ones
    this export may replace). Refuses a non-empty ``out`` without such a list: export never deletes what it did
    not write."""
    previous: set[str] = set()
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"--out {out} exists and is not a directory")
        listed = _previous_export_files(out)
        if listed is None and any(out.iterdir()):
            raise ExportError(
                f"--out {out} is not empty and has no {EXPORT_FILE} listing files an export wrote; refusing to write "
                "into it (export never deletes or overwrites files it did not write). Choose a new or empty folder."
            )
        previous = listed or set()
    staging = out.parent / f".{out.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging, previous


def _previous_export_files(out: Path) -> set[str] | None:
    """The ``files`` list of ``out/export.json`` (paths inside ``out`` only); None when there is none."""
    try:
        data = json.loads((out / EXPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        return None
    return {f for f in files if isinstance(f, str) and f and not PurePosixPath(f).is_absolute()
            and ".." not in PurePosixPath(f).parts}


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _install(staging: Path, out: Path, previous: set[str]) -> None:
    """Move the staged export into ``out``, replacing only the files a previous export listed as its own;
    everything else in ``out`` is left alone."""
    if not out.exists():
        staging.rename(out)
        return
    new = _files_under(staging)
    clash = [f for f in new if (out / f).exists() and f not in previous]
    if clash:
        raise ExportError(
            f"--out {out}: {', '.join(clash[:3])} already exist(s) and were not written by export; refusing to "
            "overwrite. Move them away or choose another folder."
        )
    for f in previous:
        target = out / f
        if target.is_file() or target.is_symlink():
            target.unlink()
    for d in sorted({(out / f).parent for f in previous}, key=lambda p: len(p.parts), reverse=True):
        while d != out and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    for f in new:
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / f, out / f)
    shutil.rmtree(staging)


def _features(task: str, fmt: str, label_names: list[str], multi_label: bool, with_rationale: bool):
    from datasets import ClassLabel, Features, Sequence, Value

    s = Value("string")
    if fmt == "classification":
        cols: dict[str, Any] = {"id": s, "text": s}
        if multi_label:
            cols["labels"] = Sequence(ClassLabel(names=label_names))
        else:
            cols["label"] = ClassLabel(names=label_names)
        cols["confidence"] = Value("float64")
        if with_rationale:
            cols["rationale"] = s
        return Features(cols)
    cols = {"id": s, "source_id": s}
    if task == "rephrase":
        cols["style"] = s
    if fmt == "chat":
        cols["messages"] = [{"role": s, "content": s}]
    else:
        cols.update(instruction=s, input=s, output=s)
    if task == "qa":
        cols["evidence"] = s
    if task == "label":
        cols["confidence"] = Value("float64")
    return Features(cols)


def _route_to_humans(routed: list[AnnotationRecord], run_path: Path, opts: ExportOptions, labels: list[str]) -> str:
    """Write the items under ``--route-below`` to a blank annotation sheet (the format of ``annotator sample``)."""
    from annotator.audit import sampling as sp

    out = Path(opts.route_out) if opts.route_out else _run_base(run_path) / "routed"
    names = sp.annotator_names(opts.route_annotators, None)
    items = [sp.Candidate(r.id, r.text, r.label or "", r.confidence) for r in routed]
    design = {"run": str(run_path), "route_below": opts.route_below, "n": len(items), "annotators": names,
              "per_item": min(len(names), 3), "note": "teacher confidence below --route-below; not a random sample"}
    files = sp.write_sheets(out, items, sp.assign(len(items), names, min(len(names), 3)), names, labels, design=design)
    return files["long"]


# --------------------------------------------------------------------------------------------- main


def export_run(run_dir: str | Path, opts: ExportOptions, log=None) -> ExportSummary:
    """Export a run directory; returns the summary (also written as ``export.json``)."""
    run_path = Path(run_dir)
    if not run_path.exists():
        raise InputDataError(f"run directory not found: {run_path}")
    if run_path.is_dir() and not (run_path / ANNOTATIONS_FILE).exists():
        raise InputDataError(
            f"{run_path} is not a run directory: no {ANNOTATIONS_FILE} (run `annotator run PIPELINE.yaml` first)"
        )
    fractions = parse_split_spec(opts.split)
    if opts.min_confidence is not None and not (0.0 <= opts.min_confidence <= 1.0):
        raise ExportError(f"--min-confidence must be between 0 and 1, got {opts.min_confidence}")
    if opts.route_below is not None and not (0.0 <= opts.route_below <= 1.0):
        raise ExportError(f"--route-below must be between 0 and 1, got {opts.route_below}")
    out = Path(opts.out) if opts.out else _run_base(run_path) / "dataset"

    try:
        manifest: RunManifest | None = read_manifest(_run_base(run_path))
    except ValueError as exc:
        raise InputDataError(f"{_run_base(run_path) / MANIFEST_FILE} is not a valid run manifest: {exc}") from None
    records = list(iter_annotations(run_path))
    if not records:
        raise ExportError(f"{run_path}: annotations.jsonl has no rows")
    notes: list[str] = []
    task = manifest.task if manifest else records[0].task
    if manifest is None:
        notes.append(f"no {MANIFEST_FILE}: labels and provenance inferred from the annotations")
    fmt = _resolve_format(task, opts.fmt)

    multi_label = bool(manifest.multi_label) if manifest else any(r.labels is not None for r in records)
    label_names: list[str] = [lab.name for lab in manifest.labels] if manifest else []
    descriptions = {lab.name: lab.description for lab in manifest.labels} if manifest else {}
    if task == "label" and not label_names:
        seen: set[str] = set()
        for rec in records:
            if rec.status == "ok":
                seen.update(_label_answer(rec, multi_label) or [])
        label_names = sorted(seen)
    counts = ExportCounts(total=len(records))
    tally = CostTally()
    for rec in records:
        tally.add(rec.cost)
    cost = tally.summary()

    # ---- filter
    kept: list[tuple[AnnotationRecord, list[str] | None]] = []
    routed: list[AnnotationRecord] = []
    known = set(label_names)
    for rec in records:
        if rec.status != "ok":
            counts.failed_excluded += 1
            continue
        if task == "label":
            answer = _label_answer(rec, multi_label)
            if answer is None or any(a not in known for a in answer) or (not multi_label and len(answer) != 1):
                counts.invalid_label_excluded += 1
                continue
            if opts.route_below is not None and rec.confidence is not None and rec.confidence < opts.route_below:
                counts.routed_to_humans += 1
                routed.append(rec)
                continue
            if opts.min_confidence is not None and rec.confidence is not None and rec.confidence < opts.min_confidence:
                counts.below_threshold_excluded += 1
                continue
            kept.append((rec, answer))
        else:
            key = "paraphrases" if task == "rephrase" else "pairs"
            if not (rec.output or {}).get(key):
                counts.empty_output_excluded += 1
                continue
            kept.append((rec, None))
    if task != "label" and opts.min_confidence is not None:
        notes.append(f"--min-confidence ignored: {task} records carry no confidence")
    if task != "label" and opts.route_below is not None:
        notes.append(f"--route-below ignored: {task} records carry no confidence")
    routed_sheet = _route_to_humans(routed, run_path, opts, label_names) if routed else None
    if not kept:
        raise ExportError(
            f"nothing to export from {run_path}: {counts.total} rows, {counts.failed_excluded} failed, "
            f"{counts.below_threshold_excluded} below --min-confidence, {counts.invalid_label_excluded} without a valid label"
            + (f", {counts.routed_to_humans} routed to humans ({routed_sheet})" if routed_sheet else "")
        )

    # ---- split: by the input row's id (seeded hash), never by the teacher's label; see export/splits.py
    strata = _split_strata(run_path, opts, label_names, multi_label)
    split_of = assign_by_id([r.id for r in records], fractions, opts.seed, strata)
    assignment = [split_of[rec.id] for rec, _ in kept]
    split_names = list(fractions)
    counts.per_split_items = split_counts(assignment, split_names)
    empty = [s for s, n in counts.per_split_items.items() if n == 0 and fractions[s] > 0]
    if empty:
        notes.append(f"too few items for split(s) {', '.join(empty)}: they are empty")

    # ---- rows
    with_rationale = (
        task == "label"
        and fmt == "classification"
        and any(isinstance((r.output or {}).get("rationale"), str) for r, _ in kept)
    )
    columns_by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in split_names}
    for (rec, answer), split in zip(kept, assignment):
        if task == "label" and fmt == "classification":
            row: dict[str, Any] = {"id": rec.id, "text": rec.text, "confidence": rec.confidence}
            if multi_label:
                row["labels"] = list(answer or [])
            else:
                row["label"] = (answer or [""])[0]
            if with_rationale:
                rat = (rec.output or {}).get("rationale")
                row["rationale"] = rat if isinstance(rat, str) else None
            rows = [row]
        elif task == "label":
            rows = label_rows(rec, fmt, label_names, descriptions, multi_label, answer or [])
        elif task == "rephrase":
            rows = rephrase_rows(rec, fmt)
        else:
            rows = qa_rows(rec, fmt)
        for r in rows:
            r["_split_labels"] = answer
        columns_by_split[split].extend(rows)

    # ---- distributions
    label_dist: dict[str, dict[str, int]] = {}
    style_dist: dict[str, dict[str, int]] = {}
    mean_conf: dict[str, float | None] = {}
    for split in [*split_names, "all"]:
        rows = [r for s in split_names for r in columns_by_split[s]] if split == "all" else columns_by_split[split]
        if task == "label":
            c = Counter(lab for r in rows for lab in (r["_split_labels"] or []))
            label_dist[split] = {name: c.get(name, 0) for name in label_names}
            confs = [r["confidence"] for r in rows if r.get("confidence") is not None]
            mean_conf[split] = round(sum(confs) / len(confs), 4) if confs else None
        elif task == "rephrase":
            style_dist[split] = dict(sorted(Counter(r["style"] for r in rows).items()))
    for rows in columns_by_split.values():
        for r in rows:
            del r["_split_labels"]

    # ---- build and write
    from datasets import Dataset, DatasetDict

    features = _features(task, fmt, label_names, multi_label, with_rationale)
    dsd = DatasetDict()
    for split in split_names:
        rows = columns_by_split[split]
        data = {col: [r.get(col) for r in rows] for col in features}
        dsd[split] = Dataset.from_dict(data, features=features)
    counts.per_split = {s: len(dsd[s]) for s in split_names}
    counts.exported_items = len(kept)
    counts.exported_rows = sum(counts.per_split.values())

    audit_summary, audit_path = load_audit_summary(run_path)
    summary = ExportSummary(
        run_dir=str(run_path),
        out=str(out),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        task=task,
        format=fmt,
        columns=list(features),
        label_names=label_names if task == "label" else [],
        multi_label=multi_label if task == "label" else False,
        seed=opts.seed,
        split_fractions=fractions,
        split_method="item id" + (", gold strata" if opts.gold else "")
        + (f", {opts.stratify_by} strata" if opts.stratify_by else ""),
        gold=None if opts.gold is None else str(opts.gold),
        stratify_by=opts.stratify_by,
        min_confidence=opts.min_confidence,
        route_below=opts.route_below,
        routed_sheet=routed_sheet,
        counts=counts,
        label_distribution=label_dist,
        style_distribution=style_dist,
        mean_confidence=mean_conf,
        split_bytes={s: int(dsd[s].data.nbytes) for s in split_names},
        teacher_model=manifest.model if manifest else records[0].model,
        teacher_cost_usd=cost.total_usd if cost else None,
        teacher_cost_per_item_usd=cost.per_item_usd if cost else None,
        backend=manifest.backend if manifest else None,
        template_path=manifest.template_path if manifest else None,
        template_sha256=manifest.template_sha256 if manifest else records[0].prompt_hash,
        pipeline_name=manifest.pipeline_name if manifest else None,
        pipeline_path=manifest.pipeline_path if manifest else None,
        pipeline_config=manifest.config if manifest else {},
        annotator_version=manifest.annotator_version if manifest else None,
        answers=manifest.answers if manifest else None,
        history=(manifest.history or [manifest.invocation()]) if manifest else [],
        audit_summary=audit_summary,
        audit_report=audit_path,
        notes=notes,
    )

    import datasets

    from annotator.export.card import render_card

    staging, previous = _prepare_out(out)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dsd.save_to_disk(str(staging))
        (staging / PARQUET_DIR).mkdir()
        for split in split_names:
            dsd[split].to_parquet(str(staging / PARQUET_DIR / f"{split}.parquet"))
        (staging / CARD_FILE).write_text(render_card(summary, features, descriptions), encoding="utf-8")
        summary.files = [*_files_under(staging), EXPORT_FILE]
        (staging / EXPORT_FILE).write_text(summary.model_dump_json(indent=2), encoding="utf-8")
        _install(staging, out, previous)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if bars:
            datasets.enable_progress_bars()
    if log:
        log(f"wrote {counts.exported_rows} rows to {out}")

    if opts.push_to_hub:
        try:
            dsd.push_to_hub(opts.push_to_hub, private=opts.private)
        except Exception as exc:  # noqa: BLE001 - network, auth, repo errors: one clear line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"dataset saved to {out}, but push to hub {opts.push_to_hub!r} failed: {first}") from None
        summary.pushed_to = opts.push_to_hub
        (out / EXPORT_FILE).write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    return summary
