"""Build a ``datasets.DatasetDict`` from a pipeline run and write it (save_to_disk + Parquet + card)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from annotator.costs import CostTally
from annotator.errors import InputDataError
from annotator.export.card import render_card
from annotator.export.splits import (
    assign_by_id,
    multilabel_strata,
    parse_split_spec,
    split_counts,
)
from annotator.export.summary import (
    AUDIT_REPORT,
    CARD_FILE,
    EXPORT_FILE,
    FORMATS,
    PARQUET_DIR,
    ExportCounts,
    ExportError,
    ExportOptions,
    ExportSummary,
)
from annotator.guard import check_distinct
from annotator.records import (
    ANNOTATIONS_FILE,
    MANIFEST_FILE,
    AnnotationRecord,
    RunManifest,
    iter_annotations,
    read_manifest,
)
from annotator.rundir import atomic_write_text, output_error
from annotator.tasks import ExportContext, Exporter, ExportItem, get_task_class

if TYPE_CHECKING:
    from annotator.audit.results import AuditReport

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------- helpers


def _run_base(run_dir: Path) -> Path:
    return run_dir if run_dir.is_dir() else run_dir.parent


def load_audit_summary(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Headline numbers of ``<run>/audit/report.json`` (read as :class:`AuditReport`) when it exists.

    Keys are the report's dotted paths (``gate.passed``, ``agreement.teacher_vs_majority.cohen_kappa``...);
    estimates give their value, floats are rounded to 4 digits, unset scalars are left out. A report.json that
    is not an audit report raises :class:`ExportError` naming the file.
    """
    from annotator.audit.results import AuditReport

    path = _run_base(run_dir) / AUDIT_REPORT
    if not path.is_file():
        return None, None
    try:
        report = AuditReport.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ExportError(f"{path}: cannot read the audit report: {exc.strerror or exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise ExportError(
            f"{path} is not an audit report ({where}: {err['msg']}; {exc.error_count()} problem(s)): run "
            "`annotator audit` again or move the file away"
        ) from None
    return _audit_headlines(report), str(path)


def _audit_headlines(r: AuditReport) -> dict[str, Any]:
    from annotator.audit.results import Estimate

    agreement = r.agreement
    values: dict[str, Any] = {
        "gate.metric": r.gate.metric,
        "gate.value": r.gate.value,
        "gate.min_agreement": r.gate.min_agreement,
        "gate.passed": r.gate.passed,
        "alt_test_verdict": r.alt_test_verdict,
        "coverage.evaluated_items": r.coverage.evaluated_items,
        "coverage.teacher_failed": r.coverage.teacher_failed,
        "classification.accuracy": r.classification.accuracy,
        "classification.macro_f1": r.classification.macro_f1,
        "agreement.teacher_vs_majority.cohen_kappa": agreement.teacher_vs_majority.cohen_kappa,
        "agreement.teacher_vs_majority.krippendorff_alpha": agreement.teacher_vs_majority.krippendorff_alpha,
        "agreement.human_human.krippendorff_alpha": agreement.human_human.krippendorff_alpha,
        "agreement.human_human.mean_pairwise_cohen_kappa": agreement.human_human.mean_pairwise_cohen_kappa,
        "agreement.teacher_human.mean_cohen_kappa": agreement.teacher_human.mean_cohen_kappa,
        "agreement.teacher_human.alpha_teacher_substituted": agreement.teacher_human.alpha_teacher_substituted,
        "low_agreement_categories": ", ".join(r.low_agreement_categories) or "none",
    }
    out: dict[str, Any] = {}
    for key, v in values.items():
        if isinstance(v, Estimate):
            v = v.value
        elif v is None:
            continue
        out[key] = round(v, 4) if isinstance(v, float) else v
    return out


def _split_strata(
    run_path: Path, opts: ExportOptions, label_names: list[str], multi_label: bool
) -> dict[str, Hashable] | None:
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
    return {
        f
        for f in files
        if isinstance(f, str) and f and not PurePosixPath(f).is_absolute() and ".." not in PurePosixPath(f).parts
    }


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


