"""What ``annotator train-student`` reports: the models of ``metrics.json`` (rendered as the model card by
:mod:`annotator.student.card`), the files it writes, and its error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from annotator.errors import AnnotatorError
from annotator.student.calibration import METHOD
from annotator.student.evaluate import EvalBlock, Scores
from annotator.student.slices import Selection

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
MODEL_DIR = "model"
CARD_FILE = "README.md"  # the student's model card, in MODEL_DIR
BASELINE_METHOD = "TF-IDF (word 1-2 grams, sublinear tf) + logistic regression"


class StudentError(AnnotatorError):
    """train-student cannot run as asked."""


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


class BaselineScope(BaseModel):
    """The baseline's scores on one evaluation scope of the student (same items)."""

    items: int
    with_gold: int = 0
    baseline: Scores | None = Field(None, description="Baseline vs human gold.")
    baseline_vs_teacher: Scores | None = Field(None, description="Baseline vs the teacher's labels.")


class BaselineReport(BaseModel):
    """Saved in metrics.json as ``baseline``."""

    method: str = BASELINE_METHOD
    c: float = Field(description="The regularisation chosen on validation.")
    train_items: int
    seconds: float
    validation: Scores | None = Field(None, description="Vs the teacher's labels on the validation items.")
    evaluation: dict[str, BaselineScope] = Field(default_factory=dict, description="The student's scopes.")
    compared_on: str | None = Field(None, description="Where student and baseline were compared, e.g. 'test vs gold'.")
    student_beats_baseline: bool | None = Field(
        None, description="The student has a higher accuracy AND a higher macro-F1 there (None: nothing to compare)."
    )
    verdict: str | None = Field(None, description="The plain sentence shown when the student does not beat it.")


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
    baseline: BaselineReport | None = Field(None, description="TF-IDF + logistic regression on the same labels.")
    notes: list[str] = []
