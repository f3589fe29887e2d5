"""``annotator calibrate``: every stage answers the human sample, then the thresholds are chosen with a
finite-sample guarantee (:mod:`annotator.cascade.guarantee`) and written to the pipeline's calibration file.

The calibration file (JSON, :class:`CalibrationFile`) is self-contained: the human majority label, design weight
and every stage's answer for each human item, the thresholds with the walk that chose them, and the guarantee in
one sentence. ``annotator run`` reads the thresholds (refusing a file made for other stages, target or delta, or for
other human-sample rows than the input holds now, and a file whose thresholds are not the ones its own items give),
the report and ``validate --estimate`` read the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timezone
from decimal import ROUND_FLOOR, Decimal, localcontext
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from annotator.audit.humans import HumanAnnotations, load_humans, majority_vote
from annotator.backends import Backend
from annotator.cache import cache_key
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
from annotator.guard import check_distinct
from annotator.inputs import check_ids, count_rows, iter_rows
from annotator.records import iter_annotations
from annotator.rundir import RunDirLock, atomic_write_text, os_error
from annotator.tasks import build_task

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 2
MIN_INCLUSION_PROB = 1e-12
"""Smaller inclusion probabilities are refused: their design weights (1 / pi) would overflow the sums."""
ASSUMPTION = (
    "The human sample is a random draw from the corpus the cascade labels (simple random, or with the inclusion "
    "probabilities written in its sheet, honoured as design weights, in which case the bound is Korn & Graubard's "
    "effective-count approximation with a conservative effective size); nothing checks this: a sample drawn from "
    "another corpus, or from an earlier version of this one, voids the guarantee. The human majority label is the "
    "reference; the teachers answer the corpus as they answered the sample (same models, sampling settings, prompt, "
    "task and validation, and the same sample rows: a calibration made otherwise is refused as stale)."
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
    sample_sha256: str = Field(
        description="The human-sample rows as the input held them (id, text, columns): a run "
        "refuses the file when they changed or left the input."
    )
    input_rows: int = Field(description="Rows in the input when the sample was calibrated.")
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
        conf = [
            np.array([np.nan if it.answers[j].confidence is None else it.answers[j].confidence for it in self.items])
            for j in range(k)
        ]
        wrong = [np.array([it.answers[j].label != it.human for it in self.items]) for j in range(k)]
        return conf, wrong, np.array([it.weight for it in self.items])

    def reach(self) -> list[float]:
        """Weighted share of rows each stage is asked about under the chosen thresholds."""
        conf, _, w = self.arrays()
        return g.reach_shares(g.apply_thresholds(conf, self.thresholds), w, self.thresholds)


# ------------------------------------------------------------------------------------------- reading


RECALIBRATE = "run `annotator calibrate` again (answers already obtained are reused)"


def read_calibration(path: Path) -> CalibrationFile | None:
    """The calibration file at ``path``; None when there is none; :class:`ConfigError` (one line) when it is
    unreadable, of another version, or does not hold what its own human items give (edited or damaged)."""
    if not path.exists():
        return None
    try:
        if not path.is_file():  # a directory, or a FIFO or device that would block or never end
            raise ValueError("not a regular file")
        raw = json.loads(path.read_bytes())
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON {type(raw).__name__}, not an object")
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested past Python's stack
        raise ConfigError(
            f"{path} is not a calibration file written by `annotator calibrate` "
            f"({str(exc).splitlines()[0]}): {RECALIBRATE}"
        ) from None
    if raw.get("version") != CALIBRATION_VERSION:
        raise ConfigError(
            f"{path} was written by another version of `annotator calibrate` (version "
            f"{raw.get('version')!r}; this one reads {CALIBRATION_VERSION}): {RECALIBRATE}"
        )
    try:
        cal = CalibrationFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{path} is not a calibration file written by `annotator calibrate` ({_first_error(exc)}): {RECALIBRATE}"
        ) from None
    why = inconsistency(cal)
    if why is not None:
        raise ConfigError(
            f"{path} does not hold what `annotator calibrate` computed ({why}): was it edited? {RECALIBRATE}"
        )
    return cal


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


def _same(a: float | None, b: float | None) -> bool:
    return (a is None) == (b is None) and (a is None or b is None or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))


def inconsistency(cal: CalibrationFile) -> str | None:
    """Why the file's thresholds, coverage or statement are not what its own human items give at its target and
    delta (None: they are). The thresholds are a function of the items, so a file edited by hand (a threshold
    lowered, a stage dropped, NaN) is caught here rather than trusted."""
    k = len(cal.stages)
    if not cal.items or any(len(it.answers) != k for it in cal.items):
        return f"its human items do not each hold one answer per stage ({k} stages)"
    confidences = [a.confidence for it in cal.items for a in it.answers if a.confidence is not None]
    if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in confidences):
        return "a confidence outside [0, 1]"
    if not all(0 < it.weight <= 1 / MIN_INCLUSION_PROB for it in cal.items):
        return f"a design weight that is not a number in (0, {1 / MIN_INCLUSION_PROB:g}]"
    conf, wrong, w = cal.arrays()
    data = [g.StageData(s.name, conf[j], wrong[j]) for j, s in enumerate(cal.stages)]
    try:
        choice = g.calibrate_cascade(data, w, cal.target, cal.delta)
    except ValueError as exc:
        return str(exc)
    for j, s in enumerate(cal.stages):
        if not _same(s.threshold, choice.thresholds[j]):
            return f"stage {s.name}: threshold {s.threshold} in the file, {choice.thresholds[j]} from its human items"
        if not _same(s.coverage, choice.coverage(j)):
            return f"stage {s.name}: coverage {s.coverage} in the file, {choice.coverage(j)} from its human items"
    if cal.certified != choice.certified or not _same(cal.coverage, choice.coverage()):
        return "its certified flag or coverage differs from its thresholds'"
    needed = None if choice.certified else g.items_needed(data, w, cal.target, cal.delta)
    if cal.used != len(cal.items) or cal.statement != statement(cal, needed):
        return "its statement is not the one its thresholds certify"
    return None


def sample_fingerprint(cfg: PipelineConfig, ids: Collection[str]) -> tuple[str, int]:
    """A hash of the input rows with these ids as the input file holds them now (id, text and every other column,
    the template's variables; ``input.limit`` aside), and how many of the ids it holds."""
    wanted = set(ids)
    found: dict[str, str] = {}
    for row in iter_rows(cfg.input.model_copy(update={"limit": None})):
        if row.id in wanted:
            found[row.id] = json.dumps([row.id, row.text, row.columns], sort_keys=True, default=str, ensure_ascii=False)
    return cache_key({"rows": [found[i] for i in sorted(found)]}), len(found)


def stale_reason(cal: CalibrationFile, cfg: PipelineConfig) -> str | None:
    """Why the calibration does not fit the pipeline as it is now (None: it fits)."""
    cascade = cascade_of(cfg)
    names = [s.name for s in cascade.stages]
    if [s.name for s in cal.stages] != names:
        return f"it was made for stages {[s.name for s in cal.stages]}, the pipeline now has {names}"
    if (cal.target, cal.delta) != (cascade.target, cascade.delta):
        return (
            f"it was made for target {cal.target:g} and delta {cal.delta:g}, the pipeline now asks for "
            f"{cascade.target:g} and {cascade.delta:g}"
        )
    changed = [s.name for k, s in enumerate(cal.stages) if s.fingerprint != stage_fingerprint(cfg, k)]
    if changed:
        return (
            f"stage(s) {', '.join(changed)} changed since (model, samples, sampling settings, prompt, task or "
            "validation): their answers on the sample are not the ones the run would use"
        )
    digest, held = sample_fingerprint(cfg, [it.id for it in cal.items])
    if held < len(cal.items):
        return (
            f"{len(cal.items) - held} of its {len(cal.items)} human-sample rows are not in the input "
            f"{cfg.input.path} (was it made for another input, or did rows leave it?)"
        )
    if digest != cal.sample_sha256:
        return (
            f"some of its {len(cal.items)} human-sample rows changed in the input {cfg.input.path} since (text or "
            "another column): the answers on the sample are not the ones the run would use"
        )
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
            f"{where} --humans humans/sheet_long.csv` (see docs/cascade.md)"
        )
    why = stale_reason(cal, cfg)
    if why is not None:
        raise ConfigError(
            f"calibration {path} is stale: {why}. Run `annotator calibrate {where} --humans "
            f"{cal.humans}` again (answers already obtained are reused)"
        )
    return cal


