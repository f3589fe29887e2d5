"""The training loop: fine-tune an encoder classifier in plain PyTorch, and predict with it.

AdamW with separate learning rates for the encoder and the new head, linear warm-up/decay, gradient clipping.
Model selection: after every epoch the student is scored on the validation items (macro-F1 against the teacher's
labels, ties broken by the lower validation loss); the best epoch's weights are kept and training stops after
``patience`` epochs without improvement (:class:`TrainConfig`), not counting epochs that give every validation
row the same label (the majority-label plateau a student with a rare label starts on). Macro-F1, not accuracy:
on a small validation set with an uneven label mix, a student that predicts the majority label for every row
scores a high accuracy but a low macro-F1. torch is imported inside the functions, so the command line starts
without it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from annotator.progress import ProgressDisplay
from annotator.student.calibration import nll, probabilities, saved_temperature
from annotator.student.metrics import StudentError


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
    # "balanced": each label weighs the same in the loss (a row of label c weighs n / (K * n_c), scikit-learn's
    # class_weight="balanced"); "none": each row the same. See class_weights().
    class_weights: str = "none"


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


def class_weights(targets: Sequence[Any], num_labels: int, multi_label: bool, how: str):
    """The loss weight of each label (a tensor), or None for ``how == "none"``.

    Single-label: label ``c`` weighs ``n / (K * n_c)`` (n rows, K labels; a label with no row weighs 0), so each label
    contributes equally to the loss, the objective macro-F1 scores (King and Zeng, "Logistic regression in rare events
    data", 2001; scikit-learn's ``class_weight="balanced"``). Multi-label: each label's positives weigh
    ``negatives / positives`` (``BCEWithLogitsLoss(pos_weight=...)``; 1 for a label never or always present).
    """
    import torch

    if how == "none":
        return None
    if how != "balanced":
        raise StudentError(f"class weights {how!r}: use none or balanced")
    if multi_label:
        pos = torch.zeros(num_labels)
        for labs in targets:
            for lab in labs:
                pos[lab] += 1
        neg = len(targets) - pos
        return torch.where((pos > 0) & (neg > 0), neg / pos.clamp(min=1), torch.ones(num_labels))
    counts = torch.bincount(torch.tensor(list(targets), dtype=torch.long), minlength=num_labels).double()
    w = torch.where(counts > 0, len(targets) / (num_labels * counts.clamp(min=1)), torch.zeros_like(counts))
    return w.float()


def _loss_fn(weights, multi_label: bool):
    """The training loss with ``weights`` (see :func:`class_weights`), or None: the model's own unweighted loss."""
    import torch

    if weights is None:
        return None
    if multi_label:
        return torch.nn.BCEWithLogitsLoss(pos_weight=weights)
    return torch.nn.CrossEntropyLoss(weight=weights)


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
        self.best: tuple[float, float] | None = None  # (macro-F1, -loss): larger is better
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self.state: dict[str, Any] | None = None
        self.bad = 0

    def update(self, model, epoch: int, step: int, macro_f1: float, loss: float, one_label: bool = False) -> bool:
        """Record one evaluation (validation macro-F1 and loss); True when training should stop.

        ``one_label``: the student gave every validation row the same label. Such an epoch does not count against
        patience: a student on the majority-label plateau has not stopped improving, it has not started (with a
        rare label this lasts a few epochs while the training loss falls; stopping there kept a one-label student).
        """
        key = (round(macro_f1, 9), -loss)
        if self.best is None or key > self.best:
            self.best, self.best_epoch, self.best_step, self.bad = key, epoch, step, 0
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        elif not one_label:
            self.bad += 1
        return self.patience > 0 and self.bad >= self.patience

    def restore(self, model) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


@dataclass
class ValidationScores:
    """One epoch's scores on the validation items, against their (teacher) targets."""

    accuracy: float  # multi-label: exact-set match
    macro_f1: float  # over the labels in the targets or the predictions (as the evaluation scores it)
    loss: float  # mean NLL
    one_label: bool = False  # every row got the same prediction, while the targets hold more than one label


def validation_scores(model, tokenizer, val: EvalSet, cfg: TrainConfig, multi_label: bool) -> ValidationScores:
    """Accuracy, macro-F1 and mean loss of ``model`` on ``val``."""
    from annotator.student.evaluate import score

    logits = predict_logits(model, tokenizer, val.texts, max(cfg.batch_size, 32), cfg.max_length, cfg.device)
    k = logits.shape[1]
    y = _targets(val.targets, k, multi_label).numpy()
    names = [str(j) for j in range(k)]  # label ids as the names the scorer counts
    if multi_label:
        gold: list[Any] = [[str(j) for j in t] for t in val.targets]
        pred: list[Any] = [[str(j) for j in range(k) if row[j] >= 0] for row in logits]
    else:
        gold, pred = [str(t) for t in val.targets], [str(j) for j in logits.argmax(axis=1)]
    s = score(gold, pred, names, multi_label)
    return ValidationScores(
        accuracy=float(s.accuracy or 0.0),
        macro_f1=float(s.macro_f1 or 0.0),
        loss=nll(logits, y, multi_label),
        one_label=len({str(p) for p in pred}) == 1 < len({str(g) for g in gold}),
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
    loss_fn: Any = None  # weighted loss (class_weights), or None: the model's own loss
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
                [self.texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.cfg.max_length,
                return_tensors="pt",
            ).to(self.device)
            if self.loss_fn is None:
                loss = self.model(**enc, labels=self.y[idx].to(self.device)).loss
            else:
                loss = self.loss_fn(self.model(**enc).logits, self.y[idx].to(self.device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            self.loss = float(loss.detach().cpu())
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
    k = model.config.num_labels
    weights = class_weights(targets, k, multi_label, cfg.class_weights)
    loss_fn = _loss_fn(None if weights is None else weights.to(device), multi_label)
    loop = _Loop(model, tokenizer, texts, _targets(targets, k, multi_label), cfg, device, opt, sched, total, loss_fn)
    selector = _Selector(cfg.patience) if validation is not None and validation.texts else None
    history: list[dict[str, Any]] = []
    stopped = False
    t0 = time.perf_counter()
    with ProgressDisplay(description, "steps", enabled=show_progress, info="loss -") as progress:

        def advance(loss: float) -> None:
            progress.update(loop.step, total, f"loss {loss:.4f}")
            if on_step:
                on_step(loop.step, loss)

        while loop.step < total and not stopped:
            losses = loop.epoch(torch.randperm(n, generator=gen).tolist(), advance)
            entry: dict[str, Any] = {
                "epoch": len(history) + 1,
                "steps": loop.step,
                "loss": round(sum(losses) / len(losses), 5),
            }
            if selector is not None:
                v = validation_scores(model, tokenizer, validation, cfg, multi_label)  # type: ignore[arg-type]
                entry.update(
                    val_accuracy=round(v.accuracy, 5), val_macro_f1=round(v.macro_f1, 5), val_loss=round(v.loss, 5)
                )
                if v.one_label:
                    entry["val_one_label"] = True
                stopped = (
                    selector.update(model, entry["epoch"], loop.step, v.macro_f1, v.loss, v.one_label)
                    and loop.step < total
                )
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


def predict_logits(
    model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 128, device: str = "auto"
):
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
                list(texts[b : b + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
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
