"""The fixed choices of command-line options, as enums (``--help`` lists them; typer rejects anything else).

A light module (no imports beyond ``enum``): the command modules import it at start-up, and the modules that
implement each choice derive their own lists from it, so a choice is added in one place.
"""

from __future__ import annotations

from enum import Enum


class Level(str, Enum):
    """``audit --level``: the measurement level of the labels."""

    nominal = "nominal"
    ordinal = "ordinal"  # the label set's order is the scale
    interval = "interval"  # numeric ratings


class GateMetric(str, Enum):
    """``audit --gate-metric``: the statistic ``--min-agreement`` gates on (``annotator.audit.GATE_METRICS``)."""

    krippendorff_alpha = "krippendorff_alpha"
    cohen_kappa = "cohen_kappa"
    gwet_ac1 = "gwet_ac1"
    accuracy = "accuracy"
    macro_f1 = "macro_f1"
    mean_cohen_kappa = "mean_cohen_kappa"
    alpha_substituted = "alpha_substituted"
    winning_rate = "winning_rate"
    advantage_probability = "advantage_probability"


class Strategy(str, Enum):
    """``sample --strategy``: how the items for humans are drawn."""

    random = "random"
    stratified = "stratified"  # by the teacher's label; rare labels covered
    uncertain = "uncertain"  # low teacher confidence oversampled
    confidence = "confidence"  # Confidence-Driven Inference: items drawn in proportion to the teacher's likely error


class ExportFormat(str, Enum):
    """``export --format``: the rows of the exported dataset."""

    auto = "auto"  # classification for label tasks, chat for rephrase/qa
    classification = "classification"
    chat = "chat"
    instruction = "instruction"


class InputFormat(str, Enum):
    """``predict --format`` (and ``input.format`` of a pipeline): how a table file is read."""

    auto = "auto"  # from the extension
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


class Selection(str, Enum):
    """``distill --strategy``: how the student picks the teacher's next rows (``annotator.distill.select``)."""

    margin = "margin"  # smallest gap between the two likeliest labels
    entropy = "entropy"
    least = "least"  # least confidence
    random = "random"  # the seeded random order (the baseline active selection must beat)


class ClassWeights(str, Enum):
    """``--class-weights``: how the student's loss weighs the labels (``annotator.student.loop``)."""

    none = "none"  # every training row counts the same
    balanced = "balanced"  # a label's rows weigh n / (K * n_label): each label counts the same in the loss


class RecheckMode(str, Enum):
    """``distill --recheck``: where the teacher labels a confident student disputes go."""

    teacher = "teacher"  # asked again with more samples; the majority decides
    humans = "humans"  # a blank annotation sheet per round
    off = "off"
