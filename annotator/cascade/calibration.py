"""``annotator calibrate``: every stage answers the human sample, then the thresholds are chosen with a
finite-sample guarantee (:mod:`annotator.cascade.guarantee`) and written to the pipeline's calibration file.

The calibration file (JSON, :class:`CalibrationFile`) is self-contained: the human majority label, design weight
and every stage's answer for each human item, the thresholds with the walk that chose them, and the guarantee in
one sentence. ``annotator run`` reads the thresholds (refusing a file made for other stages, target or delta), the
report and ``validate --estimate`` read the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from annotator.audit.humans import HumanAnnotations, load_humans, majority_vote
from annotator.backends import Backend
from annotator.cascade import guarantee as g
from annotator.cascade.stages import (
    StageHook,
    StageRun,
    calibration_path,
    cascade_of,
    run_stage,
    stage_fingerprint,
    stage_label,
)
from annotator.config import PipelineConfig
from annotator.errors import ConfigError, InputDataError, TeacherUnreachable
from annotator.inputs import check_ids, iter_rows
from annotator.records import iter_annotations
from annotator.rundir import RunDirLock, atomic_write_text, os_error

CALIBRATION_VERSION = 1
ASSUMPTION = (
    "The human sample is a random draw from the corpus the cascade labels (simple random, or with the inclusion "
    "probabilities written in its sheet, honoured as design weights, in which case the bound is Korn & Graubard's "
    "approximation); the human majority label is the reference; the teachers answer the corpus as they answered the "
    "sample (same models, sampling settings, prompt and task: a calibration made for other stages is refused)."
)


class StageAnswer(BaseModel):
    """A stage's answer on one human item."""

    label: str | None = None
    confidence: float | None = Field(default=None, description="Vote share; None: no valid answer.")
    tokens: int = 0
    cost: float | None = None


class HumanItem(BaseModel):
    """One human item: its majority label, design weight (1 / inclusion probability) and every stage's answer."""

    id: str
    human: str
    weight: float = 1.0
    answers: list[StageAnswer]


class Step(BaseModel):
    """One hypothesis of a stage's fixed-sequence walk."""

    threshold: float
    kept: int
    agreement: float | None
    upper_risk: float
    p_value: float
    rejected: bool


class StageCalibration(BaseModel):
    """A stage's threshold and what it keeps on the human sample."""

    name: str
    model: str
    fingerprint: str
    delta: float = Field(description="The stage's share of delta (delta / number of stages).")
    threshold: float | None = Field(description="None: the stage keeps nothing and is not asked.")
    reached: int = Field(description="Human items the stage is asked about (no earlier stage kept them).")
    kept: int
    coverage: float = Field(description="Weighted share of all human items this stage keeps.")
    agreement: float | None = Field(description="Agreement with the human majority on the items it keeps.")
    agreement_ci: tuple[float, float] | None = Field(description="95% Clopper-Pearson interval of that agreement.")
    steps: list[Step]
    tokens_per_item: float = Field(description="Mean tokens the stage spent per human item it answered.")
    cost_per_item: float | None = Field(description="Mean USD per human item (None without teacher.price).")


class StrongestAlone(BaseModel):
    """The last (strongest) stage alone, calibrated the same way at the same target and delta."""

    name: str
    threshold: float | None
    coverage: float
    agreement: float | None


