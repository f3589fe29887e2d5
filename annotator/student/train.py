"""Fine-tune a small encoder classifier on an exported dataset and compare it with the teacher on human gold.

Plain PyTorch loop (AdamW, linear warm-up/decay), CPU-friendly defaults: 10 epochs, lr 2e-4 for the
encoder and 1e-3 for the new classifier head, batch 16, max_length 128 (on the 72-item demo BERT's
usual 5e-5 leaves the loss near its start after 40 steps). ``max_steps`` overrides the epochs (as in transformers' Trainer).
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
from annotator.student.evaluate import EvalBlock, Scores, evaluate_scope, score

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
MODEL_DIR = "model"
DEFAULT_THRESHOLDS = (0.5, 0.7, 0.9, 1.0)


class StudentError(AnnotatorError):
    """train-student cannot run as asked."""


@dataclass
class TrainConfig:
    epochs: float = 10
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
    device: str = "auto"


@dataclass
class TrainResult:
    steps: int
    epochs_run: float
    seconds: float
    final_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


class LearningCurvePoint(BaseModel):
    requested: int
    size: int
    clipped: bool = False
    steps: int
    student: Scores | None = Field(None, description="Student vs human gold on the evaluation split.")
    student_vs_teacher: Scores | None = None


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
    train_seconds: float
    final_loss: float | None
    history: list[dict[str, Any]] = []
    eval_split: str | None = Field(None, description="The held-out split used as 'test' scope.")
    evaluation: dict[str, EvalBlock] = Field(
        default_factory=dict,
        description="'test': held-out split; 'all': every exported item (includes training items).",
    )
    gold_info: dict[str, Any] = Field(default_factory=dict)
    learning_curve: list[LearningCurvePoint] = []
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
) -> TrainResult:
    """Fine-tune ``model`` in place. ``targets``: label ids, or lists of label ids when multi-label."""
    import torch
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    n = len(texts)
    if n == 0:
        raise StudentError("no training items")
    device = _device(cfg.device)
    model.to(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps else max(1, math.ceil(cfg.epochs * per_epoch))
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

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    y = _targets(targets, model.config.num_labels, multi_label)
    model.train()
    step, loss_val, history = 0, None, []
    t0 = time.perf_counter()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
        transient=False,
        console=Console(stderr=True),  # progress goes to stderr, results to stdout
    )
    with progress:
        bar = progress.add_task(description, total=total, loss="-")
        epoch = 0
        while step < total:
            order = torch.randperm(n, generator=gen).tolist()
            epoch_losses = []
            for b in range(0, n, cfg.batch_size):
                if step >= total:
                    break
                idx = order[b : b + cfg.batch_size]
                enc = tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=cfg.max_length,
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
            history.append({"epoch": epoch, "steps": step, "loss": round(sum(epoch_losses) / len(epoch_losses), 5)})
    model.eval()
    return TrainResult(
        steps=step,
        epochs_run=round(step / per_epoch, 3),
        seconds=round(time.perf_counter() - t0, 2),
        final_loss=None if loss_val is None else round(loss_val, 5),
        history=history,
    )


def predict(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 32,
    max_length: int = 128,
    multi_label: bool = False,
    device: str = "auto",
):
    """Class probabilities (softmax, or per-label sigmoid when multi-label) as a numpy array."""
    import numpy as np
    import torch

    dev = _device(device)
    model.to(dev)
    model.eval()
    outs = []
    with torch.inference_mode():
        for b in range(0, len(texts), batch_size):
            enc = tokenizer(
                list(texts[b : b + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(dev)
            logits = model(**enc).logits.float()
            outs.append((torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)).cpu().numpy())
    if not outs:
        return np.zeros((0, model.config.num_labels))
    return np.concatenate(outs)


def decode(probs, label_names: list[str], multi_label: bool) -> tuple[list[Any], list[float]]:
    """Predicted label (set) and the student's confidence in it."""
    preds, conf = [], []
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


