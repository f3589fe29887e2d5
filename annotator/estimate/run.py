"""Orchestrate ``annotator estimate``: read the humans and each teacher, estimate every slice, write the report."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from annotator import __version__
from annotator.audit.compare import teacher_names
from annotator.audit.compute import _none
from annotator.audit.humans import HumanAnnotations, load_humans
from annotator.audit.results import Estimate
from annotator.audit.teacher import TeacherAnnotations, load_teacher
from annotator.errors import InputDataError, RunDirError
from annotator.estimate.data import DESIGN, Joined, join, same_labels, slice_of
from annotator.estimate.report import EstimateReport, LabelShare, SliceEstimate, TeacherEstimates, render_markdown
from annotator.estimate.stats import ShareEstimates, share_estimates, slice_estimates
from annotator.guard import check_distinct, check_folder, has_keys
from annotator.rundir import atomic_write_files

log = logging.getLogger(__name__)

ALL = "(all)"
REPORT_JSON = "estimate.json"
REPORT_MD = "estimate.md"
FOREST_PNG = "forest.png"
OUTPUT_FILES = (REPORT_JSON, REPORT_MD, FOREST_PNG)
LOCK_FILE = ".estimate.lock"
is_estimate_report = has_keys("teachers", "labels", "assumptions")
"""The ownership test of an estimate folder (:func:`annotator.guard.check_folder`): its estimate.json is a report."""
MIN_HUMANS = 2  # a variance needs two items
MIN_LABEL_HUMANS = 20  # fewer human items with a label: its normal interval may undercover (docs/estimate.md)
ASSUMPTIONS = [
    "The population is every item of the teacher run with an ok label; failed rows are outside it (their share is "
    "not estimated: if the teacher fails more often on some label, the shares describe the labelled items only).",
    "An item's human label is the majority of its ratings; a tied vote is split evenly between the tied labels.",
    "The human labels are the truth the shares are about: humans who err the same way bias the estimate.",
    "Without an inclusion_prob column the human items are a simple random sample of the population (each item "
    "equally likely); with it, items of equal probability are a stratum drawn without replacement (the designs of "
    "`annotator sample`), every item of the population had a probability above 0, and drawn items left unlabelled "
    "are missing at random within their stratum (the probabilities are then scaled by the response rate).",
    "The intervals are normal approximations (central limit theorem), their variance computed with half an item "
    "added to each cell of the human x teacher table (Agresti & Min 2005), which keeps them honest when the sample "
    "holds few disagreements; a label with fewer than 20 (effective) human items is noted.",
    "Each label has its own weight lambda of the teacher's labels, tuned on the whole human sample (slices use it "
    "too), so the corrected shares add up to 1 only approximately.",
]


@dataclass
class EstimateOptions:
    humans: Path
    teachers: list[Path]
    out: Path | None = None
    labels: list[str] | None = None
    by: list[str] | None = None
    min_slice_humans: int = 30
    confidence: float = 0.95
    plots: bool = True


def label_shares(e: ShareEstimates, labels: list[str]) -> list[LabelShare]:
    """The per-label numbers of one slice as report rows."""
    out = []
    for k, lab in enumerate(labels):
        h_width = e.human_high[k] - e.human_low[k]
        ratio = (e.corrected_high[k] - e.corrected_low[k]) / h_width if h_width > 0 else math.nan
        out.append(
            LabelShare(
                label=lab,
                teacher_share=float(e.raw[k]),
                humans_with_label=float(e.label_humans[k]),
                corrected=Estimate(
                    value=_none(e.corrected[k]), ci_low=_none(e.corrected_low[k]), ci_high=_none(e.corrected_high[k])
                ),
                corrected_se=_none(e.corrected_se[k]),
                lam=_none(e.lam[k]),
                human_only=Estimate(
                    value=_none(e.human[k]), ci_low=_none(e.human_low[k]), ci_high=_none(e.human_high[k])
                ),
                human_only_se=_none(e.human_se[k]),
                effective_human_labels=_none(e.effective_humans[k]),
                width_ratio=_none(ratio),
            )
        )
    return out


def _few(e: ShareEstimates, labels: list[str], where: str) -> list[str]:
    """A note for the labels of an estimate that too few human items carry for the normal approximation (with
    unequal inclusion probabilities: Kish's effective number of them, :func:`~annotator.estimate.stats.kish_count`)."""
    few = [
        f"{lab} ({e.label_effective[k]:.3g})" for k, lab in enumerate(labels) if e.label_effective[k] < MIN_LABEL_HUMANS
    ]
    return (
        [
            f"{where}: fewer than {MIN_LABEL_HUMANS} human items (effective number under the weights) have "
            f"{', '.join(few)}: the interval of a rare label may cover less often than stated; label more items"
        ]
        if few
        else []
    )


def estimate_slice(
    j: Joined, name: str, in_slice: np.ndarray, size: int, raw: np.ndarray, opts: EstimateOptions, lam_all: np.ndarray
) -> SliceEstimate:
    """One ``--by`` slice (``in_slice``: which human items are in it; ``size`` items of the run with the teacher's
    shares ``raw``), with the whole sample's power tuning; too small below ``--min-slice-humans`` human items."""
    n_humans = int(in_slice.sum())
    if n_humans < max(opts.min_slice_humans, MIN_HUMANS):
        return SliceEstimate(slice=name, population=size, n_humans=n_humans, too_small=True)
    e = slice_estimates(j.Y, j.F[j.rows], j.prob, in_slice, raw, size, lam_all, opts.confidence)
    j.notes.extend(_few(e, j.labels, f"slice {name}"))
    return SliceEstimate(
        slice=name,
        population=size,
        n_humans=n_humans,
        implied_population=e.n_hat if j.design == DESIGN else None,
        shares=label_shares(e, j.labels),
    )


def estimate_slices(
    j: Joined, slice_names: list[str], opts: EstimateOptions, lam_all: np.ndarray
) -> list[SliceEstimate]:
    """Every value of the ``--by`` column(s), in sorted order; the population's sizes and teacher shares are counted
    in one pass (a column with a value per item makes as many slices as items)."""
    values, codes = np.unique(np.asarray(slice_names, dtype=str), return_inverse=True)
    codes = codes.reshape(-1)
    sizes = np.bincount(codes, minlength=len(values))
    raw = np.zeros((len(values), len(j.labels)))
    np.add.at(raw, codes, j.F)
    human_codes = codes[j.rows]
    return [
        estimate_slice(j, str(value), human_codes == s, int(sizes[s]), raw[s] / sizes[s], opts, lam_all)
        for s, value in enumerate(values)
    ]


def _teacher(
    name: str, path: Path, teacher: TeacherAnnotations, j: Joined, opts: EstimateOptions, slice_names: list[str] | None
) -> TeacherEstimates:
    if len(j.rows) < MIN_HUMANS:
        raise InputDataError(
            f"{len(j.rows)} human item(s) in the population of {path}: a share's interval needs at least {MIN_HUMANS}"
        )
    e = share_estimates(
        j.Y, j.F[j.rows], j.prob, np.ones(len(j.rows), dtype=bool), j.F.mean(axis=0), len(j.ids), opts.confidence
    )
    j.notes.extend(_few(e, j.labels, "whole corpus"))
    overall = SliceEstimate(
        slice=ALL,
        population=len(j.ids),
        n_humans=len(j.rows),
        implied_population=e.n_hat if j.design == DESIGN else None,
        shares=label_shares(e, j.labels),
    )
    slices = None
    if slice_names is not None:
        slices = estimate_slices(j, slice_names, opts, e.lam)
        small = [s.slice for s in slices if s.too_small]
        if small:
            j.notes.append(
                f"{len(small)} slice(s) with fewer than {opts.min_slice_humans} human items are too small "
                f"to estimate: {', '.join(small[:10])}" + (" ..." if len(small) > 10 else "")
            )
    method = (
        "design-based: difference estimator weighted by 1/inclusion_prob (DSL, Egami et al. 2023; "
        "Confidence-Driven Inference, Gligoric et al. 2025), power-tuned"
        if j.design == DESIGN
        else "PPI++ (Angelopoulos, Duchi & Zrnic 2023), power-tuned, finite-population variance"
    )
    return TeacherEstimates(
        name=name,
        teacher=str(path),
        model=teacher.model,
        population=len(j.ids),
        failed=j.failed,
        human_items=len(j.rows),
        tied_items=j.tied,
        design=j.design,
        method=method,
        overall=overall,
        slices=slices,
        notes=j.notes,
    )


def _joins(humans: HumanAnnotations, teachers: list[TeacherAnnotations], labels: list[str] | None) -> list[Joined]:
    """One join per teacher on ONE label set, in one order (the side-by-side table and the plot pair the teachers'
    shares label by label): --labels, else the first teacher's run.json labels, else every label observed (in the
    humans and any teacher). A teacher with other labels is refused, naming them."""
    first = join(humans, teachers[0], labels)
    if len(teachers) > 1 and first.label_source == "observed":
        seen = {lab for t in teachers for lab in t.labels.values()}
        first = join(humans, teachers[0], first.labels + sorted(seen - set(first.labels)))
        first.label_source = "observed"
    for t in teachers[1:]:
        same_labels(t, teachers[0], first, explicit=labels is not None)
    rest = [join(humans, t, first.labels) for t in teachers[1:]]
    for j in rest:
        j.label_source = first.label_source
    return [first, *rest]


def validate_options(opts: EstimateOptions) -> None:
    if not 0 < opts.confidence < 1:
        raise InputDataError(f"--confidence must be between 0 and 1 (e.g. 0.95); got {opts.confidence}")
    if opts.min_slice_humans < MIN_HUMANS:
        raise InputDataError(f"--min-slice-humans must be at least {MIN_HUMANS}; got {opts.min_slice_humans}")
    repeated = sorted({c for c in opts.by or () if (opts.by or []).count(c) > 1})
    if repeated:
        raise InputDataError(f"--by {repeated[0]!r} is given twice; repeat --by only to cross different columns")
    if opts.out is not None:
        check_out(opts.out, opts.humans, opts.teachers)


def check_out(out: Path, humans: Path, teachers: list[Path]) -> None:
    """The output guard (:mod:`annotator.guard`): ``--out`` is neither input, and estimate.json/md and forest.png
    are replaced only in a folder an earlier `estimate` wrote (its estimate.json is an estimate report)."""
    check_distinct("estimate", {"--out": out}, {"--humans file": humans, **{f"--teacher {t}": t for t in teachers}})
    check_folder(out, "estimate", OUTPUT_FILES, REPORT_JSON, is_estimate_report, claim=False)


def run_estimate(opts: EstimateOptions) -> EstimateReport:
    """Estimate the label shares for every teacher (and slice); write the outputs when ``opts.out`` is set."""
    validate_options(opts)
    humans = load_humans(opts.humans, not_annotators=tuple(opts.by or ()))
    teachers = [load_teacher(p) for p in opts.teachers]
    joined = _joins(humans, teachers, opts.labels)
    names = teacher_names(opts.teachers)
    results, source = [], None
    for name, path, teacher, j in zip(names, opts.teachers, teachers, joined):
        log.info("estimating %s: %d items, %d with human labels (%s)", name, len(j.ids), len(j.rows), j.design)
        slice_names = None
        if opts.by:
            slice_names, source = slice_of(opts.by, path, j.ids)
        results.append(_teacher(name, path, teacher, j, opts, slice_names))
    report = EstimateReport(
        annotator_version=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        humans=str(opts.humans),
        humans_format=humans.format,
        annotators=humans.annotators,
        labels=joined[0].labels,
        label_source=joined[0].label_source,
        confidence_level=opts.confidence,
        by=opts.by,
        slice_source=source,
        min_slice_humans=opts.min_slice_humans,
        teachers=results,
        assumptions=ASSUMPTIONS,
    )
    if opts.out is not None:
        write_outputs(report, opts.out, opts.plots)
    return report


def write_outputs(report: EstimateReport, out: Path, plots: bool = True) -> None:
    """estimate.json, estimate.md and forest.png in ``out``, all or none (a full disk or Ctrl-C leaves the folder as
    it was), while holding the folder's lock: a second `estimate` into the same folder waits for this one, so the
    three files always come from one run. A failed write is one line."""
    files = {"report_json": str(out / REPORT_JSON), "report_md": str(out / REPORT_MD)}
    if plots:
        files["forest_plot"] = str(out / FOREST_PNG)
    report.files = files
    written: dict[Path, str | bytes] = {
        out / REPORT_JSON: json.dumps(json.loads(report.model_dump_json()), indent=2) + "\n",
        out / REPORT_MD: render_markdown(report),
    }
    if plots:
        from annotator.estimate.plot import forest_png

        written[out / FOREST_PNG] = forest_png(report)
    check_folder(out, "estimate", OUTPUT_FILES, REPORT_JSON, is_estimate_report)  # creates and claims it
    try:
        with _locked(out):
            atomic_write_files(written)
            if not plots:
                (out / FOREST_PNG).unlink(missing_ok=True)  # an earlier run's plot would not match these numbers
    except OSError as exc:
        raise RunDirError(
            f"cannot write the estimate in {out}: {exc.strerror or exc}; free space, make it writable "
            "or give another --out"
        ) from None


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold ``out/.estimate.lock`` (``flock``, released when the process ends, however it ends)."""
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