class CalibrationFile(BaseModel):
    """What ``annotator calibrate`` writes (see the module docstring)."""

    version: int = CALIBRATION_VERSION
    created_at: str
    pipeline: str
    pipeline_path: str
    target: float
    delta: float
    humans: str
    humans_sha256: str
    human_items: int = Field(description="Items in the human file.")
    used: int = Field(description="Items the thresholds were chosen on.")
    no_majority: int = Field(description="Items left out: the humans tie.")
    not_in_input: int = Field(description="Items left out: their id is not in the pipeline's input.")
    not_sendable: int = Field(description="Items left out: empty or too long text (no teacher can label them).")
    weighted: bool = Field(description="Inclusion probabilities were honoured as design weights.")
    stages: list[StageCalibration]
    certified: bool
    coverage: float
    agreement: float | None
    agreement_ci: tuple[float, float] | None
    statement: str
    assumption: str = ASSUMPTION
    strongest_alone: StrongestAlone
    items_needed: int | None = Field(description="Not certified: human items in all that would certify a stage.")
    items: list[HumanItem]

    @property
    def thresholds(self) -> list[float | None]:
        return [s.threshold for s in self.stages]

    def arrays(self) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per stage: confidences (NaN: no answer) and disagreement with humans; and the design weights."""
        k = len(self.items[0].answers) if self.items else len(self.stages)
        conf = [np.array([np.nan if it.answers[j].confidence is None else it.answers[j].confidence
                          for it in self.items]) for j in range(k)]
        wrong = [np.array([it.answers[j].label != it.human for it in self.items]) for j in range(k)]
        return conf, wrong, np.array([it.weight for it in self.items])

    def reach(self) -> list[float]:
        """Weighted share of rows each stage is asked about under the chosen thresholds."""
        conf, _, w = self.arrays()
        return g.reach_shares(g.apply_thresholds(conf, self.thresholds), w, self.thresholds)


# ------------------------------------------------------------------------------------------- reading


def read_calibration(path: Path) -> CalibrationFile | None:
    """The calibration file at ``path``; None when there is none; :class:`ConfigError` when it is unreadable."""
    if not path.exists():
        return None
    try:
        cal = CalibrationFile.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        raise ConfigError(f"{path} is not a calibration file written by `annotator calibrate` ({str(exc).splitlines()[0]}): "
                          "run `annotator calibrate` again") from None
    return cal


def stale_reason(cal: CalibrationFile, cfg: PipelineConfig) -> str | None:
    """Why the calibration does not fit the pipeline as it is now (None: it fits)."""
    cascade = cascade_of(cfg)
    names = [s.name for s in cascade.stages]
    if [s.name for s in cal.stages] != names:
        return f"it was made for stages {[s.name for s in cal.stages]}, the pipeline now has {names}"
    if (cal.target, cal.delta) != (cascade.target, cascade.delta):
        return (f"it was made for target {cal.target:g} and delta {cal.delta:g}, the pipeline now asks for "
                f"{cascade.target:g} and {cascade.delta:g}")
    changed = [s.name for k, s in enumerate(cal.stages) if s.fingerprint != stage_fingerprint(cfg, k)]
    if changed:
        return (f"stage(s) {', '.join(changed)} changed since (model, samples, sampling settings, prompt or task): "
                "their answers on the sample are not the ones the run would use")
    return None


def fresh_calibration(cfg: PipelineConfig) -> CalibrationFile:
    """The pipeline's calibration, checked against the pipeline; :class:`ConfigError` (one line, with the command
    to run) when it is missing or stale."""
    path = calibration_path(cfg)
    where = cfg.source_path or "PIPELINE.yaml"
    cal = read_calibration(path)
    if cal is None:
        raise ConfigError(
            f"no calibration at {path}: a cascade needs its thresholds first. Draw a human sample "
            f"(`annotator calibrate {where} --draw 300 --out humans/`), have it labelled, then `annotator calibrate "
            f"{where} --humans humans/sheet_long.csv` (see docs/cascade.md)")
    why = stale_reason(cal, cfg)
    if why is not None:
        raise ConfigError(f"calibration {path} is stale: {why}. Run `annotator calibrate {where} --humans {cal.humans}` "
                          "again (answers already obtained are reused)")
    return cal


# ------------------------------------------------------------------------------------------- calibrating


class _Sample:
    """The human items of the sample that are in the pipeline's input: their majority label, weight and row."""

    def __init__(self, humans: HumanAnnotations, cfg: PipelineConfig):
        self.humans = humans
        majority = {i: majority_vote(r.values()) for i, r in humans.ratings.items()}
        self.labels = {i: lab for i, lab in majority.items() if lab is not None}
        self.no_majority = len(majority) - len(self.labels)
        check_ids(cfg.input)
        self.index: dict[str, int] = {}
        for row in iter_rows(cfg.input):
            if row.id in self.labels:
                self.index[row.id] = row.index
        self.not_in_input = len(self.labels) - len(self.index)
        if not self.index:
            some = ", ".join(list(self.labels)[:3])
            raise InputDataError(
                f"human sample {humans.path}: none of its {len(self.labels)} items with a majority label is in the "
                f"input {cfg.input.path} (ids such as {some}; ids are compared as text): is it a sample of another "
                "corpus?")

    def weight(self, item: str) -> float:
        pi = self.humans.inclusion_prob.get(item)
        return 1.0 / pi if pi else 1.0


def _answers(run: StageRun, ids: Sequence[str], label: str) -> dict[str, StageAnswer]:
    """Stage answers by id (input failures left out); a sample row whose teacher call failed stops calibration."""
    lost = [i for i in ids if run.failures.get(i) == "transport"]
    if lost:
        raise TeacherUnreachable(
            f"{label}: {len(lost)} human-sample row(s) got no answer (teacher calls failed, e.g. {lost[0]!r}): check "
            "the teacher and run the same command again (every answer so far is kept)")
    out: dict[str, StageAnswer] = {}
    for rec in iter_annotations(run.dir):
        if run.failures.get(rec.id) == "input":
            continue
        ok = rec.status == "ok"
        out[rec.id] = StageAnswer(label=rec.single_label() if ok else None, confidence=rec.confidence if ok else None,
                                  tokens=rec.tokens, cost=rec.cost)
    return out


