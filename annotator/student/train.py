"""Fine-tune a small encoder classifier on an exported dataset and compare it with the teacher on human gold.

Plain PyTorch loop (AdamW, linear warm-up/decay), CPU-friendly defaults: at most 10 epochs, lr 2e-4 for the
encoder and 1e-3 for the new classifier head, batch 16, max_length 128 (on the 72-item demo BERT's usual 5e-5
leaves the loss near its start after 40 steps). ``max_steps`` overrides the epochs (as in transformers' Trainer).

Model selection: after every epoch the student is scored on the export's validation split (accuracy against the
teacher's labels, ties broken by the lower validation loss); the best epoch's weights are kept and training stops
after ``patience`` epochs without improvement. With noisy teacher labels this stops the student from memorising
the teacher's mistakes; the chosen epoch is reported. The same validation logits then fit the temperature that
calibrates the student's confidence (``annotator.student.calibration``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from annotator.errors import AnnotatorError, InputDataError
from annotator.student.calibration import (
    METHOD,
    MIN_FIT_ITEMS,
    TEMPERATURE_KEY,
    all_correct,
    at_search_bound,
    ece,
    fit_temperature,
    nll,
    probabilities,
    saved_temperature,
)
from annotator.student.evaluate import EvalBlock, Labelled, Scores, evaluate_scope, score
from annotator.student.slices import Roles, Selection, SliceColumn, assign_roles, read_column, selection
from annotator.student.where import parse_where

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
MODEL_DIR = "model"
CARD_FILE = "README.md"  # the student's model card, in MODEL_DIR
DEFAULT_THRESHOLDS = (0.5, 0.7, 0.9, 1.0)


class StudentError(AnnotatorError):
    """train-student cannot run as asked."""


@dataclass
class TrainConfig:
    epochs: float = 10  # the most epochs; early stopping on validation usually ends sooner
    lr: float = 2e-4
    batch_size: int = 16
    max_length: int = 128
    max_steps: int | None = None
    seed: int = 42
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    # The fresh classifier head learns faster than the pre-trained body (None: same as lr). With tiny
    # exports (tens to hundreds of rows, ~40 steps) 2e-4 / 1e-3 converge where BERT's usual 5e-5 underfits.
    head_lr: float | None = 1e-3
    # Stop after this many epochs without a better validation score (0: train every epoch, still keep the best).
    patience: int = 2
    device: str = "auto"


@dataclass
class EvalSet:
    """Held-out texts and their (teacher) targets used to select the epoch."""

    texts: list[str]
    targets: list[Any]


@dataclass
class TrainResult:
    steps: int
    epochs_run: float
    seconds: float
    final_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None  # the epoch whose weights were kept (None: no validation, last weights)
    best_step: int | None = None
    stopped_early: bool = False


class SliceScores(BaseModel):
    """A learning-curve point's scores on one slice of the held-out items."""

    items: int
    with_gold: int = 0
    student: Scores | None = Field(None, description="Student vs human gold.")
    student_vs_teacher: Scores | None = None


class CalibrationInfo(BaseModel):
    """Temperature scaling of one student: T fit on the validation items, ECE on the held-out items."""

    method: str = METHOD
    temperature: float = 1.0
    fitted: bool = Field(False, description="T was fit on validation (False: left at 1, the note says why).")
    at_bound: bool = Field(False, description="The fitted T sits at the end of its search interval [0.05, 20.09].")
    fit_split: str | None = None
    fit_items: int = 0
    validation_nll_before: float | None = None
    validation_nll_after: float | None = None
    eval_split: str | None = None
    reference: str | None = Field(None, description="Labels the ECE is measured against: 'gold' or 'teacher'.")
    eval_items: int = 0
    ece_before: float | None = Field(None, description="ECE of the uncalibrated student (T = 1).")
    ece_after: float | None = Field(None, description="ECE with the fitted temperature.")
    note: str | None = None


class LearningCurvePoint(BaseModel):
    requested: str = Field(description="As given in --sizes (a count, a fraction or 'all').")
    size: int
    clipped: bool = False
    steps: int
    epochs_run: float = 0.0
    best_epoch: int | None = None
    seconds: float = 0.0
    student: Scores | None = Field(None, description="Student vs human gold on the evaluation split.")
    student_vs_teacher: Scores | None = None
    slices: dict[str, SliceScores] | None = Field(None, description="--eval-by COLUMN: the same per slice.")
    calibration: CalibrationInfo | None = Field(
        None, description="This point's own temperature (fit on validation) and its test ECE before and after."
    )


