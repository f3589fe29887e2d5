"""The student side of a distill round, on the existing code: the round's labels exported as a classification
dataset (the task's own exporter), ``train_student`` on it (student, baseline, calibration, scores vs gold, card),
``predict_file`` over the corpus (batched, streamed, resumable; local or on Ray), and the student's embeddings of the
few candidate rows the batch is chosen from (diversity)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotator.config import PipelineConfig
from annotator.distill.state import DistillError
from annotator.inputs import InputConfig, InputRow
from annotator.records import AnnotationRecord
from annotator.student.data import StudentOptions
from annotator.student.loop import TrainConfig
from annotator.student.metrics import StudentMetrics
from annotator.student.predict import (
    PredictOptions,
    PredictSummary,
    StudentModel,
    load_student_info,
)
from annotator.student.ray_predict import predict_here_or_on_ray
from annotator.student.train import train_student
from annotator.tasks import ExportContext, ExportItem, build_task, get_task_class

CLASSIFICATION = "classification"
PREDICTIONS_FILE = "predictions.jsonl"  # a round's student labels for every corpus row, in input order


def label_names_of(cfg: PipelineConfig) -> tuple[list[str], bool] | None:
    """The task's label names and multi-label flag, or None when its runs do not export classification rows."""
    labels, multi_label = build_task(cfg.task).manifest_labels()
    if not labels or CLASSIFICATION not in get_task_class(cfg.task.type).exporter.formats:
        return None
    return [lab.name for lab in labels], multi_label


def write_dataset(
    out: Path, cfg: PipelineConfig, records: dict[str, AnnotationRecord], splits: dict[str, list[str]]
) -> Path:
    """The labelled rows of each split as a ``DatasetDict`` in ``out`` (as ``annotator export`` writes them)."""
    import datasets

    from annotator.export.dataset_builder import build_dataset

    labels, multi_label = build_task(cfg.task).manifest_labels()
    ctx = ExportContext(
        task=cfg.task.type,
        fmt=CLASSIFICATION,
        label_names=[lab.name for lab in labels],
        descriptions={lab.name: lab.description for lab in labels},
        multi_label=multi_label,
    )
    exporter = get_task_class(cfg.task.type).exporter(ctx)
    kept: dict[str, list[ExportItem]] = {}
    for split, ids in splits.items():
        items = [exporter.keep(records[i]) for i in ids]
        kept[split] = [it for it in items if isinstance(it, ExportItem)]
    exporter.finish_selection([it for items in kept.values() for it in items])
    dsd, _ = build_dataset(exporter, {s: [r for it in items for r in exporter.rows(it)] for s, items in kept.items()})
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dsd.save_to_disk(str(staging))
    finally:
        if bars:
            datasets.enable_progress_bars()
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


@dataclass
class StudentSettings:
    """How each round's student is trained and run (:func:`round_train_config` by default)."""

    model: str | None = None
    train: TrainConfig | None = None
    gold: Path | None = None
    show_progress: bool = True
    predict_batch_size: int = 64
    device: str = "auto"
    ray: str | None = None  # predict on Ray: an address, or "local" for ray.init()'s default
    ray_workers: int | None = None


def round_train_config(
    epochs: float = 10,
    max_length: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "auto",
    class_weights: str = "none",
) -> TrainConfig:
    """train-student's settings for a round, with shorter texts (64 tokens): at most 10 epochs, early stop after 2
    without progress on validation. Shorter training is a false economy: with a rare label the validation accuracy
    sits at the majority-class rate for a few epochs before it rises, and stopping after 1 such epoch kept a student
    that never predicts the rare label (Rotten Tomatoes with 'rotten' at 20%: macro-F1 0.44 at 4 epochs / patience
    1, 0.55 at 10 / 2, 140 labels). ``class_weights``: see ``--class-weights`` (unweighted by default: with a
    noisy teacher a rare label's teacher labels are the noisiest, and weighing them up cost the fine-tuned
    student 0.1 macro-F1 in the benchmark; docs/distill.md#benchmark)."""
    return TrainConfig(
        epochs=epochs,
        max_length=max_length,
        batch_size=batch_size,
        patience=2,
        seed=seed,
        device=device,
        class_weights=class_weights,
    )


def train_round(dataset: Path, out: Path, s: StudentSettings) -> StudentMetrics:
    """``train_student`` on the round's dataset (the student, its baseline, scores vs ``--gold``)."""
    opts = StudentOptions(
        out=out, gold=s.gold, model=s.model, train=s.train or round_train_config(), show_progress=s.show_progress
    )
    return train_student(dataset, opts)


def predict_corpus(
    student: Path,
    corpus: InputConfig,
    out: Path,
    s: StudentSettings,
    on_progress: Callable[[int, int], None] | None = None,
) -> PredictSummary:
    """The student labels every corpus row into ``out`` (resumes a partial file), here or on Ray."""
    opts = PredictOptions(out=out, batch_size=s.predict_batch_size)
    return predict_here_or_on_ray(load_student_info(student), corpus, opts, s.device, s.ray, s.ray_workers, on_progress)


def read_predictions(path: Path, rows: Iterator[InputRow]) -> Iterator[tuple[InputRow, dict[str, Any]]]:
    """The corpus rows with the student's prediction of each (the file is in input order)."""
    with path.open(encoding="utf-8") as fh:
        for row, line in zip(rows, fh):
            pred = json.loads(line)
            if pred.get("id") != row.id:
                raise DistillError(
                    f"{path}: prediction for {pred.get('id')!r} where the corpus has {row.id!r}; "
                    f"delete {path} and rerun"
                )
            yield row, pred


def embed(student: Path, texts: list[str], device: str = "auto", batch_size: int = 64) -> Any:
    """The student encoder's mean-pooled last hidden states of ``texts`` (numpy, texts x width)."""
    import numpy as np
    import torch

    info = load_student_info(student)
    m = StudentModel(info, device=device, batch_size=batch_size)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    m.model.to(dev)
    out = []
    with torch.inference_mode():
        for b in range(0, len(texts), batch_size):
            enc = m.tokenizer(
                texts[b : b + batch_size],
                padding=True,
                truncation=True,
                max_length=info.max_length,
                return_tensors="pt",
            ).to(dev)
            hidden = m.model.base_model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, m.model.config.hidden_size))
