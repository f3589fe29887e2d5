"""The rounds of `annotator distill` (docs/distill.md).

Round 0 asks the teacher for a random seed sample (and the rows of the human sample, ``--gold``); every round then
trains a student on every teacher label so far (``train_student``: the student and its TF-IDF baseline), lets it
label the corpus (``predict_file``), sends the labels a confident student disputes back for a second look, checks
the stop rules (:mod:`annotator.distill.rules`) and picks the next rows for the teacher by the student's uncertainty
and diversity (:mod:`annotator.distill.select`). The state after every step is in ``distill.json``
(:mod:`annotator.distill.state`); every teacher answer is in the teacher run's cache.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annotator.config import PipelineConfig
from annotator.costs import Budget
from annotator.distill import select
from annotator.distill.report import DistillReport, Finished, write_outputs
from annotator.distill.rules import StopRules, stop_rule
from annotator.distill.state import (
    DistillError,
    DistillState,
    Pending,
    Recheck,
    RoundRecord,
    Stop,
    load_state,
    save_state,
)
from annotator.distill.student import (
    PREDICTIONS_FILE,
    StudentSettings,
    embed,
    label_names_of,
    predict_corpus,
    read_predictions,
    round_train_config,
    train_round,
    write_dataset,
)
from annotator.distill.teacher import RECHECK_DIR, TEACHER_DIR, TeacherRun, rows_by_id
from annotator.errors import BudgetReached
from annotator.export.splits import id_rank_key
from annotator.inputs import check_ids, count_rows, iter_rows
from annotator.progress import ProgressDisplay
from annotator.records import AnnotationRecord
from annotator.rundir import RunDirLock
from annotator.student.metrics import METRICS_FILE, StudentMetrics

log = logging.getLogger(__name__)

ROUNDS_DIR = "rounds"
RECHECK_SHEETS = "recheck_sheets"


@dataclass
class DistillOptions:
    """What `annotator distill` was asked to do (see its --help)."""

    out: Path
    seed_size: int | None = None  # None: min(100, a fifth of the rows)
    validation_size: int | None = None  # None: a quarter of the seed
    batch_size: int | None = None  # None: min(50, a twentieth of the rows)
    budget: int | None = None  # teacher calls
    max_cost: float | None = None  # USD
    strategy: str = "margin"
    diversity: bool = True
    cold_start: bool = True  # random batches until a student beats its baseline on validation macro-F1
    candidates: int = 10  # the batch is chosen among candidates x batch_size most uncertain rows (docs/distill.md)
    recheck: str = "teacher"
    recheck_samples: int | None = None  # None: teacher.samples + 2 (a second look has more samples than the first)
    recheck_floor: float = 0.5
    patience: int = 2
    min_delta: float = 0.005
    match_margin: float | None = 0.0  # None: never stop for matching the teacher
    gold: Path | None = None
    seed: int = 0
    student: StudentSettings = field(default_factory=StudentSettings)


@dataclass
class _Scan:
    """One pass over the corpus and the round's predictions."""

    val_teacher: list[str] = field(default_factory=list)
    val_student: list[str] = field(default_factory=list)
    cl_ids: list[str] = field(default_factory=list)
    cl_probs: list[list[float]] = field(default_factory=list)
    cl_given: list[int] = field(default_factory=list)
    top: select.TopCandidates = field(default_factory=lambda: select.TopCandidates(0))
    order: select.TopCandidates = field(default_factory=lambda: select.TopCandidates(0))  # the seeded random order
    pool_left: int = 0


def round_dir(out: Path, k: int) -> Path:
    return out / ROUNDS_DIR / f"{k:03d}"


