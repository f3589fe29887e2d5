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


class RunDirError(AnnotatorError):
    """The run directory cannot be used: not writable, full disk, damaged cache, bound to another pipeline."""


class RunDirBusy(AnnotatorError):
    """Another process holds the run directory's lock."""

    exit_code = 6


class TooManyFailures(AnnotatorError):
    """The run finished (outputs written) but more rows failed than ``validation.max_failed_fraction`` allows."""

    exit_code = 4


class TeacherUnreachable(AnnotatorError):
    """The circuit breaker stopped the run: too many teacher calls failed in a row."""

    exit_code = 5


class InconsistentOutputs(AnnotatorError):
    """``run.json`` and ``annotations.jsonl`` disagree after a run (they must never; nothing should be trusted)."""

    exit_code = 7


class BudgetReached(AnnotatorError):
    """``teacher.max_cost`` reached: no new teacher call was started; everything answered is saved."""

    exit_code = 8


class OutputPathError(AnnotatorError):
    """An output path would destroy a file the tool did not write: it is an input, another output of the same
    command, or an existing file without this tool's marker (see :mod:`annotator.guard`)."""
