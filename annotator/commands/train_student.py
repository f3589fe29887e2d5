"""`annotator train-student DATASET`: fine-tune a small encoder on the teacher's labels, compare with the teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from annotator.choices import ClassWeights
from annotator.commands.output import JSON_HELP, emit_json, fitted_table, log_console, result_console
from annotator.student.calibration import MIN_FIT_ITEMS
from annotator.student.evaluate import fmt3 as _fmt
from annotator.student.evaluate import pair_cell as _pair


def _print_training(console: Console, m) -> None:
    chosen = (
        f"best epoch {m.best_epoch} on validation" + (" (stopped early)" if m.stopped_early else "")
        if m.best_epoch is not None
        else "no validation split: last epoch kept"
    )
    console.print(
        f"student trained on {m.train_size} items: {m.steps} steps ({m.epochs_run:g} epochs), "
        f"{m.train_seconds:.0f}s; {chosen}"
    )
    c = m.calibration
    if c.fitted:
        console.print(
            f"calibration: temperature {c.temperature:.3f} fit on {c.fit_items} validation items; ECE on "
            f"{c.eval_split} vs {c.reference} ({c.eval_items} items): {_fmt(c.ece_before)} -> {_fmt(c.ece_after)}"
        )
    if c.note:
        console.print(f"[yellow]calibration:[/] {c.note}")


def _print_thresholds(console: Console, scope) -> None:
    t = Table(title=f"accuracy vs gold where confidence >= t ({scope.scope} scope)")
    for c in ("selected by", "t", "n", "coverage", "teacher", "student"):
        t.add_column(c, justify="left" if c == "selected by" else "right")
    for who, rows in (
        ("teacher conf", scope.teacher_confidence_thresholds),
        ("student conf", scope.student_confidence_thresholds),
    ):
        for r in rows:
            t.add_row(
                who, f"{r.threshold:g}", str(r.n), _fmt(r.coverage), _fmt(r.teacher_accuracy), _fmt(r.student_accuracy)
            )
    if t.rows:
        console.print(t)
    for note in (scope.teacher_confidence_note, scope.student_confidence_note):
        if note:
            console.print(f"[dim]confidence table: {note}[/]")


def _print_curve(console: Console, m) -> None:
    from annotator.student.card import ece_text, temperature_text

    names = list(m.learning_curve[0].slices or {})
    title = "learning curve (held-out scope)" + (f"; per {m.slices.column}: student vs gold (n)" if names else "")
    columns = [
        "train size",
        "steps",
        "best epoch",
        "seconds",
        "student vs gold",
        "agree",
        "T",
        "ECE before -> after",
        *names,
    ]
    rows = [
        [
            f"{p.size}" + (" (clipped)" if p.clipped else ""),
            str(p.steps),
            "-" if p.best_epoch is None else str(p.best_epoch),
            f"{p.seconds:.0f}",
            _pair(p.student),
            _fmt(p.student_vs_teacher.accuracy if p.student_vs_teacher else None),
            temperature_text(p.calibration),
            ece_text(p.calibration),
            *(f"{_pair(s.student)} ({s.items})" for s in (p.slices or {}).values()),
        ]
        for p in m.learning_curve
    ]
    console.print(fitted_table(console, title, columns, rows))
    for note in sorted({p.calibration.note for p in m.learning_curve if p.calibration and p.calibration.note}):
        console.print(f"[yellow]learning curve calibration:[/] {note}")


def _print_selection(console: Console, sel) -> None:
    def counts(values: dict[str, dict[str, int]]) -> str:
        return "; ".join(f"{c} " + ", ".join(f"{v} {n}" for v, n in vs.items()) for c, vs in values.items())

    console.print(
        f"train: {sel.train_items} items ({sel.train_where or 'train split'}: {counts(sel.train_values)}), "
        f"{sel.validation_items} validation; test: {sel.test_items} items "
        f"({sel.test_where or 'held-out split'}: {counts(sel.test_values)})",
        soft_wrap=True,
    )


def _print_scores(console: Console, m) -> None:
    table = Table(
        title="vs human gold (acc / macro-F1); agree = student == teacher; baseline = TF-IDF + log. regression"
    )
    for c in ("scope", "n", "gold", "student", "teacher", "baseline", "agree"):
        table.add_column(c, justify="left" if c == "scope" else "right")
    base = m.baseline.evaluation if m.baseline is not None else {}
    rows = [(m.eval_split if name == "test" else "all*", b, base.get(name)) for name, b in m.evaluation.items()]
    if m.slices is not None:
        rows += [(f"{m.slices.scope} {m.slices.column}={v}", b, None) for v, b in m.slices.slices.items()]
    for label, b, bl in rows:
        table.add_row(
            label,
            str(b.items),
            str(b.with_gold),
            _pair(b.student),
            _pair(b.teacher),
            _pair(bl.baseline if bl is not None else None),
            _fmt(b.student_vs_teacher.accuracy if b.student_vs_teacher else None),
        )
    console.print(table)
    if "all" in m.evaluation:
        console.print("[dim]* all exported items, training items included[/]")
    if m.baseline is not None and m.baseline.verdict:
        console.print(f"[bold yellow]{m.baseline.verdict}[/]", soft_wrap=True)


def _print_results(console: Console, m, out: Path) -> None:
    _print_training(console, m)
    if m.selection is not None:
        _print_selection(console, m.selection)
    _print_scores(console, m)
    scope = m.evaluation.get("test") or m.evaluation.get("all")
    if scope and scope.with_gold:
        _print_thresholds(console, scope)
    if m.learning_curve:
        _print_curve(console, m)
    console.print(f"model: [bold]{m.model_dir}[/]   metrics: [bold]{out / 'metrics.json'}[/]", soft_wrap=True)


MAX_EPOCHS = 10_000


def _train_config(
    epochs: float,
    lr: float,
    head_lr: float | None,
    batch_size: int,
    max_length: int,
    max_steps: int | None,
    patience: int,
    **rest: Any,
):
    """The checked training options (one error line per bad value)."""
    from annotator.student.loop import TrainConfig
    from annotator.student.metrics import StudentError

    if not (
        0 < epochs <= MAX_EPOCHS
        and 0 < lr < 1
        and 0 < batch_size <= 100_000
        and 0 < max_length <= 100_000
        and (max_steps is None or max_steps > 0)
    ):
        raise StudentError(
            f"--epochs (at most {MAX_EPOCHS}), --lr (below 1), --batch-size and --max-length (at most "
            "100,000) and --max-steps must be positive, finite numbers"
        )
    if head_lr is not None and not 0 <= head_lr < 1:
        raise StudentError("--head-lr must be >= 0 and below 1")
    if patience < 0:
        raise StudentError("--patience must be >= 0")
    head: dict[str, Any] = {} if head_lr is None else {"head_lr": head_lr or None}
    return TrainConfig(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_length=max_length,
        max_steps=max_steps,
        patience=patience,
        **head,
        **rest,
    )


def train_student_command(
    dataset: Annotated[
        Path, typer.Argument(help="Folder written by `annotator export` (or the run dir holding dataset/).")
    ],
    gold: Annotated[
        Path | None,
        typer.Option(
            help="Human labels: item_id,annotator,label (majority vote; a tie has no gold), item_id,label, or wide."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: DATASET/../student).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Base encoder: HF model name or local folder (default: the packaged all-MiniLM-L6-v2)."),
    ] = None,
    epochs: Annotated[
        float, typer.Option(help="Most training epochs (early stopping on validation ends sooner).")
    ] = 10,
    patience: Annotated[
        int, typer.Option(help="Stop after this many epochs without a better validation score (0: never early).")
    ] = 2,
    min_calibration_items: Annotated[
        int,
        typer.Option(
            "--min-calibration-items",
            help="Fit the confidence temperature only with at least this many validation items (else T = 1).",
        ),
    ] = MIN_FIT_ITEMS,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after this many steps (overrides --epochs).")
    ] = None,
    lr: Annotated[float, typer.Option(help="Learning rate of the encoder (AdamW).")] = 2e-4,
    head_lr: Annotated[
        float | None,
        typer.Option("--head-lr", help="Learning rate of the new classifier head (default: 1e-3; 0: same as --lr)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 16,
    max_length: Annotated[int, typer.Option("--max-length", help="Max tokens per text.")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    class_weights: Annotated[
        ClassWeights,
        typer.Option(
            "--class-weights",
            case_sensitive=False,
            help="balanced: each label weighs the same in the loss (n / (K * n_label)), and in the baseline's; for "
            "a rare label and macro-F1. none: each row the same.",
        ),
    ] = ClassWeights.none,
    sizes: Annotated[
        str | None,
        typer.Option(
            help="Learning curve: train sizes as counts, fractions or all, e.g. 250,1000,all or 0.25,0.5,all."
        ),
    ] = None,
    thresholds: Annotated[
        str | None, typer.Option(help="Confidence thresholds for accuracy-at-threshold (default: 0.5,0.7,0.9,1.0).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    eval_by: Annotated[
        str | None,
        typer.Option(
            "--eval-by",
            metavar="COLUMN",
            help="Also score student and teacher vs gold per value of this column (gold file, else the "
            "run's input), in metrics.json 'slices'.",
        ),
    ] = None,
    train_where: Annotated[
        str | None,
        typer.Option(
            "--train-where",
            metavar="EXPR",
            help='Train/validate only on items matching EXPR, e.g. "language != el" (COLUMN == V, != V, '
            "in \\[a, b], not in \\[a, b], joined by 'and'; columns as for --eval-by).",
        ),
    ] = None,
    test_where: Annotated[
        str | None,
        typer.Option(
            "--test-where",
            metavar="EXPR",
            help='Test on every exported item matching EXPR that is not trained on, e.g. "language == '
            'el" (zero-shot cross-lingual).',
        ),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP + " (the content of metrics.json)")] = False,
) -> None:
    """Fine-tune a small classifier on an exported dataset; report student vs teacher F1 against human gold."""
    from annotator.guard import check_distinct, check_folder, has_keys
    from annotator.rundir import as_os_error, output_error
    from annotator.student.data import StudentOptions, parse_thresholds, resolve_dataset_dir
    from annotator.student.integrity import CHECKSUMS_FILE
    from annotator.student.metrics import METRICS_FILE, MODEL_DIR, PREDICTIONS_FILE, StudentError
    from annotator.student.train import train_student

    if min_calibration_items < 1:
        raise StudentError("--min-calibration-items must be >= 1")
    train = _train_config(
        epochs,
        lr,
        head_lr,
        batch_size,
        max_length,
        max_steps,
        patience,
        seed=seed,
        device=device,
        class_weights=class_weights.value,
    )
    console, logs = result_console(), log_console()
    ds_dir = resolve_dataset_dir(dataset)
    out = out or ds_dir.parent / "student"
    check_distinct("train-student", {"--out": out}, {"DATASET folder": ds_dir, "--gold file": gold})
    check_folder(
        out,
        "train-student",
        (MODEL_DIR, METRICS_FILE, PREDICTIONS_FILE, CHECKSUMS_FILE),
        METRICS_FILE,
        has_keys("label_names", "train_config"),
        claim=False,
    )  # claimed by train_student before saving
    opts = StudentOptions(
        out=out,
        gold=gold,
        model=model,
        train=train,
        sizes=sizes,
        thresholds=parse_thresholds(thresholds),
        show_progress=progress and not logs.quiet,
        eval_by=eval_by,
        train_where=train_where,
        test_where=test_where,
        min_calibration_items=min_calibration_items,
    )
    try:
        m = train_student(ds_dir, opts)
    except Exception as exc:
        disk = as_os_error(exc)  # a full disk while saving the model is a safetensors/torch error, not an OSError
        if disk is None:
            raise
        raise output_error(
            disk,
            disk.filename or out,
            kept="no metrics.json was written: the student is not finished and predict refuses it",
        ) from None
    for note in m.notes:
        logs.print(f"[yellow]note:[/] {note}")
    if as_json:
        emit_json(m)
    else:
        _print_results(console, m, Path(opts.out))


def register(app: typer.Typer) -> None:
    app.command("train-student")(train_student_command)