class SliceEvaluation(BaseModel):
    """``train-student --eval-by COLUMN``: student and teacher vs gold on each slice of the evaluated scope."""

    column: str
    source: str = Field(description="The file the column was read from (the gold file, else the run's input).")
    scope: str = Field(description="The split evaluated per slice (the held-out split, else 'all').")
    slices: dict[str, EvalBlock]


class StudentMetrics(BaseModel):
    """Saved as ``metrics.json`` by ``annotator train-student``."""

    created_at: str
    dataset: str
    gold: str | None
    base_model: str
    model_dir: str
    task: str = "label"
    multi_label: bool
    label_names: list[str]
    train_config: dict[str, Any]
    train_size: int
    steps: int
    epochs_run: float
    best_epoch: int | None = Field(None, description="Epoch whose weights were kept (best on validation).")
    stopped_early: bool = False
    train_seconds: float
    final_loss: float | None
    history: list[dict[str, Any]] = []
    eval_split: str | None = Field(
        None, description="The held-out scope ('test' in evaluation): a split, or 'test-where' (--test-where)."
    )
    evaluation: dict[str, EvalBlock] = Field(
        default_factory=dict,
        description="'test': held-out split; 'all': every exported item (includes training items).",
    )
    calibration: CalibrationInfo = Field(default_factory=CalibrationInfo)
    gold_info: dict[str, Any] = Field(default_factory=dict)
    learning_curve: list[LearningCurvePoint] = []
    slices: SliceEvaluation | None = Field(None, description="--eval-by COLUMN: the evaluated scope per slice.")
    selection: Selection | None = Field(None, description="--train-where / --test-where as applied.")
    notes: list[str] = []


# ---------------------------------------------------------------------------------------------- torch bits


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _targets(rows: Sequence[Any], num_labels: int, multi_label: bool):
    import torch

    if multi_label:
        t = torch.zeros(len(rows), num_labels)
        for i, labs in enumerate(rows):
            for lab in labs:
                t[i, lab] = 1.0
        return t
    return torch.tensor(list(rows), dtype=torch.long)


def _optimizer(model, cfg: TrainConfig, total: int):
    """AdamW with separate learning rates for the encoder and the new head, no decay on biases/norms."""
    import torch

    warmup = int(total * cfg.warmup_ratio)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
    body = {id(p) for p in model.base_model.parameters()} if getattr(model, "base_model", None) is not model else set()
    groups = []
    for is_body in (True, False):
        lr = cfg.lr if is_body or cfg.head_lr is None else cfg.head_lr
        for decay in (True, False):
            params = [
                p
                for nm, p in model.named_parameters()
                if p.requires_grad and (id(p) in body) == is_body and (not any(k in nm for k in no_decay)) == decay
            ]
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": cfg.weight_decay if decay else 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