async def _stage_answers(cfg: PipelineConfig, sample: _Sample, backends: dict[str, Backend],
                         hook: StageHook | None) -> tuple[list[dict[str, StageAnswer]], list[str]]:
    """Every stage's answers on the sample's rows (cached in the stages' run directories), and each stage's model."""
    rows = set(sample.index.values())
    ids = list(sample.index)
    answers, models = [], []
    for k, stage in enumerate(cascade_of(cfg).stages):
        run = await run_stage(cfg, k, rows, backends.get(stage.name), hook=hook)
        answers.append(_answers(run, ids, stage_label(cfg, k)))
        models.append(run.manifest.model)
    return answers, models


def _stage_summary(cfg: PipelineConfig, k: int, model: str, choice: g.StageChoice, cascade: g.CascadeChoice,
                   items: list[HumanItem], conf: np.ndarray, wrong: np.ndarray) -> StageCalibration:
    kept = cascade.kept_by == k
    counts = g.effective_counts(wrong[kept], cascade.weights[kept])
    agree = None if counts.n_eff <= 0 else counts.n_eff - counts.disagree_eff
    answered = [it.answers[k] for it in items if it.answers[k].confidence is not None] or [it.answers[k] for it in items]
    costs = [a.cost for a in answered if a.cost is not None]
    return StageCalibration(
        name=cascade_of(cfg).stages[k].name, model=model, fingerprint=stage_fingerprint(cfg, k), delta=choice.delta,
        threshold=choice.threshold, reached=choice.reached, kept=int(kept.sum()), coverage=cascade.coverage(k),
        agreement=counts.agreement,
        agreement_ci=None if agree is None else g.agreement_interval(agree, counts.n_eff),
        steps=[Step(threshold=s.threshold, kept=s.counts.kept, agreement=s.counts.agreement, upper_risk=s.upper_risk,
                    p_value=s.p_value, rejected=s.rejected) for s in choice.steps],
        tokens_per_item=float(np.mean([a.tokens for a in answered])) if answered else 0.0,
        cost_per_item=float(np.mean(costs)) if costs else None,
    )


def statement(cal: CalibrationFile, needed: tuple[int, str] | None) -> str:
    """The calibration's guarantee (or why there is none) in one sentence."""
    k, n = len(cal.stages), cal.used
    if cal.certified:
        parts = ", ".join(f"{s.name} {s.coverage:.0%}" for s in cal.stages)
        return (f"With probability at least {1 - cal.delta:.0%} over the draw of the {n}-item human sample, the labels "
                f"this cascade keeps agree with the human majority on at least {cal.target:.0%} of the rows it keeps "
                f"(fixed-sequence testing with exact binomial bounds, Trust or Escalate, delta {cal.delta:g} split over "
                f"{k} stages); on the sample it keeps {cal.coverage:.0%} of the rows ({parts}) and leaves "
                f"{1 - cal.coverage:.0%} to humans.")
    if needed is None:
        return (f"Not certified: even at its most confident, no stage agrees with the human majority on more than "
                f"{cal.target:.0%} of these {n} human items, so no sample size would certify the target; every row "
                "goes to humans (use stronger teachers, more samples, or a lower target).")
    total, name = needed
    return (f"Not certified: with these {n} human items no stage can be shown to agree with the human majority on "
            f"{cal.target:.0%} of the rows it keeps (delta {cal.delta:g}), so every row goes to humans; about "
            f"{total} human items in all ({total - n} more), agreeing as these do, would certify stage {name!r}.")


async def calibrate(cfg: PipelineConfig, humans_path: Path, backends: dict[str, Backend] | None = None,
                    hook: StageHook | None = None) -> CalibrationFile:
    """Run every stage on the human sample, choose the thresholds, write the calibration file; return it."""
    cascade_of(cfg)
    humans = load_humans(humans_path)
    with RunDirLock(Path(cfg.output.dir)):
        sample = _Sample(humans, cfg)
        answers, models = await _stage_answers(cfg, sample, backends or {}, hook)
    sendable = [i for i in sample.index if all(i in a for a in answers)]
    items = [HumanItem(id=i, human=sample.labels[i], weight=sample.weight(i), answers=[a[i] for a in answers])
             for i in sendable]
    if not items:
        raise InputDataError(f"human sample {humans_path}: none of its rows can be sent to a teacher (empty or too long "
                             "text)")
    cal = _choose(cfg, items, models)
    cal = cal.model_copy(update={
        "humans": str(humans_path), "humans_sha256": _sha256(humans_path), "human_items": len(humans.ratings),
        "no_majority": sample.no_majority, "not_in_input": sample.not_in_input,
        "not_sendable": len(sample.index) - len(items), "weighted": bool(humans.inclusion_prob),
    })
    path = calibration_path(cfg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, cal.model_dump_json(indent=2))
    except OSError as exc:
        raise os_error(exc, path) from None
    return cal


