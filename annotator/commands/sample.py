"""`annotator sample RUN --n N --out DIR`: draw the items humans should label for an audit (see
``annotator.audit.sampling``), or, with ``--plan``, say how many items a target precision needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from annotator.choices import Strategy
from annotator.commands.output import JSON_HELP, emit_json, log_console, result_console

if TYPE_CHECKING:
    from annotator.audit.sampling import Sample

DEFAULT_PLAN_SIZES = (30, 50, 100, 200, 400, 800)


def sample_command(
    run: Annotated[Path, typer.Argument(help="Run directory written by `annotator run` (a single-label task).")],
    n: Annotated[
        int, typer.Option("--n", help="Items to draw (all of the run's labelled items when it has fewer).")
    ] = 100,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the sheets (must not hold sheets already).")
    ] = None,
    strategy: Annotated[
        Strategy, typer.Option("--strategy", case_sensitive=False, help="How to draw (see above).")
    ] = Strategy.stratified,
    annotators: Annotated[int, typer.Option("--annotators", help="Number of human annotators (K).")] = 3,
    per_item: Annotated[
        int, typer.Option("--per-item", help="Annotators per item (R <= K; the alt-test needs 3).")
    ] = 3,
    annotator_names: Annotated[
        str | None, typer.Option("--annotator-names", help="Comma-separated names (default ann_1..ann_K).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the draw.")] = 0,
    do_plan: Annotated[bool, typer.Option("--plan", help="Only print the sample-size plan; write nothing.")] = False,
    target_ci: Annotated[
        float | None, typer.Option("--target-ci", help="Target 95% CI half-width (e.g. 0.05) for the plan.")
    ] = None,
    pilot: Annotated[
        Path | None,
        typer.Option("--pilot", help="A filled pilot human file: its accuracy and human alpha replace the guesses."),
    ] = None,
    expected_alpha: Annotated[
        float, typer.Option("--expected-alpha", help="Human alpha assumed by the plan without --pilot.")
    ] = 0.8,
    as_json: Annotated[
        bool, typer.Option("--json", help=JSON_HELP + " (the plan; with --out also the design and files)")
    ] = False,
) -> None:
    """Choose the items humans should label, and write blank annotation sheets for them.

    Writes to OUT: sheet_long.csv (item_id, annotator, label, text[, inclusion_prob]: one row per assigned rating, label empty), sheet_wide.csv (item_id, text[, inclusion_prob], one empty column per annotator), label_studio_tasks.json + label_studio_config.xml (Label Studio import), sample.json (the design). Fill in either sheet, or export Label Studio's JSON, and give it to `annotator audit --humans` as it is.

    Strategies: random | stratified (by the teacher's label; rare labels covered) | uncertain (low teacher confidence oversampled; inclusion probabilities recorded so the audit reports a design-corrected accuracy) | confidence (Confidence-Driven Inference for `annotator estimate`: items drawn in proportion to the teacher's likely error, learnt from --pilot when given; one annotator per item is allowed).

    --plan prints the expected 95% CI half-width of accuracy and of Krippendorff's alpha for a few sample sizes (normal approximations; see the output) and, with --target-ci, the number of items needed; it writes nothing.
    """  # noqa: E501 - typer keeps line breaks in --help: one paragraph per line, rich wraps it
    from annotator.audit import sampling as sp
    from annotator.errors import InputDataError

    cands, labels = sp.load_candidates(run)
    names = sp.annotator_names(annotators, annotator_names)
    if per_item < 2 and not do_plan and strategy != Strategy.confidence:
        raise InputDataError(
            f"--per-item must be at least 2 for an agreement audit (3 for the alt-test); got {per_item}"
        )
    errors = sp.pilot_errors(pilot, run, cands) if pilot and strategy == Strategy.confidence else None
    drawn = sp.draw(cands, n, strategy.value, seed, labels, pilot=errors)
    sizes = sorted({*DEFAULT_PLAN_SIZES, len(drawn.items)})
    pilot_numbers = _pilot_numbers(pilot, run, strategy) if pilot else None
    the_plan = sp.plan(
        cands,
        drawn.items,
        sizes,
        target=target_ci,
        pilot=pilot_numbers,
        assumed_alpha=expected_alpha,
        deff=drawn.design_effect,
        annotators=len(names),
        per_item=per_item,
    )
    console = result_console()
    plan_data = json.loads(json.dumps(the_plan, default=vars))
    if as_json and do_plan:
        emit_json({"plan": plan_data})
        return
    if not as_json:
        _print_plan(console, the_plan, strategy.value)
    if do_plan:
        return
    if out is None:
        raise InputDataError("--out is required to write the sheets (or give --plan to only print the plan)")
    assignment = sp.assign(len(drawn.items), names, per_item)
    design = {
        "run": str(run),
        "strategy": drawn.strategy,
        "seed": seed,
        "population": drawn.population,
        "n": len(drawn.items),
        "annotators": names,
        "per_item": per_item,
        "design_effect": round(drawn.design_effect, 4),
        "strata": [vars(s) for s in drawn.strata],
        "items_per_annotator": {a: sum(a in who for who in assignment) for a in names},
        "plan": plan_data,
    }
    files = sp.write_sheets(
        out, drawn.items, assignment, names, labels, inclusion_prob=drawn.inclusion_prob, design=design
    )
    if as_json:
        emit_json({"design": design, "files": {k: str(v) for k, v in files.items()}})
    else:
        _print_sample(console, drawn, design, files)


def _pilot_numbers(pilot: Path, run: Path, strategy: Strategy) -> tuple[float, float] | None:
    """The pilot's accuracy and human alpha for the plan. A confidence sample (for `estimate`) may come from a pilot
    with one annotator per item: without an alpha the plan keeps its assumptions."""
    from annotator.audit import sampling as sp
    from annotator.errors import InputDataError

    try:
        return sp.pilot_estimates(pilot, run)
    except InputDataError as exc:
        if strategy != Strategy.confidence:
            raise
        log_console().print(f"[yellow]note:[/] the plan keeps its assumed accuracy and alpha: {exc}", soft_wrap=True)
        return None


def _print_sample(console: Console, drawn: Sample, design: dict[str, Any], files: dict[str, str]) -> None:
    """The strata drawn, each annotator's load and the files written."""
    table = Table(
        title=f"{drawn.strategy} sample: {len(drawn.items)} of {drawn.population} items, seed {design['seed']}"
    )
    for col in ("stratum", "items in run", "drawn", "inclusion prob."):
        table.add_column(col, justify="left" if col == "stratum" else "right")
    for s in drawn.strata:
        table.add_row(s.name, str(s.size), str(s.drawn), f"{s.inclusion_prob:.3f}")
    console.print(table)
    loads = design["items_per_annotator"]
    console.print(
        f"{len(design['annotators'])} annotators, {design['per_item']} per item: "
        + ", ".join(f"{a} {k}" for a, k in loads.items())
    )
    console.print(
        f"sheets: {files['long']} (long), {files['wide']} (wide); Label Studio: {files['label_studio_tasks']}"
        f" + {files['label_studio_config']}; design: {files['design']}",
        soft_wrap=True,
    )


