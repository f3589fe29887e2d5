"""`annotator predict STUDENT INPUT --out FILE`: a trained student labels a corpus (locally or on Ray)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from annotator.choices import InputFormat
from annotator.commands.output import log_console
from annotator.inputs import InputConfig
from annotator.progress import ProgressDisplay

if TYPE_CHECKING:
    from annotator.student.predict import PredictOptions, PredictSummary, StudentInfo


def predict_command(
    student: Annotated[Path, typer.Argument(help="Student folder written by `annotator train-student`.")],
    input: Annotated[Path, typer.Argument(help="Texts to label: .csv, .tsv, .jsonl or .parquet.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Predictions (JSONL, one line per input row).")],
    id_column: Annotated[str, typer.Option("--id-column", help="Column holding the row id.")] = "id",
    text_column: Annotated[str, typer.Option("--text-column", help="Column holding the text.")] = "text",
    fmt: Annotated[
        InputFormat, typer.Option("--format", case_sensitive=False, help="Input format (auto: from the extension).")
    ] = InputFormat.auto,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N rows.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per forward pass.")] = 64,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N (local only).")] = "auto",
    route_below: Annotated[
        float | None,
        typer.Option("--route-below", min=0.0, max=1.0, help="Also write rows with confidence below this..."),
    ] = None,
    route_out: Annotated[Path | None, typer.Option("--route-out", help="...to this JSONL file.")] = None,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Run on Ray: a cluster address, or `--ray` alone for ray.init()'s default."),
    ] = None,
    ray_workers: Annotated[
        int | None, typer.Option("--ray-workers", min=1, help="Model replicas on Ray (default: one per GPU, else 2).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Label every row of INPUT with the student: id, label(s), confidence and per-label probabilities.

    Resumable: rerun the same command after a crash or Ctrl-C and it continues after the rows already in OUT
    (which are checked against INPUT and the student's label set first).
    """
    from annotator.student.predict import PredictError, PredictOptions, load_student_info

    for option, path in (("--out", out), ("--route-out", route_out)):
        if path is not None and path.suffix.lower() not in (".jsonl", ".ndjson"):
            raise PredictError(f"{option} {path}: predict writes JSONL; use a .jsonl file name")
    info = load_student_info(student)
    cfg = InputConfig(path=input, format=fmt, id_column=id_column, text_column=text_column, limit=limit)
    opts = PredictOptions(out=out, route_below=route_below, route_out=route_out, batch_size=batch_size)
    started = time.monotonic()
    summary = _predict_with_progress(info, cfg, opts, device, ray, ray_workers, quiet)
    elapsed = time.monotonic() - started
    rate = summary.predicted / elapsed if elapsed > 0 else 0.0
    resumed = f" (resumed after {summary.resumed_after:,})" if summary.resumed_after else ""
    console = log_console()
    console.print(f"{summary.predicted:,} rows labelled{resumed} in {elapsed:.1f}s ({rate:,.1f} rows/s) -> {out}")
    if summary.failed:
        console.print(f"[yellow]{summary.failed} row(s) had an empty text[/] (field 'error' in {out})")
    if route_out is not None:
        console.print(f"{summary.routed:,} row(s) below confidence {route_below} -> {route_out}")


def _predict_with_progress(
    info: StudentInfo,
    cfg: InputConfig,
    opts: PredictOptions,
    device: str,
    ray: str | None,
    ray_workers: int | None,
    quiet: bool,
) -> PredictSummary:
    """Label the file here (``device``) or on Ray, with a progress bar on stderr unless ``quiet``."""
    from annotator.student.ray_predict import predict_here_or_on_ray

    with ProgressDisplay("predict", "rows", enabled=not quiet) as progress:
        return predict_here_or_on_ray(info, cfg, opts, device, ray, ray_workers, on_progress=progress.update)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