# ------------------------------------------------------------------------------------------- calibrating


class _Sample:
    """The human items of the sample that are in the pipeline's input: their majority label, weight and row."""

    def __init__(self, humans: HumanAnnotations, cfg: PipelineConfig):
        self.humans = humans
        _check_design(humans)
        tiny = {i: pi for i, pi in humans.inclusion_prob.items() if pi < MIN_INCLUSION_PROB}
        if tiny:
            item, pi = next(iter(tiny.items()))
            raise InputDataError(
                f"human sample {humans.path}: item {item!r} has inclusion_prob {pi:g} ({len(tiny)} item(s) under "
                f"{MIN_INCLUSION_PROB:g}, i.e. more than 10^12 rows per drawn item; their weights would overflow): "
                "was the column written by `annotator sample`? Correct it, or drop the column for a random sample"
            )
        _check_labels(humans, [lab.name for lab in build_task(cfg.task).manifest_labels()[0]])
        majority = {i: majority_vote(r.values()) for i, r in humans.ratings.items()}
        self.labels = {i: lab for i, lab in majority.items() if lab is not None}
        self.no_majority = len(majority) - len(self.labels)
        if not self.labels:
            raise InputDataError(
                f"human sample {humans.path}: the humans tie on every one of its {len(majority)} "
                "items (no majority label to calibrate on): add an annotator or settle the ties"
            )
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
                "corpus?"
            )

    def weight(self, item: str) -> float:
        pi = self.humans.inclusion_prob.get(item)
        return 1.0 / pi if pi else 1.0


