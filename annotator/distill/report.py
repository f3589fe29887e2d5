"""The final outputs of `annotator distill`, each written atomically once the rounds stop:

* ``labelled.jsonl``: every corpus row, in input order: ``label`` with its ``source`` (``teacher``, ``teacher
  (rechecked)`` when a second look changed it, ``student`` elsewhere, ``none`` when neither has one) and
  ``confidence``, the ``round`` the teacher was asked in and the row's ``role`` (train, validation, human sample),
  the teacher's and the student's label side by side;
* ``student/``: the last round's student (a train-student folder: ``annotator predict`` reads it);
* ``report.json`` / ``report.md`` / ``learning_curve.png``: per round, teacher calls, cost, the student's and the
  baseline's validation scores and, with ``--gold``, test macro-F1 of student, teacher and baseline; the calls saved
  against labelling every row;
* ``README.md``: the labelled corpus's dataset card, with the provenance of its labels.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from annotator.audit.report import markdown_table
from annotator.distill.state import DistillState, RoundRecord, Stop
from annotator.distill.student import PREDICTIONS_FILE, read_predictions
from annotator.inputs import iter_rows
from annotator.records import read_manifest
from annotator.rundir import atomic_write_text, atomic_writer, fsync_dir, os_error
from annotator.student.evaluate import Scores, pair_cell

if TYPE_CHECKING:
    from annotator.inputs import InputConfig
    from annotator.records import AnnotationRecord

LABELLED_FILE = "labelled.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT_FILE = "learning_curve.png"
CARD_FILE = "README.md"
STUDENT_DIR = "student"


@dataclass
class Finished:
    """What the outputs are made of, besides the state: the loop's view of the teacher's answers and its options."""

    out: Path
    corpus: InputConfig
    labelled: dict[str, AnnotationRecord]  # the teacher's usable records, with the labels a recheck changed
    first: dict[str, Any]  # the teacher's first label of every row it answered
    teacher_dir: Path
    options: dict[str, Any]  # as given (and resolved), for report.json


class DistillReport(BaseModel):
    """``report.json`` (and ``annotator distill --json``)."""

    created_at: str
    pipeline: str
    input: str
    corpus_rows: int
    label_names: list[str]
    teacher_model: str | None = None
    samples: int
    options: dict[str, Any]
    rounds: list[RoundRecord]
    stopped: Stop
    teacher_labels: int = Field(description="Rows with a teacher label (training, validation, human sample).")
    planned_calls: int = Field(description="Teacher calls as the budget counts them (rows x samples, rechecks).")
    teacher_calls: int = Field(description="Teacher calls made, invalid answers asked again included.")
    calls_every_row: int = Field(description="Calls to label every row: rows x samples.")
    calls_saved: int = Field(description="calls_every_row - planned_calls.")
    saved_share: float
    cost_usd: float | None = None
    rows_by_source: dict[str, int]
    student_dir: str
    labelled_corpus: str
    baseline_verdict: str | None = Field(None, description="The last student vs its TF-IDF baseline, when it loses.")
    notes: list[str] = []


def f1_cell(s: Scores | None) -> str:
    return "-" if s is None or s.macro_f1 is None else f"{s.macro_f1:.3f}"


def _install_student(src: Path, out: Path) -> Path:
    """Copy the last round's student to ``out/student`` (staged, then renamed over the old one)."""
    dest, staging = out / STUDENT_DIR, out / (STUDENT_DIR + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    old = out / (STUDENT_DIR + ".old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _row(row_id: str, text: str | None, pred: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    rec, first = ctx["labelled"].get(row_id), ctx["first"].get(row_id)
    role = (
        "human sample"
        if row_id in ctx["gold"]
        else "validation"
        if row_id in ctx["validation"]
        else "train"
        if row_id in ctx["round"]
        else None
    )
    student, sconf = pred.get("label"), pred.get("confidence")
    if rec is not None:
        label, conf = rec.label, rec.confidence
        source = "teacher (rechecked)" if label != first else "teacher"
    elif student is not None:
        label, conf, source = student, sconf, "student"
    else:
        label, conf, source = None, None, "none"
    return {
        "id": row_id,
        "text": text,
        "label": label,
        "source": source,
        "confidence": conf,
        "round": ctx["round"].get(row_id),
        "role": role,
        "teacher_label": first,
        "student_label": student,
        "student_confidence": sconf,
    }


def write_corpus(f: Finished, state: DistillState, predictions: Path, path: Path) -> Counter[str]:
    """``labelled.jsonl`` (streamed, fsynced, renamed into place); the rows per source."""
    ctx = {
        "labelled": f.labelled,
        "first": f.first,
        "round": {i: r.round for r in state.rounds for i in r.ids},
        "gold": set(state.gold),
        "validation": set(state.validation),
    }
    counts: Counter[str] = Counter()
    try:
        with atomic_writer(path) as fh:
            for row, pred in read_predictions(predictions, iter_rows(f.corpus)):
                rec = _row(str(row.id), row.text, pred, ctx)
                counts[rec["source"]] += 1
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise os_error(exc, path) from None
    return counts


def build_report(f: Finished, state: DistillState, counts: Counter[str], student: Path) -> DistillReport:
    last = state.rounds[-1]
    every = state.rows * state.samples
    manifest = read_manifest(f.teacher_dir)
    assert state.stopped is not None
    return DistillReport(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        pipeline=state.pipeline,
        input=state.input,
        corpus_rows=state.rows,
        label_names=state.label_names,
        teacher_model=manifest.model if manifest else None,
        samples=state.samples,
        options=f.options,
        rounds=state.rounds,
        stopped=state.stopped,
        teacher_labels=last.teacher_labels,
        planned_calls=last.planned_calls,
        teacher_calls=last.teacher_calls,
        calls_every_row=every,
        calls_saved=every - last.planned_calls,
        saved_share=round(1 - last.planned_calls / every, 4),
        cost_usd=last.cost_usd,
        rows_by_source=dict(counts),
        student_dir=str(student),
        labelled_corpus=str(f.out / LABELLED_FILE),
        baseline_verdict=last.baseline_verdict,
    )


def round_table(r: DistillReport) -> list[str]:
    """One Markdown row per round."""
    gold = any(x.student_test for x in r.rounds)
    head = [
        "round",
        "teacher labels",
        "train",
        "planned calls",
        "teacher calls",
        "cost",
        "val macro-F1 student",
        "val baseline",
        *(["test student", "test teacher", "test baseline"] if gold else []),
        "disputed / sent / changed",
        "mean uncertainty",
    ]
    rows = []
    for x in r.rounds:
        rows.append(
            [
                str(x.round),
                str(x.teacher_labels),
                str(x.train_items),
                str(x.planned_calls),
                str(x.teacher_calls),
                "-" if x.cost_usd is None else f"${x.cost_usd:.4f}",
                f1_cell(x.student_validation),
                f1_cell(x.baseline_validation),
                *([pair_cell(x.student_test), pair_cell(x.teacher_test), pair_cell(x.baseline_test)] if gold else []),
                f"{x.flagged} / {x.rechecked} / {x.changed}",
                "random (cold start)"
                if x.cold_start
                else "-"
                if x.mean_uncertainty is None
                else f"{x.mean_uncertainty:.3f}",
            ]
        )
    return markdown_table(head, rows)


def render_markdown(r: DistillReport) -> str:
    gold = any(x.student_test for x in r.rounds)
    lines = [
        "# Distillation report",
        "",
        f"Pipeline `{r.pipeline}`, corpus `{r.input}` ({r.corpus_rows:,} rows), teacher `{r.teacher_model}`.",
        "",
        f"- stopped: **{r.stopped.reason}**: {r.stopped.detail}",
        f"- teacher labels: {r.teacher_labels:,}; teacher calls {r.teacher_calls:,} (budget counts {r.planned_calls:,})"
        f" against {r.calls_every_row:,} to label every row: **{r.calls_saved:,} saved ({r.saved_share:.0%})**",
        f"- cost: {'-' if r.cost_usd is None else f'${r.cost_usd:.4f}'}",
        "- rows by label source: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r.rows_by_source.items())),
        f"- final student: `{r.student_dir}`; labelled corpus: `{r.labelled_corpus}`",
        "",
        *([f"**{r.baseline_verdict}**", ""] if r.baseline_verdict else []),
        "Validation: macro-F1 against the teacher's labels on the validation rows (never trained on). "
        + ("Test: accuracy / macro-F1 against the human gold (`--gold`), rows never trained on. " if gold else "")
        + "Baseline: TF-IDF + logistic regression on the same labels. Disputed: teacher labels a confident student "
        "disagrees with (confident learning); sent: asked again (or put on a sheet); changed: the second look "
        "changed the label.",
        "",
        *round_table(r),
        "",
        f"![learning curve]({PLOT_FILE})",
        "",
    ]
    return "\n".join(lines)


def plot(r: DistillReport, path: Path) -> None:
    """Macro-F1 against teacher calls: the student and its baseline on validation, and on the human gold."""
    from annotator.audit.plots import _plt, save_png

    plt = _plt()
    x = [p.planned_calls for p in r.rounds]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    series = [
        ("student (validation)", [p.student_validation for p in r.rounds], "C0", "-"),
        ("baseline (validation)", [p.baseline_validation for p in r.rounds], "C1", "-"),
        ("student (vs gold)", [p.student_test for p in r.rounds], "C0", "--"),
        ("baseline (vs gold)", [p.baseline_test for p in r.rounds], "C1", "--"),
        ("teacher (vs gold)", [p.teacher_test for p in r.rounds], "C2", ":"),
    ]
    for name, scores, color, style in series:
        pts = [(xi, s.macro_f1) for xi, s in zip(x, scores) if s is not None and s.macro_f1 is not None]
        if pts:
            ax.plot(*zip(*pts), style, color=color, marker="o", label=name)
    ax.set_xlabel("teacher calls")
    ax.set_ylabel("macro-F1")
    ax.set_title(f"{r.pipeline.rsplit('/', 1)[-1]}: student in the loop")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def render_card(r: DistillReport) -> str:
    """The labelled corpus's dataset card: what labelled each row, and how the labels were obtained."""
    n = r.corpus_rows
    by = r.rows_by_source
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files: labelled.jsonl",
        "task_categories:",
        "- text-classification",
        "tags:",
        "- annotator",
        "- distillation",
        "- active-learning",
        "---",
        "",
        "# Labelled corpus (teacher + student in the loop)",
        "",
        f"{n:,} rows of `{r.input}` labelled by `annotator distill` with the pipeline `{r.pipeline}`. "
        f"Labels: {', '.join(r.label_names)}.",
        "",
        "## Provenance of the labels",
        "",
        "Every row says where its `label` came from (`source`):",
        "",
        f"- `teacher`: {by.get('teacher', 0):,} rows answered by the teacher `{r.teacher_model}` "
        f"({r.samples} sample(s) per row), in the round given by `round` (0: the random seed sample);",
        f"- `teacher (rechecked)`: {by.get('teacher (rechecked)', 0):,} rows whose first teacher label a confident "
        f"student disputed and a second look of the teacher ({r.options.get('recheck_samples')} samples, majority) "
        "changed (`teacher_label` keeps the first answer);",
        f"- `student`: {by.get('student', 0):,} rows labelled by the final student (`{r.student_dir}`) with its "
        "calibrated probability as `confidence`;",
        f"- `none`: {by.get('none', 0):,} rows neither could label (empty text).",
        "",
        f"The teacher was asked for {r.teacher_labels:,} rows ({r.teacher_calls:,} calls, cost "
        f"{'-' if r.cost_usd is None else f'${r.cost_usd:.4f}'}) instead of {n:,}; the rounds stopped because "
        f"{r.stopped.detail}. Rows were chosen for the teacher by the student's uncertainty "
        f"({r.options.get('strategy')}{', with diversity' if r.options.get('diversity') else ''}).",
        "",
        "## Rounds",
        "",
        *round_table(r),
        "",
        'Load it with `datasets.load_dataset("json", data_files="labelled.jsonl")`.',
        "",
    ]
    return "\n".join(lines)


def write_outputs(f: Finished, state: DistillState) -> DistillReport:
    """Every final output (see the module docstring); the report."""
    rdir = Path(state.rounds[-1].student_dir)
    counts = write_corpus(f, state, rdir / PREDICTIONS_FILE, f.out / LABELLED_FILE)
    student = _install_student(rdir / "student", f.out)
    report = build_report(f, state, counts, student)
    atomic_write_text(f.out / REPORT_JSON, report.model_dump_json(indent=2))
    atomic_write_text(f.out / REPORT_MD, render_markdown(report))
    plot(report, f.out / PLOT_FILE)
    atomic_write_text(f.out / CARD_FILE, render_card(report))
    fsync_dir(f.out)
    return report
