"""`annotator predict`: a trained student labels a corpus.

Streamed (``annotator.inputs``), batched, resumable: OUT gets one JSON line per input row, in input order, appended
and fsynced batch by batch. A rerun checks the lines already in OUT against the input (same ids, the student's
labels), cuts a torn last line, and continues after them. Rows whose confidence is below ``route_below`` are also
written to a route file (id, text, prediction, input position ``row``) that is itself a valid pipeline input for the
teacher or for humans.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from annotator.errors import AnnotatorError
from annotator.guard import check_distinct, claim, is_claimed, require_owned
from annotator.inputs import InputConfig, InputRow, count_rows, cut_by_limit, iter_rows
from annotator.rundir import mark_incomplete, output_error
from annotator.student.integrity import check_loaded, check_metrics, check_model_dir
from annotator.student.loop import decode, predict
from annotator.student.metrics import METRICS_FILE, MODEL_DIR

log = logging.getLogger(__name__)

Prediction = dict[str, Any]
"""What the student says about one text: label (or labels), confidence, probs; or error."""
Labeler = Callable[[Iterator[list[InputRow]]], Iterator[list[Prediction]]]
"""Turns batches of rows into batches of predictions, same order and sizes (local or on Ray)."""


class PredictError(AnnotatorError):
    """`annotator predict` cannot run as asked."""


@dataclass(frozen=True)
class StudentInfo:
    """A student folder written by ``annotator train-student``: model + label set."""

    dir: Path
    model_dir: Path
    label_names: list[str]
    multi_label: bool
    max_length: int


def load_student_info(path: str | Path) -> StudentInfo:
    """Read and check a student folder: metrics.json, model/ whose labels match, its tokenizer and the checksums
    train-student recorded (see :mod:`annotator.student.integrity`)."""
    p = Path(path)
    if not p.is_dir():
        raise PredictError(f"student folder not found: {p} (the --out folder of `annotator train-student`)")
    metrics = p / METRICS_FILE
    model_dir = p / MODEL_DIR
    if not metrics.is_file() or not (model_dir / "config.json").is_file():
        raise PredictError(
            f"{p} is not a student: it needs {METRICS_FILE} and {MODEL_DIR}/config.json "
            f"(train one with `annotator train-student DATASET --out {p}`)"
        )
    try:
        data = json.loads(metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PredictError(f"{p} is not a student: {metrics} is not readable JSON ({exc})") from None
    label_names, multi_label, max_length = check_metrics(metrics, data)
    check_model_dir(p, model_dir, label_names)
    return StudentInfo(p, model_dir, label_names, multi_label, max_length)


class StudentModel:
    """The student's tokenizer + classifier in memory; ``label(texts)`` -> predictions."""

    def __init__(self, info: StudentInfo, model_dir: Path | None = None, device: str = "auto", batch_size: int = 64):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # as in training: loading is instant, `predict` shows its own bar
        where = str(model_dir or info.model_dir)
        self.info = info
        self.device = device
        self.batch_size = batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(where)
            self.model, loading = AutoModelForSequenceClassification.from_pretrained(where, output_loading_info=True)
        except Exception as exc:  # noqa: BLE001 - a damaged file fails in many libraries' ways: one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PredictError(f"cannot load the student model in {info.model_dir}: {first}") from None
        check_loaded(info.model_dir, loading)
        self.model.eval()

    def label(self, texts: list[str | None]) -> list[Prediction]:
        """One prediction per text; an empty text gets an error instead of a guess."""
        info = self.info
        todo = [(i, t) for i, t in enumerate(texts) if t and t.strip()]
        out: list[Prediction] = [{"error": "empty text"} for _ in texts]
        if not todo:
            return out
        probs = predict(
            self.model,
            self.tokenizer,
            [t for _, t in todo],
            self.batch_size,
            info.max_length,
            info.multi_label,
            self.device,
        )
        labels, conf = decode(probs, info.label_names, info.multi_label)
        for k, (i, _) in enumerate(todo):
            out[i] = {
                "labels" if info.multi_label else "label": labels[k],
                "confidence": round(conf[k], 6),
                "probs": {name: round(float(p), 6) for name, p in zip(info.label_names, probs[k])},
            }
        return out