def _answers(run: StageRun, ids: Sequence[str], label: str) -> dict[str, StageAnswer]:
    """Stage answers by id (input failures left out); a sample row whose teacher call failed stops calibration."""
    lost = [i for i in ids if run.failures.get(i) == "transport"]
    if lost:
        raise TeacherUnreachable(
            f"{label}: {len(lost)} human-sample row(s) got no answer (teacher calls failed, e.g. {lost[0]!r}): check "
            "the teacher and run the same command again (every answer so far is kept)"
        )
    out: dict[str, StageAnswer] = {}
    for rec in iter_annotations(run.dir):
        if run.failures.get(rec.id) == "input":
            continue
        ok = rec.status == "ok"
        out[rec.id] = StageAnswer(
            label=rec.single_label() if ok else None,
            confidence=rec.confidence if ok else None,
            tokens=rec.tokens,
            cost=rec.cost,
        )
    return out


def _check_design(humans: HumanAnnotations) -> None:
    """Refuse sheets whose design file (``sample.json`` beside them) says they are not a draw of the corpus: a
    cascade's human queue holds the rows no stage kept, the hardest ones, and carries no inclusion probabilities, so
    calibrating on it (filled by the people it was written for) would void the guarantee in silence. A sample drawn
    by ``--draw`` or ``annotator sample`` names its strategy (and the latter its inclusion probabilities)."""
    from annotator.audit.sampling import DESIGN_FILE
    from annotator.choices import Strategy

    path = Path(humans.path).parent / DESIGN_FILE
    try:
        design = json.loads(path.read_bytes()) if path.is_file() else None
    except (OSError, ValueError, RecursionError):
        return  # not a design file this tool wrote: nothing to say about the sample
    if not isinstance(design, dict) or humans.inclusion_prob:
        return
    if design.get("strategy") not in {s.value for s in Strategy}:
        raise InputDataError(
            f"human sample {humans.path}: its design file {path} says it is not a random draw of the input "
            f"({str(design.get('purpose') or design.get('strategy'))[:80]!r}): a cascade's human queue holds the rows "
            "no stage kept, and calibrating on it would void the guarantee. Draw a random sample: `annotator "
            "calibrate PIPELINE.yaml --draw 300 --out humans/`"
        )


def _check_labels(humans: HumanAnnotations, labels: list[str]) -> None:
    """Every human label must be one of the task's (a typo would count as a disagreement with every teacher)."""
    bad = Counter(lab for r in humans.ratings.values() for lab in r.values() if lab not in labels)
    if bad:
        shown = ", ".join(f"{lab!r} ({n}x)" for lab, n in bad.most_common(5))
        raise InputDataError(
            f"human sample {humans.path}: labels outside the task's labels ({', '.join(labels)}): "
            f"{shown}{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}; correct them in the sheet "
            "(labels are compared exactly)"
        )