def parse_sizes(spec: str | None) -> list[int]:
    if not spec:
        return []
    try:
        sizes = [int(x) for x in spec.replace(" ", "").split(",") if x]
    except ValueError:
        raise StudentError(f"bad --sizes {spec!r}: give training sizes like 100,500,1000") from None
    if any(s <= 0 for s in sizes):
        raise StudentError(f"bad --sizes {spec!r}: sizes must be positive")
    return sizes


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
    sizes: list[int] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    show_progress: bool = True


def train_student(
    dataset: str | Path, opts: StudentOptions, log: Callable[[str], None] | None = None
) -> StudentMetrics:
    from datasets import load_from_disk

    from annotator.export.splits import stratified_assign
    from annotator.student.gold import load_gold
    from annotator.student.models import load_tokenizer_and_model, resolve_model

    say = log or (lambda _msg: None)
    ds_dir = resolve_dataset_dir(dataset)
    dsd = load_from_disk(str(ds_dir))
    if not hasattr(dsd, "keys"):
        raise StudentError(f"{ds_dir} holds a single Dataset, expected a DatasetDict with a train split")
    col, label_names, multi_label = label_schema(dsd)
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise StudentError(f"{ds_dir} has no (non-empty) train split")
    notes: list[str] = []

    gold_map: dict[str, Any] | None = None
    gold_info: dict[str, Any] = {}
    all_ids = [i for s in dsd for i in dsd[s]["id"]]
    if opts.gold is not None:
        g = load_gold(opts.gold, label_names, multi_label)
        gold_map = g.labels if multi_label else g.single()
        matched = sum(1 for i in all_ids if i in gold_map)
        if matched == 0:
            raise StudentError(
                f"none of the {len(gold_map)} gold items in {opts.gold} matches a dataset id "
                f"(gold e.g. {next(iter(gold_map))!r}, dataset e.g. {all_ids[0]!r})"
            )
        gold_info = {
            "path": str(opts.gold),
            "format": g.format,
            "annotators": g.n_annotators,
            "items": len(gold_map),
            "matched_items": matched,
            "majority_ties_broken_alphabetically": g.ties,
            "labels_outside_label_set": g.unknown_labels,
        }
        if g.unknown_labels:
            notes.append(f"gold labels outside the label set (count as errors): {g.unknown_labels}")
    else:
        notes.append("no --gold: only student-vs-teacher agreement is reported")

    def teacher_of(row_label: Any) -> Any:
        return [label_names[i] for i in row_label] if multi_label else label_names[row_label]

    train = dsd["train"]
    texts, targets = list(train["text"]), list(train[col])
    cfg = opts.train

    import torch

    base = resolve_model(opts.model)
    say(f"base model: {base}")
    torch.manual_seed(cfg.seed)
    tokenizer, model = load_tokenizer_and_model(base, label_names, multi_label)
    result = train_classifier(model, tokenizer, texts, targets, cfg, multi_label, "student", opts.show_progress)
    model_dir = Path(opts.out) / MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))

    # ---- predictions on every split
    split_of: list[str] = []
    ids: list[str] = []
    all_texts: list[str] = []
    teacher: list[Any] = []
    tconf: list[float | None] = []
    for s in dsd:
        d = dsd[s]
        split_of += [s] * len(d)
        ids += list(d["id"])
        all_texts += list(d["text"])
        teacher += [teacher_of(x) for x in d[col]]
        tconf += list(d["confidence"]) if "confidence" in d.column_names else [None] * len(d)
    probs = predict(model, tokenizer, all_texts, max(cfg.batch_size, 32), cfg.max_length, multi_label, cfg.device)
    student, sconf = decode(probs, label_names, multi_label)

    eval_split = next((s for s in ("test", "validation") if s in dsd and len(dsd[s]) > 0), None)
    if eval_split is None:
        notes.append("no non-empty test/validation split: held-out scores are missing")
    elif eval_split != "test":
        notes.append("no non-empty test split: the validation split is the held-out scope")

    def scope(name: str, want: Callable[[str], bool]) -> EvalBlock:
        idx = [i for i, s in enumerate(split_of) if want(s)]
        return evaluate_scope(
            name,
            [ids[i] for i in idx],
            [teacher[i] for i in idx],
            [tconf[i] for i in idx],
            [student[i] for i in idx],
            [sconf[i] for i in idx],
            gold_map,
            label_names,
            multi_label,
            opts.thresholds,
        )

    evaluation: dict[str, EvalBlock] = {}
    if eval_split:
        evaluation["test"] = scope("test", lambda s: s == eval_split)
        if gold_map is not None and evaluation["test"].with_gold == 0:
            notes.append(f"no item of the {eval_split} split has a gold label")
    evaluation["all"] = scope("all", lambda s: True)

    out = Path(opts.out)
    with (out / PREDICTIONS_FILE).open("w", encoding="utf-8") as fh:
        for i in range(len(ids)):
            fh.write(
                json.dumps(
                    {
                        "id": ids[i],
                        "split": split_of[i],
                        "gold": None if gold_map is None else gold_map.get(ids[i]),
                        "teacher": teacher[i],
                        "teacher_confidence": tconf[i],
                        "student": student[i],
                        "student_confidence": round(sconf[i], 5),
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )

    # ---- learning curve
    curve: list[LearningCurvePoint] = []
    if opts.sizes:
        held = [i for i, s in enumerate(split_of) if s == eval_split] if eval_split else []
        n_train = len(train)
        strata = ["|".join(sorted(map(str, t))) if multi_label else str(t) for t in targets]
        done: set[int] = set()
        for req in opts.sizes:
            size = min(req, n_train)
            if size in done:
                continue
            done.add(size)
            if req > n_train:
                notes.append(f"learning curve: size {req} clipped to the train split ({n_train})")
            if size == n_train:
                steps, s_pred = result.steps, [student[i] for i in held]
            else:
                assign = stratified_assign(strata, {"train": size / n_train, "rest": 1 - size / n_train}, seed=cfg.seed)
                sub = [i for i, a in enumerate(assign) if a == "train"]
                torch.manual_seed(cfg.seed)
                _, m = load_tokenizer_and_model(base, label_names, multi_label)
                r = train_classifier(
                    m,
                    tokenizer,
                    [texts[i] for i in sub],
                    [targets[i] for i in sub],
                    cfg,
                    multi_label,
                    f"curve n={size}",
                    opts.show_progress,
                )
                steps = r.steps
                p = predict(
                    m,
                    tokenizer,
                    [all_texts[i] for i in held],
                    max(cfg.batch_size, 32),
                    cfg.max_length,
                    multi_label,
                    cfg.device,
                )
                s_pred = decode(p, label_names, multi_label)[0]
                del m
            point = LearningCurvePoint(requested=req, size=size, clipped=req > n_train, steps=steps)
            if held:
                point.student_vs_teacher = score([teacher[i] for i in held], s_pred, label_names, multi_label)
                if gold_map is not None:
                    gi = [k for k, i in enumerate(held) if ids[i] in gold_map]
                    if gi:
                        point.student = score(
                            [gold_map[ids[held[k]]] for k in gi], [s_pred[k] for k in gi], label_names, multi_label
                        )
            curve.append(point)
        curve.sort(key=lambda p: p.size)

    metrics = StudentMetrics(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dataset=str(ds_dir),
        gold=None if opts.gold is None else str(opts.gold),
        base_model=opts.model or f"minilm ({base})",
        model_dir=str(model_dir),
        multi_label=multi_label,
        label_names=label_names,
        train_config={k: v for k, v in vars(cfg).items()},
        train_size=len(train),
        steps=result.steps,
        epochs_run=result.epochs_run,
        train_seconds=result.seconds,
        final_loss=result.final_loss,
        history=result.history,
        eval_split=eval_split,
        evaluation=evaluation,
        gold_info=gold_info,
        learning_curve=curve,
        notes=notes,
    )
    (out / METRICS_FILE).write_text(metrics.model_dump_json(indent=2), encoding="utf-8")
    return metrics
