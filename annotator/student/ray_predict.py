"""`annotator predict --ray`: the student's forward passes on a Ray cluster, through Ray Data.

The driver streams the input (the same reader and ids as a local run, so resuming works the same) and hands it to
Ray Data in chunks of :data:`CHUNK_ROWS` rows; ``map_batches`` runs them through a pool of actors that each hold
the model (one per GPU when the cluster has GPUs, else CPU actors), and the predictions come back in input order
(``preserve_order``) to be written by the driver exactly like a local run. The model files travel through the
object store, so worker nodes need no copy of the student folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from annotator.errors import AnnotatorError
from annotator.inputs import InputConfig, InputRow
from annotator.student.predict import (
    Labeler,
    PredictError,
    Prediction,
    PredictOptions,
    PredictSummary,
    StudentInfo,
    StudentModel,
    local_labeler,
    predict_file,
)

log = logging.getLogger(__name__)

CHUNK_ROWS = 50_000
"""Rows per Ray Data dataset: bounds the driver's memory; each chunk starts a fresh actor pool."""


class StudentActor:
    """Ray Data callable class: loads the student once per actor, labels a batch of texts."""

    def __init__(self, info: dict[str, Any], files_ref: list[Any], device: str, batch_size: int):
        import ray

        folder = Path(tempfile.mkdtemp(prefix="annotator-student-"))
        try:
            for name, data in ray.get(files_ref[0]).items():
                (folder / name).write_bytes(data)
            student = StudentInfo(**{**info, "dir": Path(info["dir"]), "model_dir": folder})
            self.model = StudentModel(student, model_dir=folder, device=device, batch_size=batch_size)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        preds = self.model.label([str(t) for t in batch["text"]])
        return {"pred": np.array([json.dumps(p) for p in preds], dtype=object)}


def _model_files(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}


def _placement(ray: Any, workers: int | None) -> tuple[int, dict[str, Any], str]:
    """(actors, per-actor resources, torch device): one actor per GPU when there are GPUs, else CPU actors."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return workers or gpus, {"num_gpus": 1}, "cuda"
    # keep one CPU free for Ray Data's own tasks on small clusters
    return workers or max(1, int(resources.get("CPU", 1)) - 1), {"num_cpus": 1}, "cpu"


def ray_labeler(info: StudentInfo, batch_size: int = 64, workers: int | None = None) -> Labeler:
    """A :data:`Labeler` that runs on the connected Ray cluster (call inside ``ray_session``)."""

    def run(batches: Iterator[list[InputRow]]) -> Iterator[list[Prediction]]:
        import ray

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        actors, resources, device = _placement(ray, workers)
        files_ref = [ray.put(_model_files(info.model_dir))]
        info_dict = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(info).items()}
        log.info("predict on Ray: %d actor(s) %s, device %s", actors, resources, device)
        per_chunk = max(1, CHUNK_ROWS // batch_size)
        try:
            yield from _chunks(ray, batches, per_chunk, actors, resources, device, batch_size, info_dict, files_ref)
        except Exception as exc:  # noqa: BLE001 - Ray and Ray Data wrap a worker's error in their own types
            raise _same_answer(exc) from None

    return run


def _same_answer(exc: BaseException) -> BaseException:
    """The error a local run would give for what failed on a worker (an :class:`AnnotatorError` inside Ray's
    wrappers, e.g. a student that does not load), else one line."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, AnnotatorError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__ or cause.__context__
    text = str(exc).strip()
    return PredictError(f"prediction on Ray failed: {text.splitlines()[-1] if text else type(exc).__name__}")


def _chunks(
    ray: Any,
    batches: Iterator[list[InputRow]],
    per_chunk: int,
    actors: int,
    resources: dict[str, Any],
    device: str,
    batch_size: int,
    info_dict: dict[str, Any],
    files_ref: list[Any],
) -> Iterator[list[Prediction]]:
    """Each chunk of batches through a fresh actor pool, predictions in input order."""
    while chunk := list(islice(batches, per_chunk)):
        ds = ray.data.from_items([{"text": r.text or ""} for b in chunk for r in b])
        labelled = ds.map_batches(
            StudentActor,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={
                "info": info_dict,
                "files_ref": files_ref,
                "device": device,
                "batch_size": batch_size,
            },
            **resources,
        )
        yield from _regroup(chunk, iter(labelled.iter_rows()))


def _regroup(chunk: list[list[InputRow]], rows: Iterator[dict[str, Any]]) -> Iterator[list[Prediction]]:
    """Cut the ordered prediction stream back into the caller's batches."""
    for b in chunk:
        preds = [json.loads(r["pred"]) for r in islice(rows, len(b))]
        if len(preds) != len(b):
            raise RuntimeError(f"Ray returned {len(preds)} predictions for a batch of {len(b)} rows")
        yield preds


def predict_here_or_on_ray(
    info: StudentInfo,
    input_cfg: InputConfig,
    opts: PredictOptions,
    device: str = "auto",
    ray: str | None = None,
    ray_workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PredictSummary:
    """:func:`predict_file` in this process (on ``device``), or with ``ray`` (an address, or ``"local"`` for
    ray.init()'s default) on a Ray cluster."""
    if ray is None:
        return predict_file(info, input_cfg, opts, local_labeler(info, device, opts.batch_size), on_progress)
    from annotator.ray_support import ray_session

    with ray_session(None if ray == "local" else ray):
        return predict_file(info, input_cfg, opts, ray_labeler(info, opts.batch_size, ray_workers), on_progress)