def _print_plan(console: Console, p, strategy: str) -> None:
    ci = f"{int(round(p.confidence * 100))}% CI half-width"
    table = Table(title=f"Sample-size plan ({ci})")
    for col in ("items", "accuracy +-", "alpha +-", "items per annotator"):
        table.add_column(col, justify="right")
    for r in p.rows:
        table.add_row(
            str(r.n), f"{r.accuracy_half_width:.3f}", f"{r.alpha_half_width:.3f}", f"{r.items_per_annotator:.0f}"
        )
    console.print(table)
    console.print(
        f"accuracy: Wald normal approximation, expected accuracy {p.accuracy_guess:.2f} ({p.accuracy_source})"
        + (f", design effect {p.design_effect:.2f} ({strategy} design, Kish)" if p.design_effect > 1.0001 else "")
        + f". alpha: Bloch & Kraemer (1989) two-rater variance for the rarest label in the sample "
        f"'{p.rarest_label}' (share {p.rarest_share:.2f}) vs the rest, alpha {p.alpha_guess:.2f} "
        f"({p.alpha_source}), as Krippendorff "
        "(2004, sec. 11.4) plans sample sizes; conservative with more than 2 ratings per item.",
        soft_wrap=True,
    )
    if p.target is not None:
        console.print(
            f"[bold]For +-{p.target:g}:[/] {p.n_for_accuracy} items for accuracy, {p.n_for_alpha} items for alpha."
        )
    for note in p.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_command)
