"""The student's model card (``model/README.md``): Hub front matter, then what it was trained on and how it scores.

Every number comes from the run's :class:`annotator.student.metrics.StudentMetrics` (the same as metrics.json).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from annotator.student.evaluate import fmt3 as _f
from annotator.student.evaluate import pair_cell as _pair

if TYPE_CHECKING:
    from annotator.student.evaluate import EvalBlock
    from annotator.student.metrics import BaselineReport, CalibrationInfo, LearningCurvePoint, StudentMetrics
    from annotator.student.slices import Selection


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _scores_rows(rows: list[tuple[str, EvalBlock]]) -> list[str]:
    agree = [_f(b.student_vs_teacher.accuracy if b.student_vs_teacher else None) for _, b in rows]
    return _table(
        ["scope", "items", "with gold", "student acc / macro-F1", "teacher acc / macro-F1", "agree"],
        [
            [name, str(b.items), str(b.with_gold), _pair(b.student), _pair(b.teacher), a]
            for (name, b), a in zip(rows, agree)
        ],
    )


def _selection(sel: Selection) -> list[str]:
    def counts(values: dict[str, dict[str, int]]) -> str:
        return "; ".join(f"{c}: " + ", ".join(f"{v} {n}" for v, n in vs.items()) for c, vs in values.items())

    return [
        "## Train / test selection",
        "",
        f"- `--train-where`: "
        f"{'`' + sel.train_where + '`' if sel.train_where else '(none: the train/validation splits)'}",
        f"- `--test-where`: {'`' + sel.test_where + '`' if sel.test_where else '(none: the held-out split)'}",
        f"- items: {sel.train_items} train, {sel.validation_items} validation, {sel.test_items} test",
        f"- train items by value: {counts(sel.train_values)}",
        f"- test items by value: {counts(sel.test_values)}",
        "- columns read from: " + ", ".join(f"{c} ({src})" for c, src in sel.sources.items()),
        "",
    ]


def temperature_text(c: CalibrationInfo | None) -> str:
    """The temperature as a table cell: ``1.8``, ``20.09 (bound)``, or ``1 (not fit)``."""
    if c is None:
        return "-"
    return f"{c.temperature:g}" + (" (bound)" if c.at_bound else "" if c.fitted else " (not fit)")


def ece_text(c: CalibrationInfo | None) -> str:
    """ECE before -> after temperature scaling, as a table cell."""
    return "-" if c is None else f"{_f(c.ece_before)} -> {_f(c.ece_after)}"


def _curve(points: list[LearningCurvePoint]) -> list[str]:
    names = list(points[0].slices or {})
    header = [
        "train size",
        "steps",
        "best epoch",
        "student vs gold",
        "agree",
        "T",
        "ECE before -> after",
        *(f"{v} (n)" for v in names),
    ]
    rows = []
    for p in points:
        per = [f"{_pair(s.student)} ({s.items})" for s in (p.slices or {}).values()]
        agree = _f(p.student_vs_teacher.accuracy if p.student_vs_teacher else None)
        best = "-" if p.best_epoch is None else str(p.best_epoch)
        rows.append(
            [
                f"{p.size}" + (" (clipped)" if p.clipped else ""),
                str(p.steps),
                best,
                _pair(p.student),
                agree,
                temperature_text(p.calibration),
                ece_text(p.calibration),
                *per,
            ]
        )
    notes = sorted({p.calibration.note for p in points if p.calibration and p.calibration.note})
    return [
        "## Learning curve",
        "",
        "Held-out scope; per slice: student acc / macro-F1 vs gold (items). Each size is calibrated on the "
        "validation split like the main student (T); ECE on the held-out scope before -> after.",
        "",
        *_table(header, rows),
        "",
        *(f"- calibration: {n}" for n in notes),
        *([""] if notes else []),
    ]


def _baseline(b: BaselineReport) -> list[str]:
    rows = [
        [name, str(s.items), _pair(s.baseline), _f(s.baseline_vs_teacher.accuracy if s.baseline_vs_teacher else None)]
        for name, s in b.evaluation.items()
    ]
    return [
        "## Baseline",
        "",
        f"{b.method}, fit on the same {b.train_items} teacher labels in {b.seconds:g}s "
        f"(C = {b.c:g}, chosen on validation).",
        "",
        *_table(["scope", "items", "baseline acc / macro-F1 vs gold", "agree with teacher"], rows),
        "",
        *(
            [f"**{b.verdict}**", ""]
            if b.verdict
            else [f"The student beats it ({b.compared_on}).", ""]
            if b.student_beats_baseline
            else []
        ),
    ]


def render_card(m: StudentMetrics) -> str:
    """The model card's Markdown."""
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags:",
        "- annotator",
        "- distillation",
        "---",
        "",
        "# Student classifier",
        "",
        f"Fine-tuned from {m.base_model} on the teacher's labels of `{m.dataset}` by `annotator train-student`.",
        f"Labels ({'multi-label' if m.multi_label else 'single-label'}): {', '.join(m.label_names)}.",
        "",
        f"- trained on {m.train_size} items: {m.steps} steps ({m.epochs_run:g} epochs), best epoch "
        f"{'-' if m.best_epoch is None else m.best_epoch}{' (stopped early)' if m.stopped_early else ''}",
        f"- confidence: temperature {temperature_text(m.calibration)} (`student_temperature` in config.json); "
        f"ECE on {m.calibration.eval_split or '-'} vs {m.calibration.reference or '-'} before -> after: "
        f"{ece_text(m.calibration)}",
        *([f"- calibration: {m.calibration.note}"] if m.calibration.note else []),
        f"- human gold: {m.gold or '(none)'}",
        "",
    ]
    if m.selection is not None:
        lines += _selection(m.selection)
    rows = [
        (m.eval_split or "test" if k == "test" else "all (training items included)", b) for k, b in m.evaluation.items()
    ]
    lines += [
        "## Evaluation",
        "",
        "Accuracy / macro-F1 against the human gold; agree = student == teacher.",
        "",
        *_scores_rows(rows),
        "",
    ]
    if m.baseline is not None:
        lines += _baseline(m.baseline)
    if m.slices is not None:
        s = m.slices
        lines += [
            f"## By {s.column}",
            "",
            f"The {s.scope} scope per value of `{s.column}` (read from {s.source}).",
            "",
            *_scores_rows([(f"{s.column}={v}", b) for v, b in s.slices.items()]),
            "",
        ]
    if m.learning_curve:
        lines += _curve(m.learning_curve)
    if m.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in m.notes), ""]
    return "\n".join(lines)
