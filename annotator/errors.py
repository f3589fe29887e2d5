"""User-facing errors. The CLI prints these as one clear message (no traceback) and exits non-zero."""

from __future__ import annotations


class AnnotatorError(Exception):
    """A problem the user can fix (bad config, bad input file, missing model...)."""

    exit_code = 2


class ConfigError(AnnotatorError):
    """The pipeline YAML is invalid."""


class InputDataError(AnnotatorError):
    """The input data file is unreadable or malformed."""


class TemplateError(AnnotatorError):
    """A prompt template fails to load or render."""


class BackendError(Exception):
    """A teacher call failed for good (after transport retries). Recorded as a per-row failure."""


class GateFailed(AnnotatorError):
    """A quality gate (e.g. ``audit --min-agreement``) was not met."""

    exit_code = 3


class BudgetReached(AnnotatorError):
    """``teacher.max_cost`` reached: no new teacher call was started; everything answered is saved."""

    exit_code = 8
