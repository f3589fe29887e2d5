"""`annotator train-student DATASET`: fine-tune a small encoder on the teacher's labels, compare with the teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def train_student_cmd(
    dataset: Annotated[Path, typer.Argument(help="Folder written by `annotator export` (or the run dir holding dataset/).")],
    gold: Annotated[
        Optional[Path],
        typer.Option(help="Human labels: item_id,annotator,label (majority vote; ties -> alphabetical), item_id,label, or wide."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder [default: DATASET/../student].")] = None,
    model: Annotated[
        Optional[str], typer.Option(help="Base encoder: HF model name or local folder [default: the packaged all-MiniLM-L6-v2].")
    ] = None,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 10,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many steps (overrides --epochs).")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW).")] = 5e-5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 16,
    max_length: Annotated[int, typer.Option("--max-length", help="Max tokens per text.")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    sizes: Annotated[
        Optional[str], typer.Option(help="Learning curve: training sizes, e.g. 100,500,1000 (clipped to the train split).")
    ] = None,
    thresholds: Annotated[
        Optional[str], typer.Option(help="Confidence thresholds for accuracy-at-threshold [default: 0.5,0.7,0.9,1.0].")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Fine-tune a small classifier on an exported dataset; report student vs teacher F1 against human gold."""
    from annotator.student.train import (
        StudentError,
        StudentOptions,
        TrainConfig,
        parse_sizes,
        parse_thresholds,
        resolve_dataset_dir,
        train_student,
    )

    if epochs <= 0 or lr <= 0 or batch_size <= 0 or max_length <= 0 or (max_steps is not None and max_steps <= 0):
        raise StudentError("--epochs, --lr, --batch-size, --max-length and --max-steps must be positive")
    console = Console()
    ds_dir = resolve_dataset_dir(dataset)
    out_dir = out or ds_dir.parent / "student"
    opts = StudentOptions(
        out=out_dir,
        gold=gold,
        model=model,
        train=TrainConfig(
            epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, max_steps=max_steps, seed=seed, device=device
        ),
        sizes=parse_sizes(sizes),
        thresholds=parse_thresholds(thresholds),
        show_progress=progress,
    )
    m = train_student(ds_dir, opts, log=lambda s: console.print(f"[dim]{s}[/]"))

    table = Table(title=f"student ({m.train_size} train items, {m.steps} steps, {m.train_seconds:.0f}s) vs teacher")
    for c in ("scope", "items", "gold", "student acc", "student macro-F1", "teacher acc", "teacher macro-F1", "student~teacher"):
        table.add_column(c, justify="left" if c == "scope" else "right")
    for name, b in m.evaluation.items():
        label = f"{name} ({m.eval_split})" if name == "test" else f"{name} (incl. train)"
        table.add_row(
            label,
            str(b.items),
            str(b.with_gold),
            _fmt(b.student.accuracy if b.student else None),
            _fmt(b.student.macro_f1 if b.student else None),
            _fmt(b.teacher.accuracy if b.teacher else None),
            _fmt(b.teacher.macro_f1 if b.teacher else None),
            _fmt(b.student_vs_teacher.accuracy if b.student_vs_teacher else None),
        )
    console.print(table)
    scope = m.evaluation.get("test") or m.evaluation.get("all")
    if scope and scope.teacher_confidence_thresholds:
        t = Table(title=f"accuracy vs gold at confidence >= threshold ({scope.scope} scope)")
        for c in ("threshold", "teacher-conf n", "teacher acc", "student acc", "student-conf n", "teacher acc ", "student acc "):
            t.add_column(c, justify="right")
        for a, b in zip(scope.teacher_confidence_thresholds, scope.student_confidence_thresholds):
            t.add_row(
                f"{a.threshold:g}", str(a.n), _fmt(a.teacher_accuracy), _fmt(a.student_accuracy),
                str(b.n), _fmt(b.teacher_accuracy), _fmt(b.student_accuracy),
            )
        console.print(t)
    if m.learning_curve:
        t = Table(title="learning curve (held-out scope)")
        for c in ("train size", "steps", "student acc", "student macro-F1", "student~teacher"):
            t.add_column(c, justify="right")
        for p in m.learning_curve:
            t.add_row(
                f"{p.size}" + (" (clipped)" if p.clipped else ""),
                str(p.steps),
                _fmt(p.student.accuracy if p.student else None),
                _fmt(p.student.macro_f1 if p.student else None),
                _fmt(p.student_vs_teacher.accuracy if p.student_vs_teacher else None),
            )
        console.print(t)
    for note in m.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"model: [bold]{m.model_dir}[/]   metrics: [bold]{Path(opts.out) / 'metrics.json'}[/]")


def register(app: typer.Typer) -> None:
    app.command("train-student")(train_student_cmd)