def _route_to_humans(routed: list[AnnotationRecord], run_path: Path, opts: ExportOptions, labels: list[str]) -> str:
    """Write the items under ``--route-below`` to a blank annotation sheet (the format of ``annotator sample``)."""
    from annotator.audit import sampling as sp

    out = Path(opts.route_out) if opts.route_out else _run_base(run_path) / "routed"
    names = sp.annotator_names(opts.route_annotators, None, option="--route-annotators")
    items = [sp.Candidate(r.id, r.text, r.label or "", r.confidence) for r in routed]
    design = {
        "run": str(run_path),
        "route_below": opts.route_below,
        "n": len(items),
        "annotators": names,
        "per_item": min(len(names), 3),
        "note": "teacher confidence below --route-below; not a random sample",
    }
    files = sp.write_sheets(
        out, items, sp.assign(len(items), names, min(len(names), 3)), names, labels, design=design, command="export"
    )
    return files["long"]


# --------------------------------------------------------------------------------------------- steps


@dataclass
class _Run:
    """What export reads from a run directory."""

    path: Path
    manifest: RunManifest | None
    records: list[AnnotationRecord]
    task: str


def _check_options(run_path: Path, opts: ExportOptions) -> dict[str, float]:
    """Refuse a missing run directory and out-of-range options; return the split fractions."""
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
    if opts.fmt not in FORMATS:
        raise ExportError(f"unknown --format {opts.fmt!r}; choose one of {', '.join(FORMATS)}")
    return fractions


def _read_run(run_path: Path, notes: list[str]) -> _Run:
    manifest: RunManifest | None = read_manifest(_run_base(run_path))  # one line when it is not a manifest
    records = list(iter_annotations(run_path))
    if not records and manifest is not None and manifest.cascade is not None:
        c = manifest.cascade
        raise ExportError(
            f"{run_path}: the cascade kept no row, so there is nothing to export: its "
            f"{c.rows_to_humans:,} rows are in its human queue ({c.human_queue})"
            + ("" if c.certified else f". {c.statement}")
        )
    if not records:
        raise ExportError(f"{run_path}: annotations.jsonl has no rows")
    if manifest is None:
        notes.append(f"no {MANIFEST_FILE}: labels and provenance inferred from the annotations")
    return _Run(run_path, manifest, records, manifest.task if manifest else records[0].task)


def _make_exporter(run: _Run, fmt: str) -> Exporter:
    """The run's task's exporter, for ``fmt`` (``auto``: the task's first format)."""
    task_cls = get_task_class(run.task)
    formats = task_cls.exporter.formats
    if fmt == "auto":
        fmt = formats[0]
    elif fmt not in formats:
        raise ExportError(f"--format {fmt} does not fit a {run.task} task (use {' or '.join(formats)})")
    m = run.manifest
    ctx = ExportContext(
        task=run.task,
        fmt=fmt,
        label_names=[lab.name for lab in m.labels] if m else [],
        descriptions={lab.name: lab.description for lab in m.labels} if m else {},
        multi_label=bool(m.multi_label) if m else any(r.labels is not None for r in run.records),
    )
    exporter = task_cls.exporter(ctx)
    exporter.prepare(run.records)
    return exporter


def _select(
    run: _Run, exporter: Exporter, opts: ExportOptions, counts: ExportCounts, notes: list[str]
) -> tuple[list[ExportItem], list[AnnotationRecord]]:
    """The items to export and the records routed to humans (--route-below); counts what is left out."""
    kept: list[ExportItem] = []
    routed: list[AnnotationRecord] = []
    for rec in run.records:
        if rec.status != "ok":
            counts.failed_excluded += 1
            continue
        item = exporter.keep(rec)
        if isinstance(item, str):
            setattr(counts, item, getattr(counts, item) + 1)
            continue
        conf = rec.confidence if exporter.has_confidence else None
        if opts.route_below is not None and conf is not None and conf < opts.route_below:
            counts.routed_to_humans += 1
            routed.append(rec)
            continue
        if opts.min_confidence is not None and conf is not None and conf < opts.min_confidence:
            counts.below_threshold_excluded += 1
            continue
        kept.append(item)
    if not exporter.has_confidence:
        for flag, value in (("--min-confidence", opts.min_confidence), ("--route-below", opts.route_below)):
            if value is not None:
                notes.append(f"{flag} ignored: {run.task} records carry no confidence")
    return kept, routed


