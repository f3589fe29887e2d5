"""The estimate report: pydantic models (``estimate.json``) and its Markdown rendering (``estimate.md``)."""

from __future__ import annotations

from pydantic import Field

from annotator.audit.report import f, fe, markdown_table
from annotator.audit.results import Estimate, _Model

MAX_LISTED = 50  # too-small slices named in estimate.md (and on the terminal) at most


class LabelShare(_Model):
    label: str
    teacher_share: float = Field(description="the teacher's raw share of the population (biased by its errors)")
    humans_with_label: float = Field(description="human items that carry the label (a tie counts its share)")
    corrected: Estimate = Field(description="teacher labels corrected with the human sample, with its CI")
    corrected_se: float | None = None
    lam: float | None = Field(None, description="weight of the teacher's labels (power tuning): 0 = humans only")
    human_only: Estimate = Field(description="the human sample alone (Hajek), with its CI")
    human_only_se: float | None = None
    effective_human_labels: float | None = Field(
        None, description="human labels a random sample would need, without the teacher, for the corrected precision"
    )
    width_ratio: float | None = Field(None, description="corrected CI width / human-only CI width")


class SliceEstimate(_Model):
    slice: str
    population: int = Field(description="items with an ok teacher label in the slice")
    n_humans: int = Field(description="human-labelled items in the slice")
    too_small: bool = False
    implied_population: float | None = Field(None, description="sum of 1/inclusion_prob of the slice's human items")
    shares: list[LabelShare] = []


class TeacherEstimates(_Model):
    name: str
    teacher: str
    model: str | None = None
    population: int
    failed: int = Field(description="teacher rows that failed: outside the population")
    human_items: int = Field(description="human-labelled items in the population")
    tied_items: int
    design: str
    method: str
    overall: SliceEstimate
    slices: list[SliceEstimate] | None = None
    notes: list[str] = []


class EstimateReport(_Model):
    annotator_version: str
    created_at: str
    humans: str
    humans_format: str
    annotators: list[str]
    labels: list[str]
    label_source: str
    confidence_level: float
    by: list[str] | None = None
    slice_source: str | None = None
    min_slice_humans: int
    teachers: list[TeacherEstimates]
    assumptions: list[str]
    files: dict[str, str] = {}


def _n(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _slice_table(s: SliceEstimate, ci: str) -> list[str]:
    header = [
        "label",
        "teacher share (raw)",
        f"corrected [{ci}]",
        f"humans only [{ci}]",
        "human items with label",
        "width ratio",
        "effective human labels",
        "lambda",
    ]
    rows = [
        [
            x.label,
            f(x.teacher_share),
            fe(x.corrected),
            fe(x.human_only),
            f"{x.humans_with_label:g}",
            f(x.width_ratio, 2),
            _n(x.effective_human_labels),
            f(x.lam, 2),
        ]
        for x in s.shares
    ]
    return markdown_table(header, rows)


def _side_by_side(r: EstimateReport, ci: str) -> list[str]:
    """One row per label (and slice): the humans-only estimate, then each teacher's raw and corrected share."""
    header = ["slice", "label", f"humans only [{ci}]"]
    for t in r.teachers:
        header += [f"{t.name} raw", f"{t.name} corrected [{ci}]", f"{t.name} eff. humans"]
    rows = []
    first = r.teachers[0]
    by_name = [{s.slice: s for s in [t.overall, *(t.slices or [])]} for t in r.teachers]
    for base in [first.overall, *(first.slices or [])]:
        if base.too_small:
            continue
        for j, share in enumerate(base.shares):
            row = [base.slice, share.label, fe(share.human_only)]
            for names in by_name:
                s = names.get(base.slice)
                x = None if s is None or s.too_small else s.shares[j]
                row += (
                    ["n/a", "too small", ""]
                    if x is None
                    else [f(x.teacher_share), fe(x.corrected), _n(x.effective_human_labels)]
                )
            rows.append(row)
    return ["## Side by side", ""] + markdown_table(header, rows)


def _teacher_section(t: TeacherEstimates, ci: str, several: bool) -> list[str]:
    L = [f"## {t.name}" if several else "## Shares", ""]
    L += [
        f"Teacher {t.teacher}" + (f" ({t.model})" if t.model else "") + f": {t.population:,} items with a label "
        f"(the population; {t.failed:,} failed rows are outside it). Human sample: {t.human_items:,} items "
        f"({t.design}); method: {t.method}.",
        "",
    ]
    L += [f"- note: {n}" for n in t.notes] + ([""] if t.notes else [])
    L += _slice_table(t.overall, ci)
    if t.slices is not None:
        L += ["### By slice", ""]
        for s in t.slices:
            if not s.too_small:
                L += [f"#### {s.slice} ({s.population:,} items, {s.n_humans} human)", ""] + _slice_table(s, ci)
        small = [f"{s.slice} ({s.n_humans} of {s.population:,})" for s in t.slices if s.too_small]
        if small:
            L += [
                f"Too small to estimate (human items of items): {', '.join(small[:MAX_LISTED])}"
                + (
                    f" and {len(small) - MAX_LISTED:,} more (estimate.json lists them all)"
                    if len(small) > MAX_LISTED
                    else ""
                )
                + ".",
                "",
            ]
    return L


def render_markdown(r: EstimateReport) -> str:
    """estimate.md: what was estimated, the shares per teacher (and slice), side by side, then the assumptions."""
    ci = f"{int(round(r.confidence_level * 100))}% CI"
    several = len(r.teachers) > 1
    L = [
        "# Corpus label shares",
        "",
        f"Human labels: {r.humans} ({r.humans_format}, {len(r.annotators)} annotator(s)); labels ({r.label_source}): "
        f"{', '.join(r.labels)}.",
        "",
        "The corrected share combines the teacher's label of every item with the human sample; its interval is "
        "valid whatever the teacher's errors. The raw teacher share has no interval: its error is the teacher's "
        "bias, which only humans can measure. 'Effective human labels': how many human labels a random sample "
        "would need, without the teacher, for the corrected precision.",
        "",
    ]
    if r.by:
        L += [
            f"Slices: {' x '.join(r.by)} (from {r.slice_source}); slices with fewer than {r.min_slice_humans} human "
            "items are listed as too small.",
            "",
        ]
    if "forest_plot" in r.files:
        L += ["![forest plot](forest.png)", ""]
    if several:
        L += _side_by_side(r, ci)
    for t in r.teachers:
        L += _teacher_section(t, ci, several)
    L += (
        ["## Assumptions", ""]
        + [f"- {a}" for a in r.assumptions]
        + [
            "",
            "Method and formulas: docs/estimate.md (PPI++, Angelopoulos, Duchi & Zrnic 2023; design-based "
            "supervised learning, Egami et al. 2023; Confidence-Driven Inference, Gligoric et al. 2025).",
            "",
        ]
    )
    return "\n".join(L)