async def _stage_answers(
    cfg: PipelineConfig, sample: _Sample, backends: dict[str, Backend], hook: StageHook | None
) -> tuple[list[dict[str, StageAnswer]], list[str]]:
    """Every stage's answers on the sample's rows (cached in the stages' run directories), and each stage's model."""
    rows = set(sample.index.values())
    ids = list(sample.index)
    answers, models = [], []
    for k, stage in enumerate(cascade_of(cfg).stages):
        run = await run_stage(cfg, k, rows, backends.get(stage.name), hook=hook)
        answers.append(_answers(run, ids, stage_label(cfg, k)))
        models.append(run.manifest.model)
    return answers, models


def _stage_summary(
    cfg: PipelineConfig,
    k: int,
    model: str,
    choice: g.StageChoice,
    cascade: g.CascadeChoice,
    items: list[HumanItem],
    conf: np.ndarray,
    wrong: np.ndarray,
) -> StageCalibration:
    kept = cascade.kept_by == k
    counts = g.effective_counts(wrong[kept], cascade.weights[kept])
    agree = None if counts.n_eff <= 0 else counts.n_eff - counts.disagree_eff
    answers = [it.answers[k] for it in items]
    answered = [a for a in answers if a.confidence is not None] or answers
    costs = [a.cost for a in answered if a.cost is not None]
    return StageCalibration(
        name=cascade_of(cfg).stages[k].name,
        model=model,
        fingerprint=stage_fingerprint(cfg, k),
        delta=choice.delta,
        threshold=choice.threshold,
        reached=choice.reached,
        kept=int(kept.sum()),
        coverage=cascade.coverage(k),
        agreement=counts.agreement,
        agreement_ci=None if agree is None else g.agreement_interval(agree, counts.n_eff),
        steps=[
            Step(
                threshold=s.threshold,
                kept=s.counts.kept,
                agreement=s.counts.agreement,
                upper_risk=s.upper_risk,
                p_value=s.p_value,
                rejected=s.rejected,
            )
            for s in choice.steps
        ],
        tokens_per_item=float(np.mean([a.tokens for a in answered])) if answered else 0.0,
        cost_per_item=float(np.mean(costs)) if costs else None,
    )


def _exact_pct(x: float, complement: bool = False) -> str:
    """A certified rate ``x`` (or ``1 - x``) as a percentage, never rounded up (0.975 is 97.5%, not 98%; 1 - 1e-12
    is 99.9999%, not 100%): the decimal number the float was written as (``repr``), floored at 4 decimals."""
    with localcontext() as ctx:
        ctx.rounding = ROUND_FLOOR
        d = (1 - Decimal(repr(x)) if complement else Decimal(repr(x))) * 100
        return f"{d.quantize(Decimal('0.0001')).normalize():f}%"


def statement(cal: CalibrationFile, needed: tuple[int, str] | None) -> str:
    """The calibration's guarantee (or why there is none) in one sentence, with its assumption about the sample."""
    k, n = len(cal.stages), cal.used
    target = _exact_pct(cal.target)
    if cal.certified:
        parts = ", ".join(f"{s.name} {s.coverage:.0%}" for s in cal.stages)
        unequal = len({it.weight for it in cal.items}) > 1
        draw = (
            "drawn with the inclusion probabilities its sheet records; design-weighted bounds"
            if unequal
            else "assumed a random draw of the rows this cascade labels"
        )
        sure = _exact_pct(cal.delta, complement=True)
        return (
            f"With probability at least {sure} over the draw of the {n}-item human sample ({draw}), the labels "
            f"this cascade keeps agree with the human majority on at least {target} of the rows it keeps "
            f"(fixed-sequence testing with exact binomial bounds, Trust or Escalate, delta "
            f"{cal.delta:g} split over {k} stages); on the sample it keeps {cal.coverage:.0%} of the rows "
            f"({parts}) and leaves {1 - cal.coverage:.0%} to humans."
        )
    if needed is None:
        return (
            f"Not certified: even at its most confident, no stage agrees with the human majority on more than "
            f"{target} of these {n} human items, so no sample size would certify the target; every row "
            "goes to humans (use stronger teachers, more samples, or a lower target)."
        )
    total, name = needed
    how_many = (
        f"more than {total:,} human items, agreeing as these do, would be needed to certify stage {name!r} "
        "(its agreement is too close to the target)"
        if total >= g.ITEMS_LIMIT
        else f"about {total} human items in all ({total - n} more), agreeing as these do, would certify stage {name!r}"
    )
    return (
        f"Not certified: with these {n} human items no stage can be shown to agree with the human majority on "
        f"{target} of the rows it keeps (delta {cal.delta:g}), so every row goes to humans; {how_many}."
    )


