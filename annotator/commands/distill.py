"""`annotator distill PIPELINE.yaml`: the student in the loop labels the corpus for a fraction of the teacher calls."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from annotator.choices import ClassWeights, RecheckMode, Selection
from annotator.commands.output import JSON_HELP, SET_HELP, emit_json, log_console, result_console

if TYPE_CHECKING:
    from annotator.distill.report import DistillReport

HELP_STUDENT = "Student (each round: train-student's code and settings, texts cut at --max-length)"


def _check(
    budget: int | None,
    max_cost: float | None,
    recheck_samples: int | None,
    samples: int,
    recheck: RecheckMode,
    priced: bool,
) -> None:
    """The options that need no corpus to be refused (one line each)."""
    from annotator.distill.state import DistillError

    if budget is not None and budget <= 0:
        raise DistillError(
            f"--budget {budget}: give the most teacher calls to spend, a positive number (and below the corpus size)"
        )
    if max_cost is not None and max_cost <= 0:
        raise DistillError(f"--max-cost {max_cost:g}: give the most USD to spend, a positive number")
    if max_cost is not None and not priced:
        raise DistillError(
            "--max-cost needs the teacher's prices: set teacher.price in the pipeline file (openai backend)"
        )
    if recheck is RecheckMode.teacher and recheck_samples is not None and recheck_samples <= samples:
        raise DistillError(
            f"--recheck-samples {recheck_samples}: a second look needs more samples than the first "
            f"(teacher.samples is {samples}); raise it, or use --recheck humans / off"
        )


def distill_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file of a label task (its input is the corpus).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: OUTPUT_DIR/distill).")
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(
            help="Most teacher calls to spend: rows asked x teacher.samples, plus rechecks x --recheck-samples "
            "(invalid answers asked again come on top). Below the corpus size."
        ),
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="Most USD to spend (needs teacher.price).")
    ] = None,
    seed_size: Annotated[
        int | None,
        typer.Option(
            "--seed-size", help="Round 0: random rows for the teacher (default: min(100, a fifth of the rows))."
        ),
    ] = None,
    validation_size: Annotated[
        int | None,
        typer.Option(
            "--validation-size", help="Of the seed, rows kept for validation (default: a quarter of the seed)."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", help="Rows the teacher labels per round (default: min(50, a twentieth of the rows))."
        ),
    ] = None,
    strategy: Annotated[
        Selection,
        typer.Option(case_sensitive=False, help="How the student picks the next rows: its uncertainty, or random."),
    ] = Selection.margin,
    diversity: Annotated[
        bool,
        typer.Option(
            "--diversity/--no-diversity",
            help="Cluster the uncertain candidates (student embeddings): no batch of near-duplicates.",
        ),
    ] = True,
    cold_start: Annotated[
        bool,
        typer.Option(
            "--cold-start/--no-cold-start",
            help="Random batches until a round's student beats its TF-IDF baseline on validation macro-F1 (a "
            "student that has not learnt yet is no guide to its uncertain rows).",
        ),
    ] = True,
    candidates: Annotated[
        int,
        typer.Option(
            help="The batch is chosen among this many x --batch-size most uncertain rows (1: the most uncertain "
            "alone, no clustering).",
            min=1,
        ),
    ] = 10,
    recheck: Annotated[
        RecheckMode,
        typer.Option(
            case_sensitive=False,
            help="Teacher labels a confident student disputes (confident learning): asked again "
            "with more samples, put on a sheet for people, or left.",
        ),
    ] = RecheckMode.teacher,
    recheck_samples: Annotated[
        int | None,
        typer.Option(
            "--recheck-samples",
            min=1,
            help="Samples of a second look, above teacher.samples [default: teacher.samples + 2]",
        ),
    ] = None,
    recheck_floor: Annotated[
        float,
        typer.Option("--recheck-floor", min=0.0, max=1.0, help="A dispute needs at least this student probability."),
    ] = 0.5,
    patience: Annotated[
        int, typer.Option(min=0, help="Stop after this many rounds without validation progress (0: never).")
    ] = 2,
    min_delta: Annotated[
        float, typer.Option("--min-delta", min=0.0, help="Smallest macro-F1 gain that counts.")
    ] = 0.005,
    gold: Annotated[
        Path | None,
        typer.Option(
            help="Human labels for some rows: test macro-F1 per round; stop once the student matches the teacher."
        ),
    ] = None,
    match_margin: Annotated[
        float, typer.Option("--match-margin", min=0.0, help="'Matches' = student macro-F1 >= teacher's minus this.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the random seed sample, the student and the clustering.")] = 0,
    model: Annotated[str | None, typer.Option(help=f"{HELP_STUDENT}: base encoder (default: packaged MiniLM).")] = None,
    epochs: Annotated[
        float,
        typer.Option(help=f"{HELP_STUDENT}: most epochs per round (early stop after 2 without validation progress)."),
    ] = 10,
    max_length: Annotated[int, typer.Option("--max-length", help=f"{HELP_STUDENT}: tokens per text.")] = 64,
    student_batch_size: Annotated[int, typer.Option("--student-batch-size", help=f"{HELP_STUDENT}: batch size.")] = 16,
    class_weights: Annotated[
        ClassWeights,
        typer.Option(
            "--class-weights",
            case_sensitive=False,
            help=f"{HELP_STUDENT}: none = each row weighs the same; balanced = each label weighs the same in the "
            "loss (a rare label is not drowned, but its teacher errors weigh more too).",
        ),
    ] = ClassWeights.none,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray", help="Label the corpus on Ray each round: an address, or `--ray` alone for ray.init()'s default."
        ),
    ] = None,
    ray_workers: Annotated[int | None, typer.Option("--ray-workers", min=1, help="Student replicas on Ray.")] = None,
    overrides: Annotated[list[str], typer.Option("--set", metavar="KEY.PATH=VALUE", help=SET_HELP)] = [],  # noqa: B006
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP + " (report.json)")] = False,
) -> None:
    """Label the pipeline's corpus with the teacher on a fraction of its rows and the student on the rest.

    Round 0: the teacher labels a random seed sample (and the rows of --gold). Each round: a student is trained on
    every teacher label so far (with a TF-IDF + logistic regression baseline beside it), labels the corpus, teacher
    labels it confidently disputes go back for a second look, and the rows it is least sure of (diverse ones) go to
    the teacher next. Stops at --budget / --max-cost, when the validation score stops improving (--patience), when
    the student matches the teacher on --gold, or when every row is labelled.

    Outputs in --out: labelled.jsonl (every row, its label and where it came from), student/ (the final student),
    report.md / report.json / learning_curve.png (per round: calls, cost, scores), README.md (dataset card).

    Resumable: kill it at any point and run the same command again. Finished rounds are not retrained and no
    teacher answer is asked twice (they are in OUT/teacher/cache.sqlite). Rerun with a larger --budget or
    --patience to continue a finished run.

    Exit codes: 0 done; 2 a problem to fix; 5 the teacher is unreachable (rerun to resume); 6 another process uses
    --out; 8 --max-cost was reached before the first student (raise it and rerun); 130 interrupted.
    """
    from annotator.config import load_config
    from annotator.distill.loop import Distiller, DistillOptions, price_of
    from annotator.distill.student import StudentSettings, round_train_config

    cfg = load_config(pipeline, overrides)
    _check(budget, max_cost, recheck_samples, cfg.teacher.samples, recheck, price_of(cfg))
    logs = log_console()
    show = not quiet and not logs.quiet
    student = StudentSettings(
        model=model,
        train=round_train_config(epochs, max_length, student_batch_size, seed, device, class_weights.value),
        show_progress=show,
        device=device,
        ray=ray,
        ray_workers=ray_workers,
    )
    opts = DistillOptions(
        out=out or Path(cfg.output.dir) / "distill",
        seed_size=seed_size,
        validation_size=validation_size,
        batch_size=batch_size,
        budget=budget,
        max_cost=max_cost,
        strategy=strategy.value,
        diversity=diversity,
        cold_start=cold_start,
        candidates=candidates,
        recheck=recheck.value,
        recheck_samples=recheck_samples,
        recheck_floor=recheck_floor,
        patience=patience,
        min_delta=min_delta,
        match_margin=match_margin,
        gold=gold,
        seed=seed,
        student=student,
    )
    report = Distiller(cfg, opts, say=lambda m: logs.print(m, soft_wrap=True, markup=False)).run()
    if as_json:
        emit_json(report)
    else:
        _print_summary(report)


def _print_summary(r: DistillReport) -> None:
    from annotator.distill.report import f1_cell

    console = result_console()
    gold = any(x.student_test for x in r.rounds)
    table = Table(
        title=f"distill: stopped ({r.stopped.reason}) after {len(r.rounds)} round(s); macro-F1 vs the "
        "teacher on validation" + (" and vs gold" if gold else "")
    )
    for c in (
        "round",
        "labels",
        "calls",
        "student",
        "baseline",
        *(("gold: student", "teacher", "baseline") if gold else ()),
        "disputed/changed",
    ):
        table.add_column(c, justify="right")
    for x in r.rounds:
        table.add_row(
            str(x.round),
            str(x.teacher_labels),
            str(x.planned_calls),
            f1_cell(x.student_validation),
            f1_cell(x.baseline_validation),
            *((f1_cell(x.student_test), f1_cell(x.teacher_test), f1_cell(x.baseline_test)) if gold else ()),
            f"{x.flagged}/{x.changed}",
        )
    console.print(table)
    console.print(
        f"{r.stopped.detail}. Teacher calls {r.planned_calls:,} of {r.calls_every_row:,} for every row: "
        f"{r.calls_saved:,} saved ({r.saved_share:.0%})"
        + ("" if r.cost_usd is None else f"; cost ${r.cost_usd:.4f}")
        + ".",
        soft_wrap=True,
    )
    if r.baseline_verdict:
        console.print(f"[bold yellow]{r.baseline_verdict}[/]", soft_wrap=True)
    console.print(
        "labels: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(r.rows_by_source.items()))
        + f" -> [bold]{r.labelled_corpus}[/]",
        soft_wrap=True,
    )
    console.print(
        f"student: [bold]{r.student_dir}[/]   report: [bold]{Path(r.labelled_corpus).parent / 'report.md'}[/]",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)