class _Selector:
    """Keeps the weights of the best validation score seen so far; says when patience has run out."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: tuple[float, float] | None = None  # (accuracy, -loss): larger is better
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self.state: dict[str, Any] | None = None
        self.bad = 0

    def update(self, model, epoch: int, step: int, accuracy: float, loss: float) -> bool:
        """Record one evaluation; True when training should stop."""
        key = (round(accuracy, 9), -loss)
        if self.best is None or key > self.best:
            self.best, self.best_epoch, self.best_step, self.bad = key, epoch, step, 0
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad += 1
        return self.patience > 0 and self.bad >= self.patience

    def restore(self, model) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def validation_scores(model, tokenizer, val: EvalSet, cfg: TrainConfig, multi_label: bool) -> tuple[float, float]:
    """(accuracy vs the targets, mean loss) of ``model`` on ``val``; multi-label accuracy is exact-set match."""
    import numpy as np

    logits = predict_logits(model, tokenizer, val.texts, max(cfg.batch_size, 32), cfg.max_length, cfg.device)
    y = _targets(val.targets, logits.shape[1], multi_label).numpy()
    if multi_label:
        acc = float(np.mean(np.all((logits >= 0) == (y > 0.5), axis=1)))
    else:
        acc = float(np.mean(logits.argmax(axis=1) == y))
    return acc, nll(logits, y, multi_label)


def _progress(show: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show,
        transient=False,
        console=Console(stderr=True),  # progress goes to stderr, results to stdout
    )


@dataclass
class _Loop:
    """One fine-tuning run's moving parts: the model, its batches' inputs, the optimiser and the step count."""

    model: Any
    tokenizer: Any
    texts: Sequence[str]
    y: Any  # target tensor
    cfg: TrainConfig
    device: Any
    opt: Any
    sched: Any
    total: int  # steps to run at most
    step: int = 0
    loss: float | None = None  # the last batch's

    def epoch(self, order: list[int], advance: Callable[[float], None]) -> list[float]:
        """One pass over ``order`` in batches (stops at ``total`` steps); the batch losses."""
        import torch

        self.model.train()
        losses: list[float] = []
        for b in range(0, len(order), self.cfg.batch_size):
            if self.step >= self.total:
                break
            idx = order[b : b + self.cfg.batch_size]
            enc = self.tokenizer(
                [self.texts[i] for i in idx], padding=True, truncation=True, max_length=self.cfg.max_length,
                return_tensors="pt",
            ).to(self.device)
            out = self.model(**enc, labels=self.y[idx].to(self.device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            self.loss = float(out.loss.detach().cpu())
            losses.append(self.loss)
            advance(self.loss)
        return losses


def train_classifier(
    model,
    tokenizer,
    texts: Sequence[str],
    targets: Sequence[Any],
    cfg: TrainConfig,
    multi_label: bool = False,
    description: str = "training",
    show_progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    validation: EvalSet | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place; with ``validation``, keep the best epoch's weights and stop early.

    ``targets``: label ids, or lists of label ids when multi-label.
    """
    import torch

    n = len(texts)
    if n == 0:
        raise StudentError("no training items")
    device = _device(cfg.device)
    model.to(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps else max(1, math.ceil(cfg.epochs * per_epoch))
    opt, sched = _optimizer(model, cfg, total)
    loop = _Loop(model, tokenizer, texts, _targets(targets, model.config.num_labels, multi_label), cfg, device, opt,
                 sched, total)
    selector = _Selector(cfg.patience) if validation is not None and validation.texts else None
    history: list[dict[str, Any]] = []
    stopped = False
    t0 = time.perf_counter()
    with _progress(show_progress) as progress:
        bar = progress.add_task(description, total=total, loss="-")

        def advance(loss: float) -> None:
            progress.update(bar, advance=1, loss=f"{loss:.4f}")
            if on_step:
                on_step(loop.step, loss)

        while loop.step < total and not stopped:
            losses = loop.epoch(torch.randperm(n, generator=gen).tolist(), advance)
            entry: dict[str, Any] = {"epoch": len(history) + 1, "steps": loop.step,
                                     "loss": round(sum(losses) / len(losses), 5)}
            if selector is not None:
                acc, vloss = validation_scores(model, tokenizer, validation, cfg, multi_label)  # type: ignore[arg-type]
                entry.update(val_accuracy=round(acc, 5), val_loss=round(vloss, 5))
                stopped = selector.update(model, entry["epoch"], loop.step, acc, vloss) and loop.step < total
            history.append(entry)
    if selector is not None:
        selector.restore(model)
    model.eval()
    return TrainResult(
        steps=loop.step,
        epochs_run=round(loop.step / per_epoch, 3),
        seconds=round(time.perf_counter() - t0, 2),
        final_loss=None if loop.loss is None else round(loop.loss, 5),
        history=history,
        best_epoch=selector.best_epoch if selector else None,
        best_step=selector.best_step if selector else None,
        stopped_early=stopped,
    )


def predict_logits(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 128,
                   device: str = "auto"):
    """Raw logits (items x labels) as a float64 numpy array."""
    import numpy as np
    import torch

    dev = _device(device)
    model.to(dev)
    model.eval()
    outs = []
    with torch.inference_mode():
        for b in range(0, len(texts), batch_size):
            enc = tokenizer(
                list(texts[b : b + batch_size]), padding=True, truncation=True, max_length=max_length,
                return_tensors="pt",
            ).to(dev)
            outs.append(model(**enc).logits.double().cpu().numpy())
    if not outs:
        return np.zeros((0, model.config.num_labels))
    return np.concatenate(outs)


def predict(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 32,
    max_length: int = 128,
    multi_label: bool = False,
    device: str = "auto",
    temperature: float | None = None,
):
    """Class probabilities (softmax, or per-label sigmoid when multi-label) as a numpy array.

    ``temperature``: None uses the one saved with the model (``config.student_temperature``, 1.0 if absent).
    """
    t = saved_temperature(model.config) if temperature is None else temperature
    return probabilities(predict_logits(model, tokenizer, texts, batch_size, max_length, device), multi_label, t)


def decode(probs, label_names: list[str], multi_label: bool) -> tuple[list[Any], list[float]]:
    """Predicted label (set) and the student's confidence in it."""
    preds: list[Any] = []
    conf: list[float] = []
    for row in probs:
        if multi_label:
            chosen = [label_names[i] for i, p in enumerate(row) if p >= 0.5]
            if not chosen:
                chosen = [label_names[int(row.argmax())]]
            preds.append(chosen)
            conf.append(float(min(max(p, 1 - p) for p in row)))
        else:
            i = int(row.argmax())
            preds.append(label_names[i])
            conf.append(float(row[i]))
    return preds, conf


# ---------------------------------------------------------------------------------------------- dataset


def resolve_dataset_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputDataError(f"dataset not found: {p} (run `annotator export RUN_DIR` first)")
    for cand in (p, p / "dataset"):
        if (cand / "dataset_dict.json").is_file():
            return cand
    raise InputDataError(
        f"{p} is not an exported dataset (no dataset_dict.json); run `annotator export RUN_DIR --out {p}`"
    )


def label_schema(dsd) -> tuple[str, list[str], bool]:
    """(column, label names, multi_label) of a classification export."""
    from datasets import ClassLabel

    first = next(iter(dsd.values()))
    feats = first.features
    if isinstance(feats.get("label"), ClassLabel):
        return "label", list(feats["label"].names), False
    inner = getattr(feats.get("labels"), "feature", None)
    if isinstance(inner, ClassLabel):
        return "labels", list(inner.names), True
    raise StudentError(
        "train-student needs a classification export (a 'label' ClassLabel or 'labels' list of ClassLabel column); "
        "export a label task with --format classification"
    )


def parse_sizes(spec: str | None, n_train: int) -> list[tuple[str, int]]:
    """``--sizes``: counts (250), fractions of the train split (0.25 or 25%) and ``all`` -> (as given, count).

    Counts above the train split are clipped to it by the caller (and reported).
    """
    if not spec:
        return []
    hint = f"give sizes like 250,1000,all or fractions like 0.25 (the train split has {n_train} items)"
    out: list[tuple[str, int]] = []
    for part in (x for x in spec.replace(" ", "").split(",") if x):
        if part.lower() == "all":
            out.append((part, n_train))
            continue
        try:
            if part.endswith("%") or "." in part:
                frac = float(part.rstrip("%")) / (100 if part.endswith("%") else 1)
                if not 0 < frac <= 1:
                    raise StudentError(f"bad --sizes {spec!r}: fraction {part} must be in (0, 1]; {hint}")
                out.append((part, max(1, round(frac * n_train))))
            else:
                out.append((part, int(part)))
        except ValueError:
            raise StudentError(f"bad --sizes {spec!r}: {hint}") from None
        if out[-1][1] <= 0:
            raise StudentError(f"bad --sizes {spec!r}: sizes must be positive; {hint}")
    if not out:
        raise StudentError(f"bad --sizes {spec!r}: {hint}")
    return out


def parse_thresholds(spec: str | None) -> list[float]:
    if not spec:
        return list(DEFAULT_THRESHOLDS)
    try:
        ts = [float(x) for x in spec.replace(" ", "").split(",") if x]
    except ValueError:
        raise StudentError(f"bad --thresholds {spec!r}: give confidences like 0.5,0.7,0.9") from None
    if not ts or any(not 0 <= t <= 1 for t in ts):
        raise StudentError(f"bad --thresholds {spec!r}: values must be between 0 and 1")
    return sorted(set(ts))


# ---------------------------------------------------------------------------------------------- main flow


@dataclass
class StudentOptions:
    out: Path
    gold: Path | None = None
    model: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    sizes: str | None = None  # --sizes as given; parsed once the train split's size is known
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    show_progress: bool = True
    eval_by: str | None = None  # also evaluate per value of this input column (``SliceEvaluation``)
    train_where: str | None = None  # keep only matching train/validation items (``annotator.student.where``)
    test_where: str | None = None  # the held-out scope: every matching item not trained on
    min_calibration_items: int = MIN_FIT_ITEMS  # fewer validation items: no temperature is fit (T = 1)


@dataclass(frozen=True)
class Item:
    """One exported item."""

    id: str
    split: str
    text: str
    target: Any  # the teacher's label id (or list of ids): the training target
    teacher: Any  # the teacher's label name (or list of names)
    teacher_conf: float | None


@dataclass
class _Setup:
    """Everything known before training: the items, their roles, the gold labels and the slice columns."""

    ds_dir: Path
    label_names: list[str]
    multi_label: bool
    items: list[Item]
    roles: Roles
    gold_map: dict[str, Any] | None
    gold_info: dict[str, Any]
    eval_by: SliceColumn | None
    selection: Selection | None
    sizes: list[tuple[str, int]]
    notes: list[str]

    def texts(self, idx: list[int]) -> list[str]:
        return [self.items[i].text for i in idx]

    def targets(self, idx: list[int]) -> list[Any]:
        return [self.items[i].target for i in idx]

    def validation_set(self) -> EvalSet | None:
        idx = self.roles.validation
        return EvalSet(self.texts(idx), self.targets(idx)) if idx else None


def _load_export(dataset: str | Path):
    from datasets import load_from_disk

    ds_dir = resolve_dataset_dir(dataset)
    dsd = load_from_disk(str(ds_dir))
    if not hasattr(dsd, "keys"):
        raise StudentError(f"{ds_dir} holds a single Dataset, expected a DatasetDict with a train split")
    col, label_names, multi_label = label_schema(dsd)
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise StudentError(f"{ds_dir} has no (non-empty) train split")
    return ds_dir, dsd, col, label_names, multi_label


def _items(dsd, col: str, label_names: list[str], multi_label: bool) -> list[Item]:
    items: list[Item] = []
    for s in dsd:
        d = dsd[s]
        conf = list(d["confidence"]) if "confidence" in d.column_names else [None] * len(d)
        for id_, text, target, c in zip(d["id"], d["text"], d[col], conf):
            teacher = [label_names[i] for i in target] if multi_label else label_names[target]
            items.append(Item(id_, s, text, target, teacher, c))
    return items


def _load_gold_map(
    path: Path | None, label_names: list[str], multi_label: bool, all_ids: list[str], notes: list[str]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    from annotator.student.gold import load_gold

    if path is None:
        notes.append("no --gold: only student-vs-teacher agreement is reported")
        return None, {}
    g = load_gold(path, label_names, multi_label)
    gold_map: dict[str, Any] = g.labels if multi_label else g.single()
    matched = sum(1 for i in all_ids if i in gold_map)
    if matched == 0:
        raise StudentError(
            f"none of the {len(gold_map)} gold items in {path} matches a dataset id "
            f"(gold e.g. {next(iter(gold_map))!r}, dataset e.g. {all_ids[0]!r})"
        )
    if g.unknown_labels:
        notes.append(f"gold labels outside the label set (count as errors): {g.unknown_labels}")
    if g.ties:
        notes.append(f"{g.ties} gold item(s) have a tied human vote: no gold label, left out of gold scores")
    info = {
        "path": str(path),
        "format": g.format,
        "annotators": g.n_annotators,
        "items": len(gold_map),
        "matched_items": matched,
        "tied_items_without_gold": g.ties,
        "labels_outside_label_set": g.unknown_labels,
    }
    return gold_map, info


def _eval_split(dsd, notes: list[str]) -> str | None:
    split = next((s for s in ("test", "validation") if s in dsd and len(dsd[s]) > 0), None)
    if split is None:
        notes.append("no non-empty test/validation split: held-out scores are missing")
    elif split != "test":
        notes.append("no non-empty test split: the validation split is the held-out scope (and fits the calibration)")
    return split


def _roles(opts: StudentOptions, ds_dir: Path, dsd, items: list[Item],
           notes: list[str]) -> tuple[Roles, SliceColumn | None, Selection | None]:
    """Parse the where options, read every slice column once, assign the items' roles."""
    wheres = [None if text is None else parse_where(text, option)
              for option, text in (("--train-where", opts.train_where), ("--test-where", opts.test_where))]
    train_where, test_where = wheres
    columns: dict[str, SliceColumn] = {}
    for option, w in zip(("--train-where", "--test-where"), wheres):
        for c in [] if w is None else w.columns:
            columns[c] = columns.get(c) or read_column(c, ds_dir, opts.gold, option)
    eval_by = None
    if opts.eval_by:
        eval_by = columns.get(opts.eval_by) or read_column(opts.eval_by, ds_dir, opts.gold, "--eval-by")
    eval_split = _eval_split(dsd, [] if test_where else notes)
    ids = [it.id for it in items]
    roles = assign_roles(ids, [it.split for it in items], eval_split, train_where, test_where, columns)
    chosen = selection(roles, ids, train_where, test_where, columns) if columns else None
    return roles, eval_by, chosen


def _setup(dataset: str | Path, opts: StudentOptions) -> _Setup:
    """Load the export and the gold, apply --train-where/--test-where, parse --sizes."""
    ds_dir, dsd, col, label_names, multi_label = _load_export(dataset)
    notes: list[str] = []
    items = _items(dsd, col, label_names, multi_label)
    gold_map, gold_info = _load_gold_map(opts.gold, label_names, multi_label, [it.id for it in items], notes)
    roles, eval_by, chosen = _roles(opts, ds_dir, dsd, items, notes)
    if not roles.validation:
        what = "validation split" if opts.train_where is None else "validation item matches --train-where"
        notes.append(f"no {what}: every epoch is trained (no model selection) and no calibration")
    if roles.held_name is not None and not roles.held:
        notes.append(f"no {roles.held_name} item matches --train-where: held-out scores are empty")
    sizes = parse_sizes(opts.sizes, len(roles.train))
    return _Setup(ds_dir, label_names, multi_label, items, roles, gold_map, gold_info, eval_by, chosen, sizes, notes)


def _target_row(t: Any, k: int, multi_label: bool) -> Any:
    if not multi_label:
        return t
    row = [0.0] * k
    for i in t:
        row[i] = 1.0
    return row


def _reference_targets(setup: _Setup, idx: list[int]) -> tuple[str, list[int], Any]:
    """Labels to measure calibration against on ``idx``: gold where given (else the teacher's), as targets.

    Returns the reference's name, the positions in ``idx`` that have it, and their targets.
    """
    import numpy as np

    items, gold_map, names = setup.items, setup.gold_map, setup.label_names
    if gold_map is not None:
        keep = [k for k, i in enumerate(idx) if items[i].id in gold_map]
        if keep:
            code = {n: c for c, n in enumerate(names)}
            if setup.multi_label:
                y = np.zeros((len(keep), len(names)))
                for r, k in enumerate(keep):
                    for lab in gold_map[items[idx[k]].id]:
                        if lab in code:
                            y[r, code[lab]] = 1
                return "gold", keep, y
            return "gold", keep, np.array([code.get(gold_map[items[idx[k]].id], -1) for k in keep])
    y = np.array([_target_row(items[i].target, len(names), setup.multi_label) for i in idx])
    return "teacher", list(range(len(idx))), y


def _fit_note(info: CalibrationInfo, n_fit: int, min_items: int, every_right: bool) -> str | None:
    """Why T stayed at 1, or a warning about the fitted T (None: nothing to say)."""
    if n_fit == 0:
        return "no validation items: the student's confidence is left uncalibrated (T = 1)"
    if n_fit < min_items:
        return (f"only {n_fit} validation items (fewer than {min_items}, --min-calibration-items): not calibrated, "
                f"T = 1 (a temperature fit on so few items is noise and can make the test ECE worse)")
    if every_right:
        return "every validation item is predicted right: nothing to fit, T = 1"
    if info.at_bound:
        return (f"T = {info.temperature:g} sits at the end of its search interval [0.05, 20.09]: the validation "
                f"NLL wanted a more extreme T; treat the calibrated confidence with care")
    return None


def _calibrate(setup: _Setup, val_logits, held_logits, min_items: int) -> CalibrationInfo:
    """Fit T on the validation items (teacher labels), report ECE on the held-out items before and after.

    ``val_logits`` / ``held_logits``: the student's logits on ``roles.validation`` / ``roles.held``, in order.
    With fewer than ``min_items`` validation items T stays 1 (the note says why).
    """
    import numpy as np

    info, ml, fit = CalibrationInfo(), setup.multi_label, setup.roles.validation
    every_right = False
    if fit:
        y_fit = np.array([_target_row(setup.items[i].target, len(setup.label_names), ml) for i in fit])
        info.fit_split, info.fit_items = "validation", len(fit)
        every_right = all_correct(val_logits, y_fit, ml)
        if len(fit) >= min_items and not every_right:
            t = fit_temperature(val_logits, y_fit, ml)
            info.temperature, info.fitted, info.at_bound = round(t, 5), True, at_search_bound(t)
        info.validation_nll_before = round(nll(val_logits, y_fit, ml), 5)
        info.validation_nll_after = round(nll(val_logits, y_fit, ml, info.temperature), 5)
    info.note = _fit_note(info, len(fit), min_items, every_right)
    if setup.roles.held:
        ref, pos, y = _reference_targets(setup, setup.roles.held)
        info.eval_split, info.reference, info.eval_items = setup.roles.held_name, ref, len(pos)
        before = ece(probabilities(held_logits[pos], ml), y, ml)
        after = ece(probabilities(held_logits[pos], ml, info.temperature), y, ml)
        info.ece_before = None if before is None else round(before, 5)
        info.ece_after = None if after is None else round(after, 5)
    return info


def _save_model(model, tokenizer, out: Path, temperature: float) -> Path:
    from annotator.guard import claim_folder

    claim_folder(out, "train-student")  # a rerun after a crash or a full disk may replace what this one wrote
    model_dir = out / MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    setattr(model.config, TEMPERATURE_KEY, temperature)
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    return model_dir


def _slice_names(setup: _Setup, idx: list[int]) -> list[str]:
    """Every value of the --eval-by column (a value with no item in ``idx`` is an empty slice), sorted."""
    col = setup.eval_by
    assert col is not None
    return sorted({v for v in col.values.values() if v is not None} | {col.of(setup.items[i].id) for i in idx})


def _evaluate(setup: _Setup, labelled: list[Labelled],
              opts: StudentOptions) -> tuple[dict[str, EvalBlock], SliceEvaluation | None]:
    """The 'test' (held-out) and 'all' scopes, and with --eval-by the held-out scope per slice."""
    def scope(name: str, idx: list[int]) -> EvalBlock:
        return evaluate_scope(name, [labelled[i] for i in idx], setup.gold_map, setup.label_names,
                              setup.multi_label, opts.thresholds)

    roles = setup.roles
    evaluation: dict[str, EvalBlock] = {}
    if roles.held_name:
        evaluation["test"] = scope("test", roles.held)
        if setup.gold_map is not None and roles.held and evaluation["test"].with_gold == 0:
            setup.notes.append(f"no item of the {roles.held_name} scope has a gold label")
    evaluation["all"] = scope("all", list(range(len(labelled))))
    if setup.eval_by is None:
        return evaluation, None
    col, name = setup.eval_by, roles.held_name or "all"
    idx = roles.held if roles.held_name else list(range(len(labelled)))
    blocks = {v: scope(f"{name}, {col.name}={v}", [i for i in idx if col.of(setup.items[i].id) == v])
              for v in _slice_names(setup, idx)}
    return evaluation, SliceEvaluation(column=col.name, source=col.source, scope=name, slices=blocks)


def _write_predictions(path: Path, setup: _Setup, labelled: list[Labelled]) -> None:
    role = {i: r for r in ("train", "validation") for i in getattr(setup.roles, r)}
    role |= {i: "test" for i in setup.roles.held if i not in role}
    with path.open("w", encoding="utf-8") as fh:
        for i, (item, lab) in enumerate(zip(setup.items, labelled)):
            row = {
                "id": item.id,
                "split": item.split,
                "role": role.get(i),
                "gold": None if setup.gold_map is None else setup.gold_map.get(item.id),
                "teacher": item.teacher,
                "teacher_confidence": item.teacher_conf,
                "student": lab.student,
                "student_confidence": round(lab.student_conf, 5),
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _fit(setup: _Setup, base: str, opts: StudentOptions, idx: list[int],
         description: str) -> tuple[Any, Any, TrainResult]:
    """A fresh student from ``base`` trained on the items ``idx`` (model selection on the validation items)."""
    import torch

    from annotator.student.models import load_tokenizer_and_model

    torch.manual_seed(opts.train.seed)
    tokenizer, model = load_tokenizer_and_model(base, setup.label_names, setup.multi_label)
    result = train_classifier(model, tokenizer, setup.texts(idx), setup.targets(idx), opts.train,
                              setup.multi_label, description, opts.show_progress,
                              validation=setup.validation_set())
    return tokenizer, model, result


# ---------------------------------------------------------------------------------------------- learning curve


def _subsample(setup: _Setup, size: int, seed: int) -> list[int]:
    """A stratified (by the teacher's label) subsample of ``size`` train items."""
    from annotator.export.splits import multilabel_strata, stratified_assign

    train, n = setup.roles.train, len(setup.roles.train)
    teacher = [setup.items[i].teacher for i in train]
    strata = multilabel_strata(teacher) if setup.multi_label else teacher
    assign = stratified_assign(strata, {"train": size / n, "rest": 1 - size / n}, seed=seed)
    return [train[k] for k, a in enumerate(assign) if a == "train"]


def _held_predictions(setup: _Setup, base: str, opts: StudentOptions,
                      size: int) -> tuple[TrainResult, list[Any], CalibrationInfo]:
    """Train a fresh student on a subsample of ``size`` train items, calibrate it on the validation items as the
    main student is; its labels on the held-out items and its calibration."""
    cfg = opts.train
    tokenizer, model, r = _fit(setup, base, opts, _subsample(setup, size, cfg.seed), f"curve n={size}")
    val, held = setup.roles.validation, setup.roles.held
    logits = predict_logits(model, tokenizer, setup.texts(val + held), max(cfg.batch_size, 32), cfg.max_length,
                            cfg.device)
    calibration = _calibrate(setup, logits[: len(val)], logits[len(val):], opts.min_calibration_items)
    return r, decode(probabilities(logits[len(val):], setup.multi_label), setup.label_names,
                     setup.multi_label)[0], calibration


def _point_scores(setup: _Setup, positions: list[int], pred: list[Any]) -> SliceScores:
    """Scores of the held-out items at ``positions`` (indices into roles.held and ``pred``)."""
    items, held, gold, names, ml = setup.items, setup.roles.held, setup.gold_map, setup.label_names, setup.multi_label
    out = SliceScores(items=len(positions))
    if positions:
        out.student_vs_teacher = score([items[held[k]].teacher for k in positions], [pred[k] for k in positions],
                                       names, ml)
    gk = [k for k in positions if gold is not None and items[held[k]].id in gold]
    out.with_gold = len(gk)
    if gold is not None and gk:
        out.student = score([gold[items[held[k]].id] for k in gk], [pred[k] for k in gk], names, ml)
    return out


def _curve_point(setup: _Setup, requested: str, size: int, r: TrainResult, pred: list[Any],
                 calibration: CalibrationInfo) -> LearningCurvePoint:
    pooled = _point_scores(setup, list(range(len(setup.roles.held))), pred)
    point = LearningCurvePoint(requested=requested, size=size, steps=r.steps, epochs_run=r.epochs_run,
                               best_epoch=r.best_epoch, seconds=r.seconds, student=pooled.student,
                               student_vs_teacher=pooled.student_vs_teacher, calibration=calibration)
    if setup.eval_by is not None:
        col, held = setup.eval_by, setup.roles.held
        point.slices = {
            v: _point_scores(setup, [k for k, i in enumerate(held) if col.of(setup.items[i].id) == v], pred)
            for v in _slice_names(setup, held)
        }
    return point


def _learning_curve(setup: _Setup, base: str, opts: StudentOptions, full: TrainResult, student: list[Any],
                    calibration: CalibrationInfo) -> list[LearningCurvePoint]:
    """One point per distinct --sizes value, each calibrated on validation; the full size reuses the main student."""
    n_train = len(setup.roles.train)
    curve: dict[int, LearningCurvePoint] = {}
    for requested, req in setup.sizes:
        size = min(req, n_train)
        if size in curve:
            continue
        if req > n_train:
            setup.notes.append(f"learning curve: size {requested} clipped to the train split ({n_train} items)")
        if size == n_train:
            r, pred, cal = full, [student[i] for i in setup.roles.held], calibration
        else:
            r, pred, cal = _held_predictions(setup, base, opts, size)
        curve[size] = _curve_point(setup, requested, size, r, pred, cal)
        curve[size].clipped = req > n_train
    return [curve[s] for s in sorted(curve)]


# ---------------------------------------------------------------------------------------------- train_student


def _metrics(setup: _Setup, opts: StudentOptions, base: str, model_dir: Path, result: TrainResult,
             **results: Any) -> StudentMetrics:
    return StudentMetrics(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dataset=str(setup.ds_dir),
        gold=None if opts.gold is None else str(opts.gold),
        base_model=opts.model or f"minilm ({base})",
        model_dir=str(model_dir),
        multi_label=setup.multi_label,
        label_names=setup.label_names,
        train_config=dict(vars(opts.train)),
        train_size=len(setup.roles.train),
        steps=result.steps,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
        train_seconds=result.seconds,
        final_loss=result.final_loss,
        history=result.history,
        eval_split=setup.roles.held_name,
        gold_info=setup.gold_info,
        selection=setup.selection,
        notes=setup.notes,
        **results,
    )


def train_student(
    dataset: str | Path, opts: StudentOptions, log: Callable[[str], None] | None = None
) -> StudentMetrics:
    """Train, select on validation, calibrate, evaluate (and the learning curve); write model, metrics,
    predictions and the model card (``model/README.md``)."""
    from annotator.rundir import atomic_write_text
    from annotator.student.card import render_card
    from annotator.student.integrity import write_checksums
    from annotator.student.models import resolve_model

    setup = _setup(dataset, opts)
    cfg, out = opts.train, Path(opts.out)
    base = resolve_model(opts.model)
    (log or (lambda _msg: None))(f"base model: {base}")
    tokenizer, model, result = _fit(setup, base, opts, setup.roles.train, "student")
    logits = predict_logits(model, tokenizer, setup.texts(list(range(len(setup.items)))),
                            max(cfg.batch_size, 32), cfg.max_length, cfg.device)
    calibration = _calibrate(setup, logits[setup.roles.validation], logits[setup.roles.held],
                             opts.min_calibration_items)
    model_dir = _save_model(model, tokenizer, out, calibration.temperature)
    student, sconf = decode(probabilities(logits, setup.multi_label, calibration.temperature), setup.label_names,
                            setup.multi_label)
    labelled = [Labelled(it.id, it.teacher, it.teacher_conf, s, c) for it, s, c in zip(setup.items, student, sconf)]
    evaluation, slices = _evaluate(setup, labelled, opts)
    _write_predictions(out / PREDICTIONS_FILE, setup, labelled)
    curve = _learning_curve(setup, base, opts, result, student, calibration) if setup.sizes else []
    metrics = _metrics(setup, opts, base, model_dir, result, evaluation=evaluation, calibration=calibration,
                       learning_curve=curve, slices=slices)
    (model_dir / CARD_FILE).write_text(render_card(metrics), encoding="utf-8")
    write_checksums(out, model_dir)
    atomic_write_text(out / METRICS_FILE, metrics.model_dump_json(indent=2))  # last: the folder is complete
    return metrics
