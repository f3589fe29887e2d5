"""The forest plot of ``annotator estimate`` (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

from annotator.audit.plots import _plt, png_bytes
from annotator.estimate.report import EstimateReport, LabelShare, SliceEstimate

TEACHER_COLOURS = ("#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3")
MAX_ROWS = 120  # label x slice rows drawn at most (the JSON and Markdown have them all)


def _rows(report: EstimateReport) -> list[tuple[str, list[LabelShare | None]]]:
    """One row per (slice, label) estimated for the first teacher: its name and each teacher's numbers."""
    per_teacher = [{s.slice: s for s in [t.overall, *(t.slices or [])]} for t in report.teachers]
    first = report.teachers[0]
    rows = []
    for base in [first.overall, *(first.slices or [])]:
        if base.too_small:
            continue
        for k, lab in enumerate(report.labels):
            name = lab if base is first.overall else f"{base.slice}: {lab}"
            found: list[SliceEstimate | None] = [names.get(base.slice) for names in per_teacher]
            rows.append((name, [None if s is None or s.too_small else s.shares[k] for s in found]))
    return rows[:MAX_ROWS]


def forest_png(report: EstimateReport) -> bytes:
    """The forest plot as PNG bytes: per label (and slice), the human-only CI (grey), each teacher's corrected CI
    (colour, square) and its raw share (cross)."""
    plt = _plt()
    rows = _rows(report)
    m = len(report.teachers)
    step = 1.0 / (m + 1)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.28 * len(rows) * (m + 1) + 1.2)))
    for r, (_, shares) in enumerate(rows):
        y0 = -r
        human = next((s for s in shares if s is not None), None)
        if human is not None and human.human_only.value is not None:
            lo, hi = human.human_only.ci_low, human.human_only.ci_high
            ax.plot([lo, hi], [y0, y0], color="#7F7F7F", lw=2)
            ax.plot(human.human_only.value, y0, "o", color="#7F7F7F", label="humans only" if r == 0 else None)
        for t, s in enumerate(shares):
            if s is None or s.corrected.value is None:
                continue
            y = y0 - (t + 1) * step
            colour = TEACHER_COLOURS[t % len(TEACHER_COLOURS)]
            name = report.teachers[t].name
            ax.plot([s.corrected.ci_low, s.corrected.ci_high], [y, y], color=colour, lw=2)
            ax.plot(s.corrected.value, y, "s", color=colour, label=f"{name}: corrected" if r == 0 else None)
            ax.plot(s.teacher_share, y, "x", color=colour, ms=7, label=f"{name}: raw teacher share" if r == 0 else None)
    ax.set_yticks([-r - m * step / 2 for r in range(len(rows))], [name for name, _ in rows], fontsize=8)
    ax.set_xlabel(f"share ({int(round(report.confidence_level * 100))}% CI)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Label shares: corrected vs humans only vs raw teacher")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)
