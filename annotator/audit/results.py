"""What an audit finds: the pydantic models of ``report.json`` (rendered as ``report.md`` by
:mod:`annotator.audit.report`) and of a comparison of teachers (``comparison.json``, :mod:`annotator.audit.compare`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from annotator.audit.alt_test import AltTestResult
from annotator.audit.calibration import Calibration


class _Model(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="null")


class Estimate(_Model):
    """A point estimate with a percentile-bootstrap confidence interval over items (None when undefined)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None


class Inputs(_Model):
    humans: str
    humans_format: str
    teacher: str
    teacher_source: str
    teacher_model: str | None = None
    teacher_cost_usd: float | None = Field(default=None, description="What the teacher run's annotations cost.")
    teacher_cost_per_item_usd: float | None = None
    level: str
    labels: list[str]
    label_source: str
    epsilon: float
    alpha: float
    bootstrap: int
    seed: int
    confidence_level: float
    kappa_weights: str | None
    gate_metric: str
    min_agreement: float | None = None
    alt_test_min_items: int = 30


class Coverage(_Model):
    annotators: list[str]
    ratings_per_annotator: dict[str, int]
    human_items: int
    human_ratings: int
    teacher_items: int
    teacher_failed: int
    teacher_failed_on_human_items: int
    teacher_only_items: int
    evaluated_items: int
    items_with_2plus_ratings: int
    tied_majority_items: int
    min_ratings_per_item: int
    max_ratings_per_item: int


class ClassMetrics(_Model):
    label: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


class ConfusionMatrix(_Model):
    labels: list[str]
    matrix: list[list[int]] = Field(description="rows = human majority label, columns = teacher label")


class Classification(_Model):
    n_items: int = Field(description="items with a (non-tied) human majority label")
    accuracy: Estimate
    micro_f1: Estimate
    macro_f1: Estimate
    weighted_f1: float | None
    design_weighted_accuracy: Estimate | None = Field(
        None, description="accuracy weighted by 1/inclusion_prob of the sampling design (Hajek), when recorded"
    )
    per_class: list[ClassMetrics]
    confusion_matrix: ConfusionMatrix


class TeacherVsMajority(_Model):
    n_items: int
    percent_agreement: Estimate
    cohen_kappa: Estimate
    krippendorff_alpha: Estimate
    gwet_ac1: Estimate


class PairAgreement(_Model):
    a: str
    b: str
    n_items: int
    cohen_kappa: float | None
    percent_agreement: float | None


class GroupAgreement(_Model):
    fleiss_kappa: Estimate
    krippendorff_alpha: Estimate
    gwet_ac1: Estimate


class HumanHuman(GroupAgreement):
    mean_pairwise_cohen_kappa: Estimate
    mean_pairwise_percent_agreement: Estimate
    pairs: list[PairAgreement]


class SubstitutedAlpha(_Model):
    annotator: str
    krippendorff_alpha: float | None


class TeacherHuman(_Model):
    mean_cohen_kappa: Estimate = Field(description="mean over humans of kappa(teacher, human)")
    mean_percent_agreement: Estimate
    per_annotator: list[PairAgreement]
    with_teacher_added: GroupAgreement = Field(description="the teacher joins the humans as one more rater")
    alpha_teacher_substituted: Estimate = Field(
        description="mean over humans j of alpha when the teacher's labels replace j's (on the items j labelled)"
    )
    substituted: list[SubstitutedAlpha]


class Agreement(_Model):
    kappa_weights: str | None
    teacher_vs_majority: TeacherVsMajority
    human_human: HumanHuman
    teacher_human: TeacherHuman


class Category(_Model):
    label: str
    n_majority_items: int
    human_pair_agreement: float | None = Field(description="share of agreeing human-human pairs on these items")
    teacher_human_agreement: float | None = Field(description="share of agreeing teacher-human pairs on these items")
    teacher_accuracy: float | None = Field(description="teacher = majority on these items (the class recall)")
    human_specific_agreement: float | None
    teacher_specific_agreement: float | None
    human_category_kappa: float | None
    low_human_agreement: bool


class Numeric(_Model):
    teacher_mae: float | None
    teacher_rmse: float | None
    teacher_pearson: float | None
    human_loo_mae: float | None = Field(description="mean |rating - mean of the other humans' ratings|")


class Gate(_Model):
    metric: str
    description: str
    value: float | None
    min_agreement: float | None
    passed: bool | None


class SliceResult(_Model):
    value: str = Field(description="the slice's value of the --by column ('(missing)' for items without one)")
    n_items: int = Field(description="evaluated items in the slice (human-labelled, teacher succeeded)")
    too_small: bool = Field(description="fewer items than --min-slice-items: no metrics computed")
    n_annotators: int = 0
    accuracy: Estimate | None = None
    macro_f1: Estimate | None = None
    teacher_vs_majority_alpha: Estimate | None = None
    human_human_kappa: Estimate | None = Field(default=None, description="mean pairwise Cohen's kappa of the humans")
    teacher_human_kappa: Estimate | None = Field(
        default=None, description="mean Cohen's kappa of the teacher with each human"
    )
    human_human_alpha: Estimate | None = None
    alt_test_passed: bool | None = None
    alt_test_verdict: str = "too small"


class Slices(_Model):
    column: str
    source: str = Field(description="the file the --by column was read from")
    min_slice_items: int
    slices: list[SliceResult]


class AuditReport(_Model):
    annotator_version: str
    created_at: str
    inputs: Inputs
    coverage: Coverage
    warnings: list[str]
    classification: Classification
    agreement: Agreement
    per_category: list[Category]
    low_agreement_categories: list[str]
    alt_test: AltTestResult
    alt_test_verdict: str
    calibration: Calibration
    numeric: Numeric | None = None
    gate: Gate
    slices: Slices | None = None
    files: dict[str, str] = {}


# ------------------------------------------------------------------------ several teachers (annotator.audit.compare)


class TeacherSummary(BaseModel):
    """One teacher's headline numbers (its full report is in ``report_dir``)."""

    name: str
    teacher: str
    model: str | None
    report_dir: str
    evaluated_items: int
    accuracy: Estimate
    design_weighted_accuracy: Estimate | None = None
    macro_f1: Estimate
    cohen_kappa_vs_majority: Estimate
    alpha_vs_majority: Estimate
    alpha_teacher_substituted: Estimate
    winning_rate: float | None
    advantage_probability: float | None
    alt_test_passed: bool | None
    alt_test_weak: bool
    alt_test_verdict: str
    gate_passed: bool | None
    tokens: int | None = None
    tokens_per_item: float | None = None
    per_category_accuracy: dict[str, float | None]


class Comparison(BaseModel):
    annotator_version: str
    created_at: str
    humans: str
    annotators: list[str]
    human_alpha: Estimate
    level: str
    epsilon: float
    alpha: float
    alt_test_min_items: int
    gate_metric: str
    min_agreement: float | None
    teachers: list[TeacherSummary]
    passing: list[str]
    ranking: list[str]
    notes: list[str] = []