async def calibrate(
    cfg: PipelineConfig,
    humans_path: Path,
    backends: dict[str, Backend] | None = None,
    hook: StageHook | None = None,
    then: Callable[[CalibrationFile], object] | None = None,
) -> CalibrationFile:
    """Run every stage on the human sample, choose the thresholds, write the calibration file, call ``then`` with
    it (``annotator calibrate`` writes the report there); return it. The output directory stays locked until
    ``then`` returns, so a second ``calibrate`` or ``run`` cannot interleave its files with these."""
    cascade_of(cfg)
    check_distinct(
        "calibrate",
        {"cascade.calibration": calibration_path(cfg)},  # the output guard, before any call
        {
            "--humans file": humans_path,
            "input file": cfg.input.path,
            "pipeline file": cfg.source_path,
            "prompt template": cfg.prompt.template,
        },
    )
    # the sample is a draw of the whole input: input.limit (a trial run's first rows) would have left the sample
    # items past it out as "not in the input", and the run without the limit would have trusted that calibration
    cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"limit": None})})
    humans = load_humans(humans_path)
    with RunDirLock(Path(cfg.output.dir)):
        _check_ours(calibration_path(cfg))
        sample = _Sample(humans, cfg)
        answers, models = await _stage_answers(cfg, sample, backends or {}, hook)
        cal = _calibration(cfg, sample, answers, models)
        path = calibration_path(cfg)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, cal.model_dump_json(indent=2))
        except OSError as exc:
            raise os_error(exc, exc.filename or path) from None
        if then is not None:
            then(cal)
    return cal


