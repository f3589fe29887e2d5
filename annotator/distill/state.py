"""What `annotator distill` has done so far: ``distill.json`` in its output folder, rewritten atomically after every
step of a round, so a killed run resumes at the step it was in (finished rounds are never retrained; the teacher's
answers are in its cache and are never asked twice).

A round goes through four steps (``Pending.step``): ``ask`` (the teacher labels the round's rows), ``train`` (a
student on every label so far), ``predict`` (the student labels the corpus; itself resumable) and ``review`` (scores,
likely teacher errors sent back, the stop rules, the next batch). Only ``review`` appends the round to ``rounds``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from annotator.errors import AnnotatorError
from annotator.rundir import atomic_write_text, os_error
from annotator.student.evaluate import Scores

STATE_FILE = "distill.json"
VERSION = 1

Step = Literal["ask", "train", "predict", "review"]
StopReason = Literal["budget", "cost", "plateau", "matched", "pool"]


class DistillError(AnnotatorError):
    """`annotator distill` cannot run as asked."""


class Pending(BaseModel):
    """The round in progress: the rows it asks the teacher for and the step it is in."""

    round: int
    ids: list[str] = Field(description="Rows this round asks the teacher for, in the order chosen.")
    step: Step = "ask"
    mean_uncertainty: float | None = Field(None, description="Of the rows chosen (None: seed or random).")
    cold_start: bool = Field(
        False,
        description="Chosen at random although the strategy is not: the last student "
        "did not beat its baseline on validation yet (--cold-start).",
    )


class Recheck(BaseModel):
    """A teacher label that a confident student disputed, and what the second look decided."""

    id: str
    round: int
    by: Literal["teacher", "humans"] = Field(description="Where the disputed row went.")
    teacher: str
    student: str
    student_probability: float
    recheck: str | None = Field(None, description="The majority of the recheck samples (None: sent to people).")
    label: str = Field(description="The label used from then on.")


class RoundRecord(BaseModel):
    """One finished round (counts are cumulative unless named per round)."""

    round: int
    ids: list[str] = Field(default=[], description="Rows sent to the teacher in this round.")
    train_items: int
    validation_items: int
    teacher_labels: int = Field(description="Rows with a teacher label so far (training, validation, human sample).")
    planned_calls: int = Field(
        description="Teacher calls the budget counts so far: rows x samples, rechecks x samples."
    )
    teacher_calls: int = Field(description="Teacher calls made so far, invalid answers asked again included.")
    cost_usd: float | None = None
    mean_uncertainty: float | None = None
    cold_start: bool = Field(False, description="This round's rows were chosen at random (--cold-start).")
    flagged: int = Field(0, description="Likely teacher errors flagged in this round.")
    rechecked: int = Field(0, description="Of them, sent back (teacher or people) in this round.")
    changed: int = Field(0, description="Of them, labels the teacher's second look changed.")
    student_validation: Scores | None = Field(None, description="Student vs the teacher on the validation rows.")
    baseline_validation: Scores | None = None
    student_test: Scores | None = Field(None, description="Student vs human gold (--gold).")
    teacher_test: Scores | None = None
    baseline_test: Scores | None = None
    baseline_verdict: str | None = Field(None, description="The plain sentence when the student loses to the baseline.")
    best_epoch: int | None = None
    train_seconds: float = 0.0
    student_dir: str


class Stop(BaseModel):
    reason: StopReason
    detail: str


class DistillState(BaseModel):
    """``distill.json``."""

    version: int = VERSION
    pipeline: str
    input: str
    rows: int
    label_names: list[str]
    samples: int = Field(description="teacher.samples: calls per row.")
    design: dict[str, Any] = Field(description="The options that fix the rounds (refused if changed on resume).")
    validation_size: int = Field(0, description="Rows of the seed kept for validation.")
    validation: list[str] = Field(
        default=[],
        description="Drawn from the seed once the teacher has labelled it "
        "(stratified by its labels, so training sees every label the seed has).",
    )
    gold: list[str] = Field(default=[], description="Rows of the human sample: labelled, never trained on.")
    rounds: list[RoundRecord] = []
    pending: Pending | None = None
    rechecks: list[Recheck] = []
    stopped: Stop | None = None

    def overrides(self) -> dict[str, str]:
        """Labels changed by a recheck: id -> the label used."""
        return {r.id: r.label for r in self.rechecks}


def load_state(out: Path) -> DistillState | None:
    path = out / STATE_FILE
    if not path.exists():
        return None
    try:
        return DistillState.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DistillError(
            f"{path} is not a distill state file ({first}); delete {out} to start over, or choose another --out"
        ) from None


def save_state(out: Path, state: DistillState) -> None:
    try:
        atomic_write_text(out / STATE_FILE, state.model_dump_json(indent=1))
    except OSError as exc:
        raise os_error(exc, out / STATE_FILE) from None
