"""Fine-tune a small encoder classifier on an exported dataset and compare it with the teacher on human gold.

The flow (:func:`train_student`): read the export and the gold (:mod:`annotator.student.data`), train
(:mod:`annotator.student.loop`: plain PyTorch, AdamW, linear warm-up/decay), calibrate, evaluate, write. CPU-friendly
defaults: at most 10 epochs, lr 2e-4 for the encoder and 1e-3 for the new classifier head, batch 16, max_length 128
(on the 72-item demo BERT's usual 5e-5 leaves the loss near its start after 40 steps). ``max_steps`` overrides the
epochs (as in transformers' Trainer).

Model selection: after every epoch the student is scored on the export's validation split (macro-F1 against the
teacher's labels, ties broken by the lower validation loss); the best epoch's weights are kept and training stops
after ``patience`` epochs without improvement. With noisy teacher labels this stops the student from memorising
the teacher's mistakes; the chosen epoch is reported. The same validation logits then fit the temperature that
calibrates the student's confidence (``annotator.student.calibration``).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from annotator.rundir import atomic_write_text, atomic_writer
from annotator.student.baseline import compare_baseline
from annotator.student.calibration import (
    TEMPERATURE_KEY,
    all_correct,
    at_search_bound,
    ece,
    fit_temperature,
    nll,
    probabilities,
)
from annotator.student.card import render_card
from annotator.student.data import Setup, StudentOptions, load_setup
from annotator.student.evaluate import EvalBlock, Labelled, evaluate_scope, score
from annotator.student.integrity import write_checksums
from annotator.student.loop import TrainResult, decode, predict_logits, train_classifier
from annotator.student.metrics import (
    CARD_FILE,
    METRICS_FILE,
    MODEL_DIR,
    PREDICTIONS_FILE,
    CalibrationInfo,
    LearningCurvePoint,
    SliceEvaluation,
    SliceScores,
    StudentMetrics,
)

log = logging.getLogger(__name__)


def _target_row(t: Any, k: int, multi_label: bool) -> Any:
    if not multi_label:
        return t
    row = [0.0] * k
    for i in t:
        row[i] = 1.0
    return row


def _reference_targets(setup: Setup, idx: list[int]) -> tuple[str, list[int], Any]:
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
        return (
            f"only {n_fit} validation items (fewer than {min_items}, --min-calibration-items): not calibrated, "
            f"T = 1 (a temperature fit on so few items is noise and can make the test ECE worse)"
        )
    if every_right:
        return "every validation item is predicted right: nothing to fit, T = 1"
    if info.at_bound:
        return (
            f"T = {info.temperature:g} sits at the end of its search interval [0.05, 20.09]: the validation "
            f"NLL wanted a more extreme T; treat the calibrated confidence with care"
        )
    return None


def _calibrate(setup: Setup, val_logits, held_logits, min_items: int) -> CalibrationInfo:
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


def _slice_names(setup: Setup, idx: list[int]) -> list[str]:
    """Every value of the --eval-by column (a value with no item in ``idx`` is an empty slice), sorted."""
    col = setup.eval_by
    assert col is not None
    return sorted({v for v in col.values.values() if v is not None} | {col.of(setup.items[i].id) for i in idx})


def _evaluate(
    setup: Setup, labelled: list[Labelled], opts: StudentOptions
) -> tuple[dict[str, EvalBlock], SliceEvaluation | None]:
    """The 'test' (held-out) and 'all' scopes, and with --eval-by the held-out scope per slice."""

    def scope(name: str, idx: list[int]) -> EvalBlock:
        return evaluate_scope(
            name, [labelled[i] for i in idx], setup.gold_map, setup.label_names, setup.multi_label, opts.thresholds
        )

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
    blocks = {
        v: scope(f"{name}, {col.name}={v}", [i for i in idx if col.of(setup.items[i].id) == v])
        for v in _slice_names(setup, idx)
    }
    return evaluation, SliceEvaluation(column=col.name, source=col.source, scope=name, slices=blocks)


def _write_predictions(path: Path, setup: Setup, labelled: list[Labelled]) -> None:
    role = {i: r for r in ("train", "validation") for i in getattr(setup.roles, r)}
    role |= {i: "test" for i in setup.roles.held if i not in role}
    with atomic_writer(path) as fh:
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


def _fit(
    setup: Setup, base: str, opts: StudentOptions, idx: list[int], description: str
) -> tuple[Any, Any, TrainResult]:
    """A fresh student from ``base`` trained on the items ``idx`` (model selection on the validation items)."""
    import torch

    from annotator.student.models import load_tokenizer_and_model

    torch.manual_seed(opts.train.seed)
    tokenizer, model = load_tokenizer_and_model(base, setup.label_names, setup.multi_label)
    result = train_classifier(
        model,
        tokenizer,
        setup.texts(idx),
        setup.targets(idx),
        opts.train,
        setup.multi_label,
        description,
        opts.show_progress,
        validation=setup.validation_set(),
    )
    return tokenizer, model, result


# ---------------------------------------------------------------------------------------------- learning curve


def _subsample(setup: Setup, size: int, seed: int) -> list[int]:
    """A stratified (by the teacher's label) subsample of ``size`` train items."""
    from annotator.export.splits import multilabel_strata, stratified_assign

    train, n = setup.roles.train, len(setup.roles.train)
    teacher = [setup.items[i].teacher for i in train]
    strata = multilabel_strata(teacher) if setup.multi_label else teacher
    assign = stratified_assign(strata, {"train": size / n, "rest": 1 - size / n}, seed=seed)
    return [train[k] for k, a in enumerate(assign) if a == "train"]


def _held_predictions(
    setup: Setup, base: str, opts: StudentOptions, size: int
) -> tuple[TrainResult, list[Any], CalibrationInfo]:
    """Train a fresh student on a subsample of ``size`` train items, calibrate it on the validation items as the
    main student is; its labels on the held-out items and its calibration."""
    cfg = opts.train
    tokenizer, model, r = _fit(setup, base, opts, _subsample(setup, size, cfg.seed), f"curve n={size}")
    val, held = setup.roles.validation, setup.roles.held
    logits = predict_logits(
        model, tokenizer, setup.texts(val + held), max(cfg.batch_size, 32), cfg.max_length, cfg.device
    )
    calibration = _calibrate(setup, logits[: len(val)], logits[len(val) :], opts.min_calibration_items)
    return (
        r,
        decode(probabilities(logits[len(val) :], setup.multi_label), setup.label_names, setup.multi_label)[0],
        calibration,
    )


def _point_scores(setup: Setup, positions: list[int], pred: list[Any]) -> SliceScores:
    """Scores of the held-out items at ``positions`` (indices into roles.held and ``pred``)."""
    items, held, gold, names, ml = setup.items, setup.roles.held, setup.gold_map, setup.label_names, setup.multi_label
    out = SliceScores(items=len(positions))
    if positions:
        out.student_vs_teacher = score(
            [items[held[k]].teacher for k in positions], [pred[k] for k in positions], names, ml
        )
    gk = [k for k in positions if gold is not None and items[held[k]].id in gold]
    out.with_gold = len(gk)
    if gold is not None and gk:
        out.student = score([gold[items[held[k]].id] for k in gk], [pred[k] for k in gk], names, ml)
    return out


def _curve_point(
    setup: Setup, requested: str, size: int, r: TrainResult, pred: list[Any], calibration: CalibrationInfo
) -> LearningCurvePoint:
    pooled = _point_scores(setup, list(range(len(setup.roles.held))), pred)
    point = LearningCurvePoint(
        requested=requested,
        size=size,
        steps=r.steps,
        epochs_run=r.epochs_run,
        best_epoch=r.best_epoch,
        seconds=r.seconds,
        student=pooled.student,
        student_vs_teacher=pooled.student_vs_teacher,
        calibration=calibration,
    )
    if setup.eval_by is not None:
        col, held = setup.eval_by, setup.roles.held
        point.slices = {
            v: _point_scores(setup, [k for k, i in enumerate(held) if col.of(setup.items[i].id) == v], pred)
            for v in _slice_names(setup, held)
        }
    return point


def _learning_curve(
    setup: Setup, base: str, opts: StudentOptions, full: TrainResult, student: list[Any], calibration: CalibrationInfo
) -> list[LearningCurvePoint]:
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


def _metrics(
    setup: Setup, opts: StudentOptions, base: str, model_dir: Path, result: TrainResult, **results: Any
) -> StudentMetrics:
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


def train_student(dataset: str | Path, opts: StudentOptions) -> StudentMetrics:
    """Train, select on validation, calibrate, evaluate (and the learning curve); write model, metrics,
    predictions and the model card (``model/README.md``)."""
    from annotator.student.models import resolve_model

    setup = load_setup(dataset, opts)
    cfg, out = opts.train, Path(opts.out)
    base = resolve_model(opts.model)
    log.info("base model: %s", base)
    tokenizer, model, result = _fit(setup, base, opts, setup.roles.train, "student")
    logits = predict_logits(
        model,
        tokenizer,
        setup.texts(list(range(len(setup.items)))),
        max(cfg.batch_size, 32),
        cfg.max_length,
        cfg.device,
    )
    calibration = _calibrate(
        setup, logits[setup.roles.validation], logits[setup.roles.held], opts.min_calibration_items
    )
    model_dir = _save_model(model, tokenizer, out, calibration.temperature)
    student, sconf = decode(
        probabilities(logits, setup.multi_label, calibration.temperature), setup.label_names, setup.multi_label
    )
    labelled = [Labelled(it.id, it.teacher, it.teacher_conf, s, c) for it, s, c in zip(setup.items, student, sconf)]
    evaluation, slices = _evaluate(setup, labelled, opts)
    baseline = compare_baseline(setup, evaluation, balanced=opts.train.class_weights == "balanced")
    _write_predictions(out / PREDICTIONS_FILE, setup, labelled)
    curve = _learning_curve(setup, base, opts, result, student, calibration) if setup.sizes else []
    metrics = _metrics(
        setup,
        opts,
        base,
        model_dir,
        result,
        evaluation=evaluation,
        calibration=calibration,
        learning_curve=curve,
        slices=slices,
        baseline=baseline,
    )
    atomic_write_text(model_dir / CARD_FILE, render_card(metrics))
    write_checksums(out, model_dir)  # the card included
    atomic_write_text(out / METRICS_FILE, metrics.model_dump_json(indent=2))  # last: the folder is complete
    return metrics
