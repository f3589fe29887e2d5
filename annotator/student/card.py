"""The student's model card (``model/README.md``): Hub front matter, then what it was trained on and how it scores.

Every number comes from the run's :class:`annotator.student.train.StudentMetrics` (the same as metrics.json).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from annotator.student.evaluate import EvalBlock, Scores
    from annotator.student.slices import Selection
    from annotator.student.train import LearningCurvePoint, StudentMetrics


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pair(sc: Scores | None) -> str:
    return "-" if sc is None else f"{_f(sc.accuracy)} / {_f(sc.macro_f1)}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _scores_rows(rows: list[tuple[str, EvalBlock]]) -> list[str]:
    agree = [_f(b.student_vs_teacher.accuracy if b.student_vs_teacher else None) for _, b in rows]
    return _table(
        ["scope", "items", "with gold", "student acc / macro-F1", "teacher acc / macro-F1", "agree"],
        [[name, str(b.items), str(b.with_gold), _pair(b.student), _pair(b.teacher), a]
         for (name, b), a in zip(rows, agree)],
    )


def _selection(sel: Selection) -> list[str]:
    def counts(values: dict[str, dict[str, int]]) -> str:
        return "; ".join(f"{c}: " + ", ".join(f"{v} {n}" for v, n in vs.items()) for c, vs in values.items())

    return [
        "## Train / test selection", "",
        f"- `--train-where`: {'`' + sel.train_where + '`' if sel.train_where else '(none: the train/validation splits)'}",
        f"- `--test-where`: {'`' + sel.test_where + '`' if sel.test_where else '(none: the held-out split)'}",
        f"- items: {sel.train_items} train, {sel.validation_items} validation, {sel.test_items} test",
        f"- train items by value: {counts(sel.train_values)}",
        f"- test items by value: {counts(sel.test_values)}",
        "- columns read from: " + ", ".join(f"{c} ({src})" for c, src in sel.sources.items()), "",
    ]


def _curve(points: list[LearningCurvePoint]) -> list[str]:
    names = list(points[0].slices or {})
    header = ["train size", "steps", "best epoch", "student vs gold", "agree", *(f"{v} (n)" for v in names)]
    rows = []
    for p in points:
        per = [f"{_pair(s.student)} ({s.items})" for s in (p.slices or {}).values()]
        agree = _f(p.student_vs_teacher.accuracy if p.student_vs_teacher else None)
        best = "-" if p.best_epoch is None else str(p.best_epoch)
        rows.append([f"{p.size}" + (" (clipped)" if p.clipped else ""), str(p.steps), best, _pair(p.student),
                     agree, *per])
    return ["## Learning curve", "", "Held-out scope; per slice: student acc / macro-F1 vs gold (items).", "",
            *_table(header, rows), ""]


def render_card(m: StudentMetrics) -> str:
    """The model card's Markdown."""
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-classification", "tags:", "- annotator",
        "- distillation", "---", "",
        "# Student classifier", "",
        f"Fine-tuned from {m.base_model} on the teacher's labels of `{m.dataset}` by `annotator train-student`.",
        f"Labels ({'multi-label' if m.multi_label else 'single-label'}): {', '.join(m.label_names)}.", "",
        f"- trained on {m.train_size} items: {m.steps} steps ({m.epochs_run:g} epochs), best epoch "
        f"{'-' if m.best_epoch is None else m.best_epoch}{' (stopped early)' if m.stopped_early else ''}",
        f"- confidence: temperature {m.calibration.temperature:g} (`student_temperature` in config.json)",
        f"- human gold: {m.gold or '(none)'}", "",
    ]
    if m.selection is not None:
        lines += _selection(m.selection)
    rows = [(m.eval_split or "test" if k == "test" else "all (training items included)", b)
            for k, b in m.evaluation.items()]
    lines += ["## Evaluation", "", "Accuracy / macro-F1 against the human gold; agree = student == teacher.", "",
              *_scores_rows(rows), ""]
    if m.slices is not None:
        s = m.slices
        lines += [f"## By {s.column}", "", f"The {s.scope} scope per value of `{s.column}` (read from {s.source}).",
                  "", *_scores_rows([(f"{s.column}={v}", b) for v, b in s.slices.items()]), ""]
    if m.learning_curve:
        lines += _curve(m.learning_curve)
    if m.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in m.notes), ""]
    return "\n".join(lines)
