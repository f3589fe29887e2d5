"""Orchestrate an audit: load, compute every section (:mod:`annotator.audit.compute`), audit the slices, write
report.json / report.md / PNGs; the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annotator.audit.alt_test import verdict
from annotator.audit.compute import GATE_METRICS, AuditOptions, compute
from annotator.audit.dataset import AuditData, build
from annotator.audit.humans import load_humans
from annotator.audit.report import render_markdown
from annotator.audit.results import AuditReport
from annotator.audit.slices import audit_slices, read_slice_column
from annotator.audit.teacher import load_teacher
from annotator.errors import GateFailed, InputDataError
from annotator.guard import check_distinct, check_folder, has_keys
from annotator.rundir import atomic_write_files, output_error


def validate_options(opts: AuditOptions) -> None:
    if opts.gate_metric not in GATE_METRICS:
        raise InputDataError(f"--gate-metric must be one of {', '.join(GATE_METRICS)}; got {opts.gate_metric!r}")
    if not 0 < opts.alpha < 1:
        raise InputDataError(f"--alpha must be between 0 and 1; got {opts.alpha}")
    if not 0 <= opts.epsilon < 1:
        raise InputDataError(f"--epsilon must be in [0, 1); got {opts.epsilon}")
    if opts.alt_test_min_items < 2:
        raise InputDataError(
            f"--alt-test-min-items must be >= 2 (a t-test needs 2 items); got {opts.alt_test_min_items}"
        )
    if not 0 <= opts.bootstrap <= 1_000_000:
        raise InputDataError(f"--bootstrap must be between 0 and 1,000,000; got {opts.bootstrap}")
    if opts.min_agreement is not None and not -1 <= opts.min_agreement <= 1:  # NaN too: it would fail every gate
        raise InputDataError(f"--min-agreement must be between -1 and 1; got {opts.min_agreement}")
    if opts.min_slice_items < 1:
        raise InputDataError(f"--min-slice-items must be >= 1; got {opts.min_slice_items}")


REPORT_JSON, REPORT_MD = "report.json", "report.md"
AUDIT_FILES = (
    REPORT_JSON,
    REPORT_MD,
    "confusion_matrix.png",
    "per_class_agreement.png",
    "calibration.png",
    "agreement_by_slice.png",
)
is_audit_report = has_keys("inputs", "coverage", "alt_test", "gate")
"""The ownership test of an audit folder (:func:`annotator.guard.check_folder`): its report.json is a report."""


def check_out(opts: AuditOptions) -> None:
    """The output guard (see :mod:`annotator.guard`): ``--out`` is neither input, and its files are replaced only
    in a folder an audit wrote before."""
    if opts.out is None:
        return
    out = Path(opts.out)
    check_distinct("audit", {"--out": out}, {"--humans file": Path(opts.humans), "--teacher run": Path(opts.teacher)})
    check_folder(out, "audit", AUDIT_FILES, REPORT_JSON, is_audit_report, claim=False)


def write_outputs(report: AuditReport, d: AuditData, out: Path, plots: bool = True) -> None:
    """The plots, then report.md and report.json (together, atomically: report.json is what `make` waits for)."""
    try:
        _write_outputs(report, d, out, plots)
    except OSError as exc:  # full disk, permissions: one line; no report.json means no finished audit
        raise output_error(
            exc, exc.filename or out, kept="no report.json was written: the audit is not finished"
        ) from None


def _write_outputs(report: AuditReport, d: AuditData, out: Path, plots: bool) -> None:
    check_folder(out, "audit", AUDIT_FILES, REPORT_JSON, is_audit_report)  # and claim it, before the first plot
    files = {"report_json": str(out / "report.json"), "report_md": str(out / "report.md")}
    if plots:
        from annotator.audit import plots as pl

        cm = np.array(report.classification.confusion_matrix.matrix)
        pl.confusion_matrix_png(cm, d.labels, out / "confusion_matrix.png")
        files["confusion_matrix"] = str(out / "confusion_matrix.png")
        cats = report.per_category
        pl.per_class_agreement_png(
            d.labels,
            [c.human_specific_agreement for c in cats],
            [c.teacher_specific_agreement for c in cats],
            [c.low_human_agreement for c in cats],
            out / "per_class_agreement.png",
        )
        files["per_class_agreement"] = str(out / "per_class_agreement.png")
        if report.calibration.available:
            pl.calibration_png(report.calibration, out / "calibration.png")
            files["calibration"] = str(out / "calibration.png")
        if report.slices is not None:
            pl.agreement_by_slice_png(report.slices, out / "agreement_by_slice.png")
            files["agreement_by_slice"] = str(out / "agreement_by_slice.png")
    report.files = files
    atomic_write_files({out / REPORT_MD: render_markdown(report), out / REPORT_JSON: report.model_dump_json(indent=2)})


def run_audit(opts: AuditOptions) -> AuditReport:
    """Run the audit and write the outputs (when ``opts.out`` is set). Does not apply the gate: see ``check_gate``."""
    validate_options(opts)
    check_out(opts)
    humans = load_humans(opts.humans, not_annotators=(opts.by,) if opts.by else ())
    teacher = load_teacher(opts.teacher)
    d = build(humans, teacher, level=opts.level, labels=opts.labels)
    report = compute(d, opts, humans.format, teacher.source, teacher.model)
    if opts.by:
        values, source = read_slice_column(opts.by, Path(opts.teacher), Path(opts.humans))
        report.slices = audit_slices(
            d, opts, opts.by, values, source, opts.min_slice_items, humans.format, teacher.source
        )
    _note_dropped_annotators(report, humans.dropped_annotators)
    report.warnings.extend(teacher.notes)
    if teacher.cost is not None:
        report.inputs.teacher_cost_usd = teacher.cost.total_usd
        report.inputs.teacher_cost_per_item_usd = teacher.cost.per_item_usd
    if report.calibration.available and report.calibration.reason:
        report.warnings.append(f"calibration: {report.calibration.reason}")
    if opts.out is not None:
        write_outputs(report, d, Path(opts.out), plots=opts.plots)
    return report


def _note_dropped_annotators(report: AuditReport, dropped: list[str]) -> None:
    """Say in the report (JSON and Markdown) that annotators whose ratings are all empty were left out, and
    what that did to the alt-test when it could not run or is weak."""
    if not dropped:
        return
    names = ", ".join(repr(a) for a in dropped)
    report.warnings.insert(0, f"human annotator(s) {names} left out: every rating is empty")
    if not report.alt_test.ran:
        report.alt_test.reason = (report.alt_test.reason or "") + f" ({names} left out: every rating is empty)"
        report.alt_test_verdict = verdict(report.alt_test)
    elif report.alt_test.weak:
        report.alt_test.warnings.append(f"{names} left out of the alt-test: every rating is empty")


def check_gate(report: AuditReport) -> None:
    g = report.gate
    if g.min_agreement is None or g.passed:
        return
    shown = "undefined" if g.value is None else f"{g.value:.3f}"
    raise GateFailed(f"audit gate failed: {g.metric} = {shown} < --min-agreement {g.min_agreement:g} ({g.description})")
