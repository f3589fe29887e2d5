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
    FEW_FIT_ITEMS,
    METHOD,
    TEMPERATURE_KEY,
    all_correct,
    ece,
    fit_temperature,
    nll,
    probabilities,
    saved_temperature,
)
from annotator.student.evaluate import EvalBlock, Scores, evaluate_scope, score

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
MODEL_DIR = "model"
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


class CalibrationInfo(BaseModel):
    method: str = METHOD
    temperature: float = 1.0
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
    eval_split: str | None = Field(None, description="The held-out split used as 'test' scope.")
    evaluation: dict[str, EvalBlock] = Field(
        default_factory=dict,
        description="'test': held-out split; 'all': every exported item (includes training items).",
    )
    calibration: CalibrationInfo = Field(default_factory=CalibrationInfo)
    gold_info: dict[str, Any] = Field(default_factory=dict)
    learning_curve: list[LearningCurvePoint] = []
    slices: SliceEvaluation | None = Field(None, description="--eval-by COLUMN: the evaluated scope per slice.")
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
    y = _targets(targets, model.config.num_labels, multi_label)
    selector = _Selector(cfg.patience) if validation is not None and validation.texts else None
    step, loss_val, history, stopped = 0, None, [], False
    t0 = time.perf_counter()
    with _progress(show_progress) as progress:
        bar = progress.add_task(description, total=total, loss="-")
        epoch = 0
        while step < total and not stopped:
            model.train()
            order = torch.randperm(n, generator=gen).tolist()
            epoch_losses = []
            for b in range(0, n, cfg.batch_size):
                if step >= total:
                    break
                idx = order[b : b + cfg.batch_size]
                enc = tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True, max_length=cfg.max_length,
                    return_tensors="pt",
                ).to(device)
                out = model(**enc, labels=y[idx].to(device))
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                loss_val = float(out.loss.detach().cpu())
                epoch_losses.append(loss_val)
                progress.update(bar, advance=1, loss=f"{loss_val:.4f}")
                if on_step:
                    on_step(step, loss_val)
            epoch += 1
            entry: dict[str, Any] = {"epoch": epoch, "steps": step, "loss": round(sum(epoch_losses) / len(epoch_losses), 5)}
            if selector is not None:
                acc, vloss = validation_scores(model, tokenizer, validation, cfg, multi_label)  # type: ignore[arg-type]
                entry.update(val_accuracy=round(acc, 5), val_loss=round(vloss, 5))
                stopped = selector.update(model, epoch, step, acc, vloss) and step < total
            history.append(entry)
    if selector is not None:
        selector.restore(model)
    model.eval()
    return TrainResult(
        steps=step,
        epochs_run=round(step / per_epoch, 3),
        seconds=round(time.perf_counter() - t0, 2),
        final_loss=None if loss_val is None else round(loss_val, 5),
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


@dataclass
class Items:
    """Every exported item, in split order, as parallel columns."""

    split: list[str]
    ids: list[str]
    texts: list[str]
    targets: list[Any]  # label ids (or lists of ids) of the teacher
    teacher: list[Any]  # teacher label names (or lists)
    teacher_conf: list[float | None]

    def where(self, split: str | None) -> list[int]:
        return [i for i, s in enumerate(self.split) if s == split]


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


def _items(dsd, col: str, label_names: list[str], multi_label: bool) -> Items:
    items = Items([], [], [], [], [], [])
    for s in dsd:
        d = dsd[s]
        items.split += [s] * len(d)
        items.ids += list(d["id"])
        items.texts += list(d["text"])
        items.targets += list(d[col])
        items.teacher += [[label_names[i] for i in x] if multi_label else label_names[x] for x in d[col]]
        items.teacher_conf += list(d["confidence"]) if "confidence" in d.column_names else [None] * len(d)
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


def _reference_targets(
    items: Items, idx: list[int], gold_map: dict[str, Any] | None, label_names: list[str], multi_label: bool
) -> tuple[str, list[int], Any]:
    """Labels to measure calibration against on ``idx``: gold where given (else the teacher's), as targets."""
    import numpy as np

    if gold_map is not None:
        keep = [i for i in idx if items.ids[i] in gold_map]
        if keep:
            code = {n: k for k, n in enumerate(label_names)}
            if multi_label:
                y = np.zeros((len(keep), len(label_names)))
                for r, i in enumerate(keep):
                    for lab in gold_map[items.ids[i]]:
                        if lab in code:
                            y[r, code[lab]] = 1
                return "gold", keep, y
            return "gold", keep, np.array([code.get(gold_map[items.ids[i]], -1) for i in keep])
    y = np.array([_target_row(items.targets[i], len(label_names), multi_label) for i in idx])
    return "teacher", idx, y


def _target_row(t: Any, k: int, multi_label: bool) -> Any:
    if not multi_label:
        return t
    row = [0.0] * k
    for i in t:
        row[i] = 1.0
    return row


def _calibrate(
    logits, items: Items, eval_split: str | None, gold_map: dict[str, Any] | None, label_names: list[str],
    multi_label: bool,
) -> CalibrationInfo:
    """Fit T on the validation split (teacher labels), report ECE on the evaluation split before and after."""
    import numpy as np

    info = CalibrationInfo()
    fit = items.where("validation")
    if not fit:
        info.note = "no validation items: the student's confidence is left uncalibrated (T = 1)"
    else:
        y_fit = np.array([_target_row(items.targets[i], len(label_names), multi_label) for i in fit])
        info.temperature = round(fit_temperature(logits[fit], y_fit, multi_label), 5)
        info.fit_split, info.fit_items = "validation", len(fit)
        info.validation_nll_before = round(nll(logits[fit], y_fit, multi_label), 5)
        info.validation_nll_after = round(nll(logits[fit], y_fit, multi_label, info.temperature), 5)
        if all_correct(logits[fit], y_fit, multi_label):
            info.note = "every validation item is predicted right: nothing to fit, T = 1"
        elif len(fit) < FEW_FIT_ITEMS:
            info.note = f"only {len(fit)} validation items: the temperature is a noisy estimate"
    if eval_split is not None:
        ref, idx, y = _reference_targets(items, items.where(eval_split), gold_map, label_names, multi_label)
        info.eval_split, info.reference, info.eval_items = eval_split, ref, len(idx)
        before = ece(probabilities(logits[idx], multi_label), y, multi_label)
        after = ece(probabilities(logits[idx], multi_label, info.temperature), y, multi_label)
        info.ece_before = None if before is None else round(before, 5)
        info.ece_after = None if after is None else round(after, 5)
    return info


def _scope_fn(
    items: Items, student: list[Any], sconf: list[float], gold_map: dict[str, Any] | None,
    label_names: list[str], multi_label: bool, thresholds: list[float],
) -> Callable[[str, list[int]], EvalBlock]:
    """``scope(name, item indices)``: the evaluation block of those items."""
    def scope(name: str, idx: list[int]) -> EvalBlock:
        return evaluate_scope(
            name, [items.ids[i] for i in idx], [items.teacher[i] for i in idx], [items.teacher_conf[i] for i in idx],
            [student[i] for i in idx], [sconf[i] for i in idx], gold_map, label_names, multi_label, thresholds,
        )
    return scope


def _evaluate_by(
    column: str, ds_dir: Path, gold: Path | None, items: Items, eval_split: str | None,
    scope: Callable[[str, list[int]], EvalBlock],
) -> SliceEvaluation:
    """Per slice of ``column`` (read from the gold file, else the input of the run the dataset was exported from)."""
    from annotator.audit.slices import MISSING, read_slice_column

    try:
        run_dir = Path(json.loads((ds_dir / "export.json").read_text(encoding="utf-8"))["run_dir"])
    except (OSError, ValueError, KeyError):
        raise StudentError(f"--eval-by {column}: {ds_dir / 'export.json'} (written by annotator export) names no run_dir") from None
    values, source = read_slice_column(column, run_dir, gold)
    idx = items.where(eval_split) if eval_split else list(range(len(items.ids)))
    of_item = {i: values.get(items.ids[i]) or MISSING for i in idx}
    names = sorted({v for v in values.values() if v is not None} | set(of_item.values()))
    name = eval_split or "all"
    blocks = {v: scope(f"{name}, {column}={v}", [i for i in idx if of_item[i] == v]) for v in names}
    return SliceEvaluation(column=column, source=source, scope=name, slices=blocks)


def _evaluate(
    items: Items, student: list[Any], sconf: list[float], eval_split: str | None, gold_map: dict[str, Any] | None,
    label_names: list[str], multi_label: bool, thresholds: list[float], notes: list[str],
) -> dict[str, EvalBlock]:
    scope = _scope_fn(items, student, sconf, gold_map, label_names, multi_label, thresholds)

    evaluation: dict[str, EvalBlock] = {}
    if eval_split:
        evaluation["test"] = scope("test", items.where(eval_split))
        if gold_map is not None and evaluation["test"].with_gold == 0:
            notes.append(f"no item of the {eval_split} split has a gold label")
    evaluation["all"] = scope("all", list(range(len(items.ids))))
    return evaluation


def _write_predictions(path: Path, items: Items, student: list[Any], sconf: list[float],
                       gold_map: dict[str, Any] | None) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(len(items.ids)):
            row = {
                "id": items.ids[i],
                "split": items.split[i],
                "gold": None if gold_map is None else gold_map.get(items.ids[i]),
                "teacher": items.teacher[i],
                "teacher_confidence": items.teacher_conf[i],
                "student": student[i],
                "student_confidence": round(sconf[i], 5),
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _validation_set(items: Items) -> EvalSet | None:
    idx = items.where("validation")
    return EvalSet([items.texts[i] for i in idx], [items.targets[i] for i in idx]) if idx else None


@dataclass
class _CurveContext:
    base: str
    tokenizer: Any
    items: Items
    train_idx: list[int]
    held: list[int]
    gold_map: dict[str, Any] | None
    label_names: list[str]
    multi_label: bool
    opts: StudentOptions


def _curve_point(ctx: _CurveContext, requested: str, size: int) -> LearningCurvePoint:
    """Train a fresh student on a stratified subsample of ``size`` train items and score it on the held-out split."""
    import torch

    from annotator.export.splits import multilabel_strata, stratified_assign
    from annotator.student.models import load_tokenizer_and_model

    items, cfg, n_train = ctx.items, ctx.opts.train, len(ctx.train_idx)
    teacher = [items.teacher[i] for i in ctx.train_idx]
    strata = multilabel_strata(teacher) if ctx.multi_label else teacher
    assign = stratified_assign(strata, {"train": size / n_train, "rest": 1 - size / n_train}, seed=cfg.seed)
    sub = [ctx.train_idx[k] for k, a in enumerate(assign) if a == "train"]
    torch.manual_seed(cfg.seed)
    _, m = load_tokenizer_and_model(ctx.base, ctx.label_names, ctx.multi_label)
    r = train_classifier(
        m, ctx.tokenizer, [items.texts[i] for i in sub], [items.targets[i] for i in sub], cfg, ctx.multi_label,
        f"curve n={size}", ctx.opts.show_progress, validation=_validation_set(items),
    )
    probs = predict(m, ctx.tokenizer, [items.texts[i] for i in ctx.held], max(cfg.batch_size, 32), cfg.max_length,
                    ctx.multi_label, cfg.device, temperature=1.0)
    point = LearningCurvePoint(requested=requested, size=size, steps=r.steps, epochs_run=r.epochs_run,
                               best_epoch=r.best_epoch, seconds=r.seconds)
    _score_point(point, ctx, decode(probs, ctx.label_names, ctx.multi_label)[0])
    return point


def _score_point(point: LearningCurvePoint, ctx: _CurveContext, pred: list[Any]) -> None:
    items, held = ctx.items, ctx.held
    if not held:
        return
    point.student_vs_teacher = score([items.teacher[i] for i in held], pred, ctx.label_names, ctx.multi_label)
    if ctx.gold_map is not None:
        gi = [k for k, i in enumerate(held) if items.ids[i] in ctx.gold_map]
        if gi:
            point.student = score([ctx.gold_map[items.ids[held[k]]] for k in gi], [pred[k] for k in gi],
                                  ctx.label_names, ctx.multi_label)


def _learning_curve(ctx: _CurveContext, sizes: list[tuple[str, int]], full: TrainResult, student: list[Any],
                    notes: list[str]) -> list[LearningCurvePoint]:
    n_train = len(ctx.train_idx)
    curve: list[LearningCurvePoint] = []
    done: set[int] = set()
    for requested, req in sizes:
        size = min(req, n_train)
        if size in done:
            continue
        done.add(size)
        if req > n_train:
            notes.append(f"learning curve: size {requested} clipped to the train split ({n_train} items)")
        if size == n_train:
            point = LearningCurvePoint(requested=requested, size=size, steps=full.steps, epochs_run=full.epochs_run,
                                       best_epoch=full.best_epoch, seconds=full.seconds)
            _score_point(point, ctx, [student[i] for i in ctx.held])
        else:
            point = _curve_point(ctx, requested, size)
        point.clipped = req > n_train
        curve.append(point)
    return sorted(curve, key=lambda p: p.size)


def train_student(
    dataset: str | Path, opts: StudentOptions, log: Callable[[str], None] | None = None
) -> StudentMetrics:
    """Train, select on validation, calibrate, evaluate (and the learning curve); write model/metrics/predictions."""
    import torch

    from annotator.student.models import load_tokenizer_and_model, resolve_model

    say = log or (lambda _msg: None)
    ds_dir, dsd, col, label_names, multi_label = _load_export(dataset)
    sizes = parse_sizes(opts.sizes, len(dsd["train"]))
    notes: list[str] = []
    items = _items(dsd, col, label_names, multi_label)
    gold_map, gold_info = _load_gold_map(opts.gold, label_names, multi_label, items.ids, notes)
    eval_split = _eval_split(dsd, notes)
    cfg = opts.train
    train_idx = items.where("train")
    validation = _validation_set(items)
    if validation is None:
        notes.append("no validation split: every epoch is trained (no model selection) and no calibration")

    base = resolve_model(opts.model)
    say(f"base model: {base}")
    torch.manual_seed(cfg.seed)
    tokenizer, model = load_tokenizer_and_model(base, label_names, multi_label)
    result = train_classifier(
        model, tokenizer, [items.texts[i] for i in train_idx], [items.targets[i] for i in train_idx], cfg,
        multi_label, "student", opts.show_progress, validation=validation,
    )
    logits = predict_logits(model, tokenizer, items.texts, max(cfg.batch_size, 32), cfg.max_length, cfg.device)
    calibration = _calibrate(logits, items, eval_split, gold_map, label_names, multi_label)
    out = Path(opts.out)
    model_dir = out / MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    setattr(model.config, TEMPERATURE_KEY, calibration.temperature)
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))

    student, sconf = decode(probabilities(logits, multi_label, calibration.temperature), label_names, multi_label)
    evaluation = _evaluate(items, student, sconf, eval_split, gold_map, label_names, multi_label, opts.thresholds,
                           notes)
    slices = None
    if opts.eval_by:
        scope = _scope_fn(items, student, sconf, gold_map, label_names, multi_label, opts.thresholds)
        slices = _evaluate_by(opts.eval_by, ds_dir, opts.gold, items, eval_split, scope)
    _write_predictions(out / PREDICTIONS_FILE, items, student, sconf, gold_map)
    held = items.where(eval_split) if eval_split else []
    ctx = _CurveContext(base, tokenizer, items, train_idx, held, gold_map, label_names, multi_label, opts)
    curve = _learning_curve(ctx, sizes, result, student, notes) if sizes else []

    metrics = StudentMetrics(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dataset=str(ds_dir),
        gold=None if opts.gold is None else str(opts.gold),
        base_model=opts.model or f"minilm ({base})",
        model_dir=str(model_dir),
        multi_label=multi_label,
        label_names=label_names,
        train_config=dict(vars(cfg)),
        train_size=len(train_idx),
        steps=result.steps,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
        train_seconds=result.seconds,
        final_loss=result.final_loss,
        history=result.history,
        eval_split=eval_split,
        evaluation=evaluation,
        calibration=calibration,
        gold_info=gold_info,
        learning_curve=curve,
        slices=slices,
        notes=notes,
    )
    (out / METRICS_FILE).write_text(metrics.model_dump_json(indent=2), encoding="utf-8")
    return metrics