def _split(
    run: _Run,
    kept: list[ExportItem],
    exporter: Exporter,
    opts: ExportOptions,
    fractions: dict[str, float],
    counts: ExportCounts,
    notes: list[str],
) -> dict[str, list[ExportItem]]:
    """Deal the kept items into splits by the input row's id (seeded hash), never by the teacher's label."""
    ctx = exporter.ctx
    strata = _split_strata(run.path, opts, ctx.label_names, ctx.multi_label)
    split_of = assign_by_id([r.id for r in run.records], fractions, opts.seed, strata)
    by_split: dict[str, list[ExportItem]] = {s: [] for s in fractions}
    for item in kept:
        by_split[split_of[item.record.id]].append(item)
    counts.per_split_items = split_counts([split_of[it.record.id] for it in kept], list(fractions))
    empty = [s for s, n in counts.per_split_items.items() if n == 0 and fractions[s] > 0]
    if empty:
        notes.append(f"too few items for split(s) {', '.join(empty)}: they are empty")
    return by_split


def build_dataset(
    exporter: Exporter, rows_by_split: dict[str, list[dict[str, Any]]], cascade: bool = False
) -> tuple[Any, Any]:
    """The ``DatasetDict`` of the rows, and its features (a cascade run's rows also carry their ``stage``)."""
    from datasets import Dataset, DatasetDict, Value

    features = exporter.features()
    if cascade:
        features["stage"] = Value("string")
    dsd = DatasetDict()
    for split, rows in rows_by_split.items():
        data = {col: [r.get(col) for r in rows] for col in features}
        dsd[split] = Dataset.from_dict(data, features=features)
    return dsd, features


def _summary(
    run: _Run,
    exporter: Exporter,
    opts: ExportOptions,
    out: Path,
    fractions: dict[str, float],
    counts: ExportCounts,
    dsd: Any,
    features: Any,
    statistics: dict[str, Any],
    routed_sheet: str | None,
    notes: list[str],
) -> ExportSummary:
    m, first = run.manifest, run.records[0]
    tally = CostTally()
    for rec in run.records:
        tally.add(rec.cost)
    cost = tally.summary()
    label_names, multi_label = exporter.summary_labels()
    audit_summary, audit_path = load_audit_summary(run.path)
    return ExportSummary(
        run_dir=str(run.path),
        out=str(out),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        task=run.task,
        format=exporter.ctx.fmt,
        columns=list(features),
        label_names=label_names,
        multi_label=multi_label,
        seed=opts.seed,
        split_fractions=fractions,
        split_method="item id"
        + (", gold strata" if opts.gold else "")
        + (f", {opts.stratify_by} strata" if opts.stratify_by else ""),
        gold=None if opts.gold is None else str(opts.gold),
        stratify_by=opts.stratify_by,
        min_confidence=opts.min_confidence,
        route_below=opts.route_below,
        routed_sheet=routed_sheet,
        counts=counts,
        **statistics,
        split_bytes={s: int(dsd[s].data.nbytes) for s in dsd},
        teacher_model=m.model if m else first.model,
        teacher_cost_usd=cost.total_usd if cost else None,
        teacher_cost_per_item_usd=cost.per_item_usd if cost else None,
        backend=m.backend if m else None,
        template_path=m.template_path if m else None,
        template_sha256=m.template_sha256 if m else first.prompt_hash,
        pipeline_name=m.pipeline_name if m else None,
        pipeline_path=m.pipeline_path if m else None,
        pipeline_config=m.config if m else {},
        annotator_version=m.annotator_version if m else None,
        answers=m.answers if m else None,
        history=(m.history or [m.invocation()]) if m else [],
        cascade=m.cascade if m else None,
        audit_summary=audit_summary,
        audit_report=audit_path,
        notes=notes,
    )