def _choose(cfg: PipelineConfig, items: list[HumanItem], models: list[str]) -> CalibrationFile:
    """The thresholds for ``items`` (the maths; no I/O), as a calibration file without the human file's facts."""
    cascade = cascade_of(cfg)
    skeleton = CalibrationFile(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), pipeline=cfg.name,
        pipeline_path=str(cfg.source_path or ""), target=cascade.target, delta=cascade.delta, humans="",
        humans_sha256="", human_items=0, used=len(items), no_majority=0, not_in_input=0, not_sendable=0,
        weighted=False, stages=[], certified=False, coverage=0.0, agreement=None, agreement_ci=None, statement="",
        strongest_alone=StrongestAlone(name="", threshold=None, coverage=0.0, agreement=None), items_needed=None,
        items=items)
    conf, wrong, w = skeleton.arrays()
    data = [g.StageData(st.name, conf[k], wrong[k]) for k, st in enumerate(cascade.stages)]
    choice = g.calibrate_cascade(data, w, cascade.target, cascade.delta)
    stages = [_stage_summary(cfg, k, models[k], choice.stages[k], choice, items, conf[k], wrong[k])
              for k in range(len(data))]
    kept = choice.kept_by >= 0
    overall = g.effective_counts(np.where(kept, np.choose(np.maximum(choice.kept_by, 0), wrong), False)[kept], w[kept])
    alone = g.calibrate_cascade([data[-1]], w, cascade.target, cascade.delta)
    alone_counts = g.effective_counts(wrong[-1][alone.kept_by >= 0], w[alone.kept_by >= 0])
    needed = None if choice.certified else g.items_needed(data, w, cascade.target, cascade.delta)
    cal = skeleton.model_copy(update={
        "stages": stages, "certified": choice.certified, "coverage": choice.coverage(),
        "agreement": overall.agreement,
        "agreement_ci": None if overall.agreement is None else g.agreement_interval(
            overall.n_eff - overall.disagree_eff, overall.n_eff),
        "strongest_alone": StrongestAlone(name=data[-1].name, threshold=alone.stages[0].threshold,
                                          coverage=alone.coverage(), agreement=alone_counts.agreement),
        "items_needed": needed[0] if needed else None,
    })
    return cal.model_copy(update={"statement": statement(cal, needed)})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- drawing


def draw_sample(cfg: PipelineConfig, n: int, out: Path, seed: int = 0,
                annotators: int = 3, per_item: int = 3) -> dict[str, str]:
    """Blank sheets (``annotator sample``'s formats, Label Studio files included) for a seeded simple random sample
    of ``n`` input rows: the human sample ``annotator calibrate --humans`` wants. No teacher is called."""
    from annotator.audit import sampling as sp

    if n < 1:
        raise InputDataError(f"--draw must be at least 1; got {n}")
    check_ids(cfg.input)
    rows = [(row.id or "", row.text or "") for row in iter_rows(cfg.input)]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    items = [sp.Candidate(rows[i][0], rows[i][1], "", None) for i in picked]
    names = sp.annotator_names(annotators, None)
    labels = [lab.name for lab in getattr(cfg.task, "labels", [])]
    design = {"pipeline": cfg.name, "input": str(cfg.input.path), "strategy": "random", "seed": seed,
              "population": len(rows), "n": len(items), "annotators": names, "per_item": per_item,
              "purpose": "human sample for `annotator calibrate` (a simple random draw of the input rows)"}
    return sp.write_sheets(out, items, sp.assign(len(items), names, per_item), names, labels,
                           inclusion_prob=[len(items) / len(rows)] * len(items), design=design)


def describe_weights(weights: Sequence[float]) -> str:
    """How the design weights look, for the report (equal, or their range and Kish's design effect)."""
    w = np.asarray(weights, dtype=float)
    if len(w) == 0 or np.allclose(w, w[0]):
        return "equal weights (simple random sample)"
    deff = len(w) * float((w**2).sum()) / float(w.sum()) ** 2
    return f"design weights 1/pi from {w.min():.3g} to {w.max():.3g} (Kish design effect {deff:.2f})"