class Distiller:
    """``Distiller(cfg, opts).run()``: the rounds until a stop rule holds; then the final outputs."""

    def __init__(self, cfg: PipelineConfig, opts: DistillOptions, say: Callable[[str], None] | None = None):
        labels = label_names_of(cfg)
        if labels is None:
            raise DistillError(
                f"{cfg.source_path or 'the pipeline'}: task.type {cfg.task.type} has no label set: "
                "distill needs a label task (a student classifier learns the teacher's labels)"
            )
        if cfg.cascade is not None:
            raise DistillError(
                f"{cfg.source_path or 'the pipeline'}: a cascade pipeline has several teachers; distill "
                "asks one: point it at a pipeline with a single teacher"
            )
        if labels[1]:
            raise DistillError(
                f"{cfg.source_path or 'the pipeline'}: task.multi_label: true is not supported by "
                "distill yet; use a single-label task"
            )
        self.cfg, self.opts, self.out = cfg, opts, Path(opts.out)
        self.label_names = labels[0]
        self.corpus = cfg.input
        self.samples = cfg.teacher.samples
        self.recheck_samples = self.samples + 2 if opts.recheck_samples is None else opts.recheck_samples
        self.say = say or (lambda _m: None)
        self.teacher = TeacherRun(cfg, self.out / TEACHER_DIR)
        self.rechecker = TeacherRun(cfg, self.out / RECHECK_DIR, samples=self.recheck_samples)
        self.student = opts.student
        self.student.gold = opts.gold
        if self.student.train is None:
            self.student.train = round_train_config(seed=opts.seed, device=self.student.device)

    # -- the whole run ---------------------------------------------------------------------------------
    def run(self) -> DistillReport:
        """Every round until a stop rule holds (resuming what ``distill.json`` says), then the final outputs."""
        with RunDirLock(self.out, setting="--out"):
            state = self._load_or_start()
            self._resume_if_stopped(state)
            while state.stopped is None:
                self._advance(state)
            if not state.rounds:
                raise BudgetReached(
                    f"{state.stopped.detail}: no round finished, so there is no student yet; raise "
                    "--max-cost and run the same command again (every answer so far is kept)"
                )
            return write_outputs(self._finished(state), state)

    def _finished(self, state: DistillState) -> Finished:
        o = self.opts
        options = {
            "seed_size": len(state.rounds[0].ids) - len(state.gold),
            "validation_size": len(state.validation),
            "batch_size": self.batch_size(state),
            "budget": o.budget,
            "max_cost": o.max_cost,
            "strategy": o.strategy,
            "diversity": o.diversity,
            "cold_start": o.cold_start,
            "recheck": o.recheck,
            "recheck_samples": self.recheck_samples,
            "patience": o.patience,
            "min_delta": o.min_delta,
            "match_margin": o.match_margin,
            "gold": None if o.gold is None else str(o.gold),
            "seed": o.seed,
            **state.design,
        }
        return Finished(
            out=self.out,
            corpus=self.corpus,
            labelled=self.labelled(state),
            first={i: r.label for i, r in self.teacher.records().items()},
            teacher_dir=self.teacher.dir,
            options=options,
        )

    def _advance(self, state: DistillState) -> None:
        assert state.pending is not None
        step = {"ask": self._ask, "train": self._train, "predict": self._predict, "review": self._review}
        step[state.pending.step](state)
        save_state(self.out, state)

    # -- start and resume ------------------------------------------------------------------------------
    def _design(self) -> dict[str, Any]:
        """What fixes the rounds: the seed, the gold, the student's settings, and the teacher's answers (its model
        and sampling settings, the prompt, the task): a change there would ask the teacher again for every row."""
        from annotator.engine import answer_fingerprint

        o, train = self.opts, self.student.train
        return {
            "seed": o.seed,
            "gold": None if o.gold is None else str(o.gold),
            "model": self.student.model,
            "train": None
            if train is None
            else json.loads(json.dumps({k: v for k, v in vars(train).items() if k != "device"})),
            "teacher": answer_fingerprint(self.cfg),
        }

    def _load_or_start(self) -> DistillState:
        state = load_state(self.out)
        if state is None:
            return self._start()
        if state.rounds:
            self._check_design(state)
            return state
        pending = state.pending
        o = self.opts
        same = (
            pending is not None
            and state.design == self._design()
            and state.input == str(self.corpus.path)
            and o.seed_size in (None, len(pending.ids) - len(state.gold))
            and o.validation_size in (None, state.validation_size)
        )
        return state if same else self._start()  # round 0 unfinished: a new seed may still be drawn

    def _check_design(self, state: DistillState) -> None:
        """A resumed run keeps what fixed its rounds: the corpus, the seed sample, the validation rows, the gold and
        the student's settings (the budgets and stop rules may change)."""
        was = dict(
            state.design,
            input=state.input,
            seed_size=len(state.rounds[0].ids) - len(state.gold),
            validation_size=state.validation_size,
        )
        now = dict(
            self._design(),
            input=str(self.corpus.path),
            seed_size=self.opts.seed_size or was["seed_size"],
            validation_size=self.opts.validation_size or was["validation_size"],
        )
        differs = [k for k in now if was.get(k) != now[k]]
        if differs:
            raise DistillError(
                f"{self.out} holds a distillation made with other {', '.join(differs)} ("
                + ", ".join(f"{k}={was.get(k)!r}" for k in differs)
                + "): rerun with the same options, "
                "choose another --out, or delete it to start over"
            )

    def _start(self) -> DistillState:
        rows = count_rows(self.corpus)
        check_ids(self.corpus)
        gold = self._gold_ids()
        pool = rows - len(gold)
        seed_size, val_size = self._check_sizes(rows, pool, len(gold))
        ranked = select.TopCandidates(seed_size)
        for row in iter_rows(self.corpus):
            if row.id not in gold:
                ranked.push(
                    select.Candidate(0.0, select.rank_of(id_rank_key(str(row.id), self.opts.seed)), str(row.id), "")
                )
        seed = [c.id for c in ranked.best_first()]
        state = DistillState(
            pipeline=str(self.cfg.source_path or self.cfg.name),
            input=str(self.corpus.path),
            rows=rows,
            label_names=self.label_names,
            samples=self.samples,
            design=self._design(),
            validation_size=val_size,
            gold=sorted(gold),
            pending=Pending(round=0, ids=seed + sorted(gold)),
        )
        save_state(self.out, state)
        self.say(
            f"round 0: {len(seed)} random rows ({val_size} for validation)"
            + (f" and the {len(gold)} rows of the human sample" if gold else "")
            + " go to the teacher"
        )
        return state

    def _gold_ids(self) -> set[str]:
        """The corpus rows that have a human gold label (``--gold``)."""
        if self.opts.gold is None:
            return set()
        from annotator.student.gold import load_gold

        labelled = set(load_gold(self.opts.gold, self.label_names).single())
        found = {str(r.id) for r in iter_rows(self.corpus) if r.id in labelled}
        if not found:
            raise DistillError(
                f"--gold {self.opts.gold}: none of its {len(labelled)} items is a row of "
                f"{self.corpus.path} (ids e.g. {sorted(labelled)[:3]})"
            )
        return found

    def _check_sizes(self, rows: int, pool: int, gold: int) -> tuple[int, int]:
        """Seed and validation sizes (defaults resolved); one clear line for a size or budget that cannot work."""
        o = self.opts
        seed = o.seed_size if o.seed_size is not None else min(100, max(2, pool // 5))
        val = o.validation_size if o.validation_size is not None else max(1, seed // 4)
        if seed < 2 or seed >= pool:
            raise DistillError(
                f"--seed-size {seed}: must be at least 2 and below the {pool} rows of {self.corpus.path}"
                + (f" outside the human sample ({gold} rows)" if gold else "")
            )
        if not 0 < val < seed:
            raise DistillError(f"--validation-size {val}: must be at least 1 and below --seed-size {seed}")
        if o.budget is not None:
            if o.budget >= rows * self.samples:
                raise DistillError(
                    f"--budget {o.budget}: not below the corpus size ({rows} rows x {self.samples} "
                    "teacher sample(s)); to label every row, run `annotator run` instead"
                )
            need = (seed + gold) * self.samples
            if o.budget < need:
                raise DistillError(
                    f"--budget {o.budget}: round 0 alone needs {need} teacher calls (--seed-size {seed}"
                    + (f" + {gold} rows of the human sample" if gold else "")
                    + "); raise --budget or "
                    "lower --seed-size"
                )
        return seed, val

    def _rules(self, state: DistillState) -> StopRules:
        o = self.opts
        return StopRules(
            budget=o.budget,
            max_cost=o.max_cost,
            patience=o.patience,
            min_delta=o.min_delta,
            match_margin=o.match_margin if state.gold else None,
            samples=self.samples,
        )

    def _resume_if_stopped(self, state: DistillState) -> None:
        """A stopped run rerun with looser options (larger budget, more patience) goes on; else it stays stopped."""
        if state.stopped is None or not state.rounds:
            if state.stopped is not None and self._cost_left() > 0:
                state.stopped = None
            return
        if state.pending is not None:  # stopped by --max-cost in the middle of asking: go on if it allows more now
            if self._cost_left() > 0:
                state.stopped = None
            return
        last = state.rounds[-1]
        scan = self._scan(state, round_dir(self.out, last.round))
        state.stopped = stop_rule(state.rounds, self._rules(state), self._planned(state), self._spent(), scan.pool_left)
        if state.stopped is None:
            state.pending = self._next(state, scan, last.round + 1)
            if state.pending is None:
                state.stopped = self._no_batch(state)
        save_state(self.out, state)

    # -- accounting -------------------------------------------------------------------------------------
    def _planned(self, state: DistillState) -> int:
        """Teacher calls the budget counts: rows asked x samples, plus rechecks x their samples."""
        return len(asked_ids(state)) * self.samples + len(_rechecked_by_teacher(state)) * self.recheck_samples

    def _spent(self) -> float:
        return self.teacher.spent() + self.rechecker.spent()

    def _calls(self) -> tuple[int, float | None]:
        (a, ca), (b, cb) = self.teacher.calls_and_cost(), self.rechecker.calls_and_cost()
        return a + b, None if ca is None and cb is None else (ca or 0.0) + (cb or 0.0)

    def _cost_left(self) -> float:
        return float("inf") if self.opts.max_cost is None else self.opts.max_cost - self._spent()

    def _max_cost_for(self, run: TeacherRun) -> float | None:
        """``teacher.max_cost`` for one of the two run directories: the budget minus what the other one spent."""
        if self.opts.max_cost is None:
            return None
        other = self.rechecker if run is self.teacher else self.teacher
        return self.opts.max_cost - other.spent()

    # -- step 1: the teacher labels the round's rows ----------------------------------------------------
    def _ask(self, state: DistillState) -> None:
        p = state.pending
        assert p is not None
        asked = asked_ids(state)
        positions = [r.index for r in rows_by_id(self.corpus, asked).values()]
        show = self.student.show_progress
        try:
            with ProgressDisplay(f"round {p.round}: teacher", "rows", enabled=show) as bar:
                records = self.teacher.ask(
                    positions,
                    self._max_cost_for(self.teacher),
                    on_row=lambda _r, st: bar.update(st.rows_done, st.rows_total),
                )
        except BudgetReached as exc:
            state.stopped = Stop(
                reason="cost", detail=f"--max-cost reached while the teacher labelled round {p.round} ({exc})"
            )
            return
        if p.round == 0:
            self._split_seed(state, records)
        p.step = "train"

    def _split_seed(self, state: DistillState, records: dict[str, AnnotationRecord]) -> None:
        """Check that the teacher's seed labels show every label (else the student can never predict the missing
        one), then draw the validation rows from the seed, stratified by those labels (training keeps every one)."""
        from annotator.export.splits import stratified_assign

        gold = set(state.gold)
        seed = [i for i in state.pending.ids if i not in gold] if state.pending else []
        ok = [i for i in seed if i in records and records[i].status == "ok" and records[i].label is not None]
        labels = [str(records[i].label) for i in ok]
        missing = [n for n in self.label_names if n not in labels]
        if not labels:
            raise DistillError(
                f"the teacher answered none of the {len(seed)} seed rows (see the errors in "
                f"{self.teacher.dir / 'annotations.jsonl'}); fix the teacher and run the same command "
                "again"
            )
        if missing:
            seen = ", ".join(f"{n} {labels.count(n)}" for n in self.label_names if n in labels)
            raise DistillError(
                f"the seed sample has no teacher label {', '.join(repr(m) for m in missing)} among its {len(labels)} "
                f"rows ({seen}): the student cannot learn a label it never sees. Raise --seed-size (the answers so "
                "far are kept and not paid again), or drop the label from task.labels if the corpus has none"
            )
        share = min(state.validation_size, len(ok) - 1) / len(ok)
        split = stratified_assign(labels, {"train": 1 - share, "validation": share}, seed=self.opts.seed)
        state.validation = [i for i, s in zip(ok, split) if s == "validation"]

    # -- step 2: a student on every label so far --------------------------------------------------------
    def labelled(self, state: DistillState) -> dict[str, AnnotationRecord]:
        """The teacher's usable records by id, with the labels a recheck changed."""
        changed = state.overrides()
        out = {}
        for i, rec in self.teacher.records().items():
            if rec.status != "ok" or rec.label is None:
                continue
            if i in changed and changed[i] != rec.label:
                rec = rec.model_copy(
                    update={"label": changed[i], "output": {**(rec.output or {}), "label": changed[i]}}
                )
            out[i] = rec
        return out

    def _train(self, state: DistillState) -> None:
        p = state.pending
        assert p is not None
        rdir = round_dir(self.out, p.round)
        records = self.labelled(state)
        val, gold = set(state.validation), set(state.gold)
        order = asked_ids(state)
        splits = {
            "train": [i for i in order if i in records and i not in val and i not in gold],
            "validation": [i for i in state.validation if i in records],
            "test": [i for i in state.gold if i in records],
        }
        dataset = write_dataset(rdir / "dataset", self.cfg, records, {k: v for k, v in splits.items() if v})
        self.say(f"round {p.round}: training the student on {len(splits['train'])} teacher labels")
        train_round(dataset, rdir / "student", self.student)
        p.step = "predict"

    # -- step 3: the student labels the corpus ----------------------------------------------------------
    def _predict(self, state: DistillState) -> None:
        p = state.pending
        assert p is not None
        rdir = round_dir(self.out, p.round)
        with ProgressDisplay(
            f"round {p.round}: student labels the corpus", "rows", enabled=self.student.show_progress
        ) as bar:
            predict_corpus(rdir / "student", self.corpus, rdir / PREDICTIONS_FILE, self.student, on_progress=bar.update)
        p.step = "review"

    # -- step 4: scores, rechecks, stop rules, the next batch -------------------------------------------
    def _scan(self, state: DistillState, rdir: Path) -> _Scan:
        """Validation pairs, the labelled rows' probabilities (confident learning) and the best candidates."""
        o = self.opts
        labels = {i: r.label for i, r in self.labelled(state).items()}
        asked, gold, val = set(asked_ids(state)), set(state.gold), set(state.validation)
        rechecked = {r.id for r in state.rechecks}
        batch = self.batch_size(state)
        size = batch * o.candidates if o.diversity and o.strategy != "random" else batch
        scan = _Scan(top=select.TopCandidates(size), order=select.TopCandidates(batch if o.cold_start else 0))
        code = {n: c for c, n in enumerate(self.label_names)}
        for row, pred in read_predictions(rdir / PREDICTIONS_FILE, iter_rows(self.corpus)):
            rid = str(row.id)
            probs = [float(pred["probs"][n]) for n in self.label_names] if "probs" in pred else None
            if rid in labels:
                if probs is not None and rid in val:
                    scan.val_teacher.append(str(labels[rid]))
                    scan.val_student.append(str(pred["label"]))
                if probs is not None and rid not in gold and rid not in rechecked:
                    scan.cl_ids.append(rid)
                    scan.cl_probs.append(probs)
                    scan.cl_given.append(code[str(labels[rid])])
            elif rid not in asked and rid not in gold and probs is not None:  # no probs: an empty text
                scan.pool_left += 1
                score = 0.0 if o.strategy == "random" else float(select.uncertainty(np.array([probs]), o.strategy)[0])
                rank = select.rank_of(id_rank_key(rid, o.seed))
                scan.top.push(select.Candidate(score, rank, rid, row.text or ""))
                scan.order.push(select.Candidate(0.0, rank, rid, ""))
        return scan

    def batch_size(self, state: DistillState) -> int:
        return self.opts.batch_size if self.opts.batch_size is not None else min(50, max(1, state.rows // 20))

    def _review(self, state: DistillState) -> None:
        p = state.pending
        assert p is not None
        rdir = round_dir(self.out, p.round)
        metrics = StudentMetrics.model_validate_json((rdir / "student" / METRICS_FILE).read_text(encoding="utf-8"))
        scan = self._scan(state, rdir)
        flagged, sent, changed, cost_stop = self._recheck(state, scan, p.round)
        record = self._record(state, metrics, scan, p, flagged, sent, changed)
        state.rounds.append(record)
        state.stopped = cost_stop or stop_rule(
            state.rounds, self._rules(state), record.planned_calls, self._spent(), scan.pool_left
        )
        state.pending = None
        if state.stopped is None:
            state.pending = self._next(state, scan, p.round + 1)
            if state.pending is None:
                state.stopped = self._no_batch(state)
        self._clean_up(state)
        self.say(_round_line(record, state))

    def _record(
        self, state: DistillState, m: StudentMetrics, scan: _Scan, p: Pending, flagged: int, sent: int, changed: int
    ) -> RoundRecord:
        from annotator.student.evaluate import score

        calls, cost = self._calls()
        test = m.evaluation.get("test") if state.gold else None
        base = m.baseline
        return RoundRecord(
            round=p.round,
            ids=p.ids,
            train_items=m.train_size,
            validation_items=len(scan.val_teacher),
            teacher_labels=len(self.labelled(state)),
            planned_calls=self._planned(state),
            teacher_calls=calls,
            cost_usd=cost,
            mean_uncertainty=p.mean_uncertainty,
            cold_start=p.cold_start,
            flagged=flagged,
            rechecked=sent,
            changed=changed,
            student_validation=score(scan.val_teacher, scan.val_student, self.label_names, False)
            if scan.val_teacher
            else None,
            baseline_validation=base.validation if base else None,
            student_test=test.student if test else None,
            teacher_test=test.teacher if test else None,
            baseline_test=base.evaluation["test"].baseline
            if base and state.gold and "test" in base.evaluation
            else None,
            baseline_verdict=base.verdict if base else None,
            best_epoch=m.best_epoch,
            train_seconds=m.train_seconds,
            student_dir=str(round_dir(self.out, p.round)),
        )

    def _recheck(self, state: DistillState, scan: _Scan, k: int) -> tuple[int, int, int, Stop | None]:
        """Labels a confident student disputes go back to the teacher (or to a sheet for people): (flagged, sent,
        changed, a cost stop)."""
        flags = select.confident_disagreements(
            np.array(scan.cl_probs).reshape(-1, len(self.label_names)), scan.cl_given, self.opts.recheck_floor
        )
        if self.opts.recheck == "off" or not flags:
            return len(flags), 0, 0, None
        cap = self.batch_size(state)
        if self.opts.recheck == "teacher" and self.opts.budget is not None:
            cap = min(cap, (self.opts.budget - self._planned(state)) // self.recheck_samples)
        chosen = flags[: max(0, cap)]
        disputes = [
            Recheck(
                id=scan.cl_ids[d.position],
                round=k,
                by=self.opts.recheck,
                teacher=self.label_names[d.given],
                student=self.label_names[d.suggested],
                student_probability=round(d.probability, 4),
                label=self.label_names[d.given],
            )
            for d in chosen
        ]
        if not disputes:
            return len(flags), 0, 0, None
        if self.opts.recheck == "humans":
            self._sheet(disputes, k)
            state.rechecks.extend(disputes)
            return len(flags), len(disputes), 0, None
        return self._ask_again(state, disputes, len(flags))

    def _ask_again(
        self, state: DistillState, disputes: list[Recheck], flagged: int
    ) -> tuple[int, int, int, Stop | None]:
        ids = [*_rechecked_by_teacher(state), *(d.id for d in disputes)]
        try:
            records = self.rechecker.ask(
                [r.index for r in rows_by_id(self.corpus, ids).values()], self._max_cost_for(self.rechecker)
            )
        except BudgetReached as exc:
            return flagged, 0, 0, Stop(reason="cost", detail=f"--max-cost reached while rechecking ({exc})")
        changed = 0
        for d in disputes:
            rec = records.get(d.id)
            if rec is not None and rec.status == "ok" and rec.label is not None:
                d.recheck = rec.label
                if (rec.confidence or 0) > 0.5 and rec.label != d.teacher:  # a strict majority of the new samples
                    d.label = rec.label
                    changed += 1
            state.rechecks.append(d)
        return flagged, len(disputes), changed, None

    def _sheet(self, disputes: list[Recheck], k: int) -> None:
        """A blank annotation sheet (the format of `annotator sample`) with the disputed rows."""
        from annotator.audit import sampling as sp

        found = rows_by_id(self.corpus, [d.id for d in disputes])
        items = [sp.Candidate(d.id, found[d.id].text or "", d.teacher, None) for d in disputes if d.id in found]
        names = sp.annotator_names(1, None)
        design = {
            "distill_round": k,
            "n": len(items),
            "note": "teacher labels a confident student disputes (confident learning); not a random sample",
        }
        sp.write_sheets(
            self.out / RECHECK_SHEETS / f"round_{k:03d}",
            items,
            sp.assign(len(items), names, 1),
            names,
            self.label_names,
            design=design,
        )

    def _next(self, state: DistillState, scan: _Scan, k: int) -> Pending | None:
        """The next round's rows: the batch size, cut to the budgets and the rows left; None when none fits."""
        size = min(self.batch_size(state), scan.pool_left)
        if self.opts.budget is not None:
            size = min(size, (self.opts.budget - self._planned(state)) // self.samples)
        size = min(size, self._rows_affordable())
        cands = scan.top.best_first()
        if size <= 0 or not cands:
            return None
        if self.opts.strategy == "random":
            return Pending(round=k, ids=[c.id for c in cands[:size]])
        if self.opts.cold_start and not student_ahead(state.rounds[-1]):
            return Pending(round=k, ids=[c.id for c in scan.order.best_first()[:size]], cold_start=True)
        if self.opts.diversity and len(cands) > size:
            emb = embed(
                Path(state.rounds[-1].student_dir) / "student",
                [c.text for c in cands],
                self.student.device,
                self.student.predict_batch_size,
            )
            chosen = [cands[i] for i in select.diverse_batch([c.score for c in cands], emb, size, self.opts.seed)]
        else:
            chosen = cands[:size]
        return Pending(
            round=k,
            ids=[c.id for c in chosen],
            mean_uncertainty=round(float(np.mean([c.score for c in chosen])), 4) if chosen else None,
        )

    def _no_batch(self, state: DistillState) -> Stop:
        """Why no row fits in another round (the stop rules passed): the money or the call budget."""
        if self._rows_affordable() <= 0:
            return Stop(
                reason="cost",
                detail=f"${self._spent():.4f} spent: --max-cost ${self.opts.max_cost:g} "
                "pays for no further row at the mean cost per call so far",
            )
        return Stop(
            reason="budget",
            detail=f"{self._planned(state)} of the {self.opts.budget} teacher calls of "
            "--budget are used: none is left for another row",
        )

    def _rows_affordable(self) -> int:
        """Rows the money budget still pays for, at the mean cost per call so far (no budget: no limit)."""
        left = self._cost_left()
        if left == float("inf"):
            return 1 << 62
        calls, cost = self._calls()
        if not cost or not calls:
            return 1 << 62 if left > 0 else 0
        return int(left / (cost / calls) / self.samples)

    def _clean_up(self, state: DistillState) -> None:
        """Rounds before the last finished one keep their reports, not their model or corpus predictions."""
        for r in state.rounds[:-1]:
            rdir = Path(r.student_dir)
            shutil.rmtree(rdir / "student" / "model", ignore_errors=True)
            (rdir / PREDICTIONS_FILE).unlink(missing_ok=True)


def student_ahead(r: RoundRecord) -> bool:
    """Whether the round's student beats its TF-IDF baseline on validation macro-F1 (vs the teacher): until it does,
    its uncertainty says little about which rows would teach it most (the cold start of uncertainty sampling), and
    with --cold-start the next batch is random. True when there is nothing to compare."""
    s, b = r.student_validation, r.baseline_validation
    if s is None or b is None or s.macro_f1 is None or b.macro_f1 is None:
        return True
    return s.macro_f1 > b.macro_f1


def asked_ids(state: DistillState) -> list[str]:
    """Every row sent to the teacher (the round in progress included), in the order asked."""
    rounds = [*(r.ids for r in state.rounds), *([state.pending.ids] if state.pending else [])]
    return list(dict.fromkeys(i for ids in rounds for i in ids))


def _rechecked_by_teacher(state: DistillState) -> list[str]:
    return [r.id for r in state.rechecks if r.by == "teacher"]


def _round_line(r: RoundRecord, state: DistillState) -> str:
    def f1(s: Any) -> str:
        return "-" if s is None or s.macro_f1 is None else f"{s.macro_f1:.3f}"

    test = (
        f"; vs gold: student {f1(r.student_test)}, teacher {f1(r.teacher_test)}, baseline {f1(r.baseline_test)}"
        if r.student_test
        else ""
    )
    recheck = f"; {r.flagged} disputed, {r.rechecked} sent back, {r.changed} changed" if r.flagged else ""
    cold = (
        " at random (cold start: the student is not ahead of its baseline)"
        if state.pending and state.pending.cold_start
        else ""
    )
    nxt = (
        f"; next: {len(state.pending.ids)} rows{cold}"
        if state.pending
        else f"; stop: {state.stopped.detail}"
        if state.stopped
        else ""
    )
    return (
        f"round {r.round}: {r.teacher_labels} teacher labels ({r.train_items} train), {r.teacher_calls} teacher "
        f"calls; validation macro-F1 student {f1(r.student_validation)}, baseline {f1(r.baseline_validation)}"
        f"{test}{recheck}{nxt}"
    )


def price_of(cfg: PipelineConfig) -> bool:
    """Whether the teacher has a price (``--max-cost`` needs one)."""
    return Budget.of(cfg.teacher).price is not None