def _write(dsd: Any, summary: ExportSummary, features: Any, descriptions: dict[str, str], out: Path) -> None:
    """Stage the dataset (Arrow, Parquet, card, export.json) next to ``out``, then install it (see _install)."""
    import datasets

    staging, previous = _prepare_out(out)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dsd.save_to_disk(str(staging))
        (staging / PARQUET_DIR).mkdir()
        for split in dsd:
            dsd[split].to_parquet(str(staging / PARQUET_DIR / f"{split}.parquet"))
        atomic_write_text(staging / CARD_FILE, render_card(summary, features, descriptions))
        summary.files = [*_files_under(staging), EXPORT_FILE]
        atomic_write_text(staging / EXPORT_FILE, summary.model_dump_json(indent=2))
        _install(staging, out, previous)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):  # full disk, permissions: one line naming the output
            raise output_error(exc, exc.filename or out, kept="nothing of this export was installed") from None
        raise
    finally:
        if bars:
            datasets.enable_progress_bars()


def _push(dsd: Any, summary: ExportSummary, repo: str, private: bool, out: Path) -> None:
    """Push the dataset to the Hub repo ``repo``; record it in export.json."""
    try:
        dsd.push_to_hub(repo, private=private)
    except Exception as exc:  # noqa: BLE001 - network, auth, repo errors: one clear line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"dataset saved to {out}, but push to hub {repo!r} failed: {first}") from None
    summary.pushed_to = repo
    atomic_write_text(out / EXPORT_FILE, summary.model_dump_json(indent=2))


# --------------------------------------------------------------------------------------------- main


def export_run(run_dir: str | Path, opts: ExportOptions) -> ExportSummary:
    """Export a run directory; returns the summary (also written as ``export.json``).

    Steps: check the options, read the run, let the run's task (its :class:`~annotator.tasks.Exporter`) keep
    records and make rows, split by item id, build the ``DatasetDict``, write it with its card and summary.
    """
    run_path = Path(run_dir)
    fractions = _check_options(run_path, opts)
    out = Path(opts.out) if opts.out else _run_base(run_path) / "dataset"
    route = (
        (Path(opts.route_out) if opts.route_out else _run_base(run_path) / "routed")
        if opts.route_below is not None
        else None
    )
    check_distinct(
        "export",
        {"--out": out, "--route-out": route},
        {"run directory": _run_base(run_path), "annotations file": run_path, "--gold file": opts.gold},
    )
    notes: list[str] = []
    run = _read_run(run_path, notes)
    exporter = _make_exporter(run, opts.fmt)
    counts = ExportCounts(total=len(run.records))
    kept, routed = _select(run, exporter, opts, counts, notes)
    routed_sheet = _route_to_humans(routed, run_path, opts, exporter.ctx.label_names) if routed else None
    if not kept:
        raise ExportError(
            f"nothing to export from {run_path}: {counts.total} rows, {counts.failed_excluded} failed, "
            f"{counts.below_threshold_excluded} below --min-confidence, "
            f"{counts.invalid_label_excluded} without a valid label"
            + (f", {counts.routed_to_humans} routed to humans ({routed_sheet})" if routed_sheet else "")
        )
    exporter.finish_selection(kept)
    items_by_split = _split(run, kept, exporter, opts, fractions, counts, notes)
    cascade = run.manifest is not None and run.manifest.cascade is not None
    rows_by_split = {
        s: [{**row, **({"stage": it.record.stage} if cascade else {})} for it in items for row in exporter.rows(it)]
        for s, items in items_by_split.items()
    }
    dsd, features = build_dataset(exporter, rows_by_split, cascade)
    counts.per_split = {s: len(dsd[s]) for s in dsd}
    counts.exported_items = len(kept)
    counts.exported_rows = sum(counts.per_split.values())
    statistics = exporter.statistics(
        {**items_by_split, "all": [it for items in items_by_split.values() for it in items]},
        {**rows_by_split, "all": [r for rows in rows_by_split.values() for r in rows]},
    )
    summary = _summary(run, exporter, opts, out, fractions, counts, dsd, features, statistics, routed_sheet, notes)
    _write(dsd, summary, features, exporter.ctx.descriptions, out)
    log.info("wrote %d rows to %s", counts.exported_rows, out)
    if opts.push_to_hub:
        _push(dsd, summary, opts.push_to_hub, opts.private, out)
    return summary