def local_labeler(info: StudentInfo, device: str = "auto", batch_size: int = 64) -> Labeler:
    """Label batches in this process."""

    def run(batches: Iterator[list[InputRow]]) -> Iterator[list[Prediction]]:
        model = StudentModel(info, device=device, batch_size=batch_size)
        for batch in batches:
            yield model.label([r.text for r in batch])

    return run


# ---------------------------------------------------------------------------------------------- output files


def _cut_torn_tail(path: Path) -> None:
    """Drop bytes after the last newline (a line half-written when the process died)."""
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        pos = size
        while pos > 0:
            step = min(1 << 16, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos != size:
            log.warning("%s: dropping a torn last line (%d bytes)", path, size - pos)
            fh.truncate(pos)
            fh.flush()
            os.fsync(fh.fileno())


def _check_record(path: Path, line_no: int, line: bytes, row: InputRow | None, info: StudentInfo) -> None:
    where = f"{path} line {line_no}"
    try:
        rec = json.loads(line)
    except ValueError:
        raise PredictError(f"{where} is not JSON: not a predict output? Delete it or choose another --out") from None
    if row is None:
        raise PredictError(f"{where}: {path} has more lines than the input has rows; delete it or choose another --out")
    if not isinstance(rec, dict) or rec.get("id") != row.id:
        got = rec.get("id") if isinstance(rec, dict) else rec
        raise PredictError(
            f"{where}: id {got!r} but input row {row.index + 1} has id {row.id!r}: {path} was written for another "
            "input; delete it or choose another --out"
        )
    said = rec.get("labels") if info.multi_label else rec.get("label")
    if "error" not in rec:
        names = said if isinstance(said, list) else [said]
        unknown = [n for n in names if n not in info.label_names]
        if unknown or ("labels" in rec) != info.multi_label:
            raise PredictError(
                f"{where}: label {said!r} is not in this student's label set {info.label_names}: {path} was "
                "written by another student; delete it or choose another --out"
            )


PREDICTIONS_ROLE, ROUTE_ROLE = "predictions", "route"


def _require_claimed(path: Path, role: str) -> None:
    """Touch (repair, trim, append to) an existing ``path`` only when this command wrote it in ``role``."""
    require_owned(path, "predict", is_claimed(path, "predict", role), f"claim of a {role} file beside it")


def resume_point(out: Path, rows: Iterator[InputRow], info: StudentInfo) -> int:
    """How many rows ``out`` already holds, after checking each line against the input row it stands for."""
    if not out.exists():
        return 0
    _require_claimed(out, PREDICTIONS_ROLE)
    _cut_torn_tail(out)
    done = 0
    with out.open("rb") as fh:
        for done, line in enumerate(fh, start=1):
            _check_record(out, done, line, next(rows, None), info)
    return done


def trim_route_file(route: Path, done: int) -> None:
    """Keep the route lines of rows before ``done`` (a batch may have been routed but not committed to OUT)."""
    if not route.exists():
        return
    _require_claimed(route, ROUTE_ROLE)
    _cut_torn_tail(route)
    keep = 0
    with route.open("rb") as fh:
        for line in fh:
            try:
                row = json.loads(line)["row"]
            except (ValueError, KeyError, TypeError):
                raise PredictError(f"{route} is not a route file of `annotator predict`; delete it") from None
            if row >= done:
                break
            keep += len(line)
    with route.open("rb+") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


def _append(fh: IO[bytes], lines: list[bytes]) -> None:
    if lines:
        fh.write(b"".join(lines))
        fh.flush()
        os.fsync(fh.fileno())


def _dumps(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class PredictOptions:
    out: Path
    route_below: float | None = None
    route_out: Path | None = None
    batch_size: int = 64


@dataclass
class PredictSummary:
    rows: int
    resumed_after: int
    predicted: int
    routed: int
    failed: int


def _batches(rows: Iterable[InputRow], size: int) -> Iterator[list[InputRow]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _should_route(pred: Prediction, threshold: float | None) -> bool:
    return threshold is not None and ("error" in pred or pred["confidence"] < threshold)


def predict_file(
    info: StudentInfo,
    input_cfg: InputConfig,
    opts: PredictOptions,
    labeler: Labeler,
    on_progress: Callable[[int, int], None] | None = None,
) -> PredictSummary:
    """Label every input row not yet in ``opts.out``; ``on_progress(done, total)`` after each batch."""
    if (opts.route_below is None) != (opts.route_out is None):
        raise PredictError("--route-below and --route-out go together")
    check_distinct(
        "predict",
        {"--out": opts.out, "--route-out": opts.route_out},
        {"INPUT file": input_cfg.path, "student folder": info.dir, "student's metrics.json": info.dir / METRICS_FILE},
    )
    total = count_rows(input_cfg)
    rows = iter_rows(input_cfg, batch_size=max(opts.batch_size, 1024))
    summary = _resume(info, opts, rows, total)
    progress = on_progress or (lambda done, total: None)
    progress(summary.resumed_after, total)
    for path, role in ((opts.out, PREDICTIONS_ROLE), (opts.route_out, ROUTE_ROLE)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            claim(path, "predict", role, input=str(input_cfg.path), student=str(info.dir))
    with (
        opts.route_out.open("ab") if opts.route_out is not None else nullcontext() as route_fh,
        opts.out.open("ab") as out_fh,
    ):
        for batch, preds in _labelled(labeler, _batches(rows, opts.batch_size)):
            try:
                _write_batch(batch, preds, out_fh, route_fh, opts.route_below, summary)
            except OSError as exc:  # a full disk: the lines written so far stay; the rerun repairs a torn one
                raise output_error(
                    exc, exc.filename or opts.out, kept="every whole line written so far is kept"
                ) from None
            progress(summary.resumed_after + summary.predicted, total)
    if cut_by_limit(input_cfg):
        for path in (opts.out, opts.route_out):
            if path is not None and path.exists():
                mark_incomplete(path)
    return summary


def _resume(info: StudentInfo, opts: PredictOptions, rows: Iterator[InputRow], total: int) -> PredictSummary:
    """Skip ``rows`` past the lines already in OUT (checked against them), trim the route file to match."""
    done = resume_point(opts.out, rows, info)
    if opts.route_out is not None:
        trim_route_file(opts.route_out, done)
    if done:
        log.info("%s holds %d of %d rows: continuing after them", opts.out, done, total)
    return PredictSummary(rows=total, resumed_after=done, predicted=0, routed=0, failed=0)


def _labelled(labeler: Labeler, batches: Iterator[list[InputRow]]) -> Iterator[tuple[list[InputRow], list[Prediction]]]:
    """Each batch with its predictions, in order (the labeler may read batches ahead, e.g. on Ray)."""
    pending: list[list[InputRow]] = []

    def feed() -> Iterator[list[InputRow]]:
        for b in batches:
            pending.append(b)
            yield b

    for preds in labeler(feed()):
        batch = pending.pop(0)
        if len(preds) != len(batch):
            raise RuntimeError(f"labeler returned {len(preds)} predictions for {len(batch)} rows")
        yield batch, preds


def _write_batch(
    batch: list[InputRow],
    preds: list[Prediction],
    out_fh: IO[bytes],
    route_fh: IO[bytes] | None,
    threshold: float | None,
    summary: PredictSummary,
) -> None:
    """Route lines first, then OUT: a crash in between leaves extra route lines that the rerun trims."""
    routed = [
        _dumps({"row": r.index, "id": r.id, "text": r.text, **p})
        for r, p in zip(batch, preds)
        if route_fh is not None and _should_route(p, threshold)
    ]
    if route_fh is not None:
        _append(route_fh, routed)
    _append(out_fh, [_dumps({"id": r.id, **p}) for r, p in zip(batch, preds)])
    summary.predicted += len(batch)
    summary.routed += len(routed)
    summary.failed += sum(1 for p in preds if "error" in p)