def _check_ours(path: Path) -> None:
    """Refuse to write the calibration over a file this command did not write (``cascade.calibration`` naming the
    human sheet, the input or any other file would have replaced it): only a missing file, or a JSON object with a
    calibration's fields (any version), may be overwritten."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        raw = json.loads(path.read_bytes()) if path.is_file() else None
    except (OSError, ValueError, RecursionError):
        raw = None
    if not (isinstance(raw, dict) and raw.keys() >= _MARKER):
        raise ConfigError(
            f"cascade.calibration: {path} exists and is not a calibration file written by `annotator "
            "calibrate`; refusing to overwrite it: name a new file in cascade.calibration (or move "
            "that one away)"
        )


_MARKER = {"version", "target", "delta", "stages", "items", "statement"}
"""Fields every calibration file has had: what marks a file at cascade.calibration as one this command wrote."""


def _calibration(
    cfg: PipelineConfig, sample: _Sample, answers: list[dict[str, StageAnswer]], models: list[str]
) -> CalibrationFile:
    """The calibration of the sample items every stage could be asked about (the maths and the file's facts)."""
    sendable = [i for i in sample.index if all(i in a for a in answers)]
    items = [
        HumanItem(id=i, human=sample.labels[i], weight=sample.weight(i), answers=[a[i] for a in answers])
        for i in sendable
    ]
    humans = sample.humans
    if not items:
        raise InputDataError(
            f"human sample {humans.path}: none of its rows can be sent to a teacher (empty or too long text)"
        )
    cal = _choose(cfg, items, models)
    return cal.model_copy(
        update={
            "humans": str(Path(humans.path).resolve()),
            "humans_sha256": _sha256(Path(humans.path)),
            "human_items": len(humans.ratings),
            "sample_sha256": sample_fingerprint(cfg, [it.id for it in items])[0],
            "input_rows": count_rows(cfg.input.model_copy(update={"limit": None})),
            "no_majority": sample.no_majority,
            "not_in_input": sample.not_in_input,
            "not_sendable": len(sample.index) - len(items),
            "weighted": bool(humans.inclusion_prob),
        }
    )


def _choose(cfg: PipelineConfig, items: list[HumanItem], models: list[str]) -> CalibrationFile:
    """The thresholds for ``items`` (the maths; no I/O), as a calibration file without the human file's facts."""
    cascade = cascade_of(cfg)
    skeleton = CalibrationFile(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        pipeline=cfg.name,
        pipeline_path=str(cfg.source_path or ""),
        target=cascade.target,
        delta=cascade.delta,
        humans="",
        humans_sha256="",
        sample_sha256="",
        input_rows=0,
        human_items=0,
        used=len(items),
        no_majority=0,
        not_in_input=0,
        not_sendable=0,
        weighted=False,
        stages=[],
        certified=False,
        coverage=0.0,
        agreement=None,
        agreement_ci=None,
        statement="",
        strongest_alone=StrongestAlone(name="", threshold=None, coverage=0.0, agreement=None),
        items_needed=None,
        items=items,
    )
    conf, wrong, w = skeleton.arrays()
    data = [g.StageData(st.name, conf[k], wrong[k]) for k, st in enumerate(cascade.stages)]
    choice = g.calibrate_cascade(data, w, cascade.target, cascade.delta)
    stages = [
        _stage_summary(cfg, k, models[k], choice.stages[k], choice, items, conf[k], wrong[k]) for k in range(len(data))
    ]
    kept = choice.kept_by >= 0
    overall = g.effective_counts(np.where(kept, np.choose(np.maximum(choice.kept_by, 0), wrong), False)[kept], w[kept])
    alone = g.calibrate_cascade([data[-1]], w, cascade.target, cascade.delta)
    alone_counts = g.effective_counts(wrong[-1][alone.kept_by >= 0], w[alone.kept_by >= 0])
    needed = None if choice.certified else g.items_needed(data, w, cascade.target, cascade.delta)
    cal = skeleton.model_copy(
        update={
            "stages": stages,
            "certified": choice.certified,
            "coverage": choice.coverage(),
            "agreement": overall.agreement,
            "agreement_ci": None
            if overall.agreement is None
            else g.agreement_interval(overall.n_eff - overall.disagree_eff, overall.n_eff),
            "strongest_alone": StrongestAlone(
                name=data[-1].name,
                threshold=alone.stages[0].threshold,
                coverage=alone.coverage(),
                agreement=alone_counts.agreement,
            ),
            "items_needed": needed[0] if needed else None,
        }
    )
    return cal.model_copy(update={"statement": statement(cal, needed)})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- drawing


def draw_sample(
    cfg: PipelineConfig, n: int, out: Path, seed: int = 0, annotators: int = 3, per_item: int = 3
) -> tuple[dict[str, str], int]:
    """Blank sheets (``annotator sample``'s formats, Label Studio files included) for a seeded simple random sample
    of ``n`` input rows (every row when the input has fewer): the human sample ``annotator calibrate --humans``
    wants; and how many rows were drawn. No teacher is called."""
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
    design = {
        "pipeline": cfg.name,
        "input": str(cfg.input.path),
        "strategy": "random",
        "seed": seed,
        "population": len(rows),
        "n": len(items),
        "annotators": names,
        "per_item": per_item,
        "purpose": "human sample for `annotator calibrate` (a simple random draw of the input rows)",
    }
    if len(items) < n:
        log.warning(
            "--draw %d: the input %s has only %d rows; every one of them is in the sample",
            n,
            cfg.input.path,
            len(items),
        )
    try:
        files = sp.write_sheets(
            out,
            items,
            sp.assign(len(items), names, per_item),
            names,
            labels,
            inclusion_prob=[len(items) / len(rows)] * len(items),
            design=design,
            command="calibrate",
        )
    except OSError as exc:
        raise os_error(exc, exc.filename or out) from None
    return files, len(items)


def describe_weights(weights: Sequence[float]) -> str:
    """How the design weights look, for the report (equal, or their range and Kish's design effect)."""
    w = np.asarray(weights, dtype=float)
    if len(w) == 0 or np.allclose(w, w[0]):
        return "equal weights (simple random sample)"
    deff = len(w) * float((w**2).sum()) / float(w.sum()) ** 2
    return f"design weights 1/pi from {w.min():.3g} to {w.max():.3g} (Kish design effect {deff:.2f})"
