"""The on-disk contract of a pipeline run, shared by `run`, `audit`, `export` and `train-student`.

A run directory holds:

* ``annotations.jsonl`` - one :class:`AnnotationRecord` per input row, in input order.
* ``run.json``          - one :class:`RunManifest` (provenance and counts): the counts and times at its top level
  are the work of the invocation that wrote it; ``answers`` is the provenance of the annotations themselves
  (tokens spent obtaining them and when, whichever invocation did it); ``history`` lists every finished
  invocation on this directory, so a cached rerun is recorded as a rerun instead of replacing the record.
* ``cache.sqlite``      - the crash-safe cache/resume store (internal).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from annotator.errors import InputDataError

log = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.jsonl"
MANIFEST_FILE = "run.json"
CACHE_FILE = "cache.sqlite"

# A registered task's name (annotator.tasks.task_names()); not checked against the registry here, so a run of a
# task whose plugin is not installed can still be read.
TaskType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
FailureKind = Literal["input", "transport", "validation"]


def normalize_id(value: Any) -> str | None:
    """The one id rule of every command (run, validate, audit, export): ids are strings.

    Surrounding whitespace is removed (``" 7"`` and ``"7"`` are the same id), integral numbers are written without
    a fraction (``7`` and ``7.0`` are ``"7"``), booleans are ``"true"``/``"false"``; None, NaN and an empty or
    blank string mean "no id" (None).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None


RAW_KEEP_CHARS = 16_384


def cap_raw(text: str, limit: int = RAW_KEEP_CHARS) -> str:
    """The raw teacher text kept for a failed answer: the first ``limit`` characters, plus a marker with the
    original size when it was longer (a runaway 50 MB answer must not be stored, or held, in full)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[... truncated: {len(text):,} characters in total, first {limit:,} kept]"


class AnnotationRecord(BaseModel):
    """One annotated (or failed) input row."""

    id: str
    text: str
    task: TaskType
    status: Literal["ok", "failed"]
    output: dict[str, Any] | None = Field(
        default=None, description="The validated task output (e.g. {'label': ..., 'rationale': ...})."
    )
    label: str | None = Field(default=None, description="Single-label tasks: the (majority) label.")
    labels: list[str] | None = Field(default=None, description="Multi-label tasks: the (majority) label set.")
    confidence: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description=(
            "Label tasks: the stored answer's vote share over the samples REQUESTED (teacher.samples), invalid "
            "samples counting as votes against it: 2 of 3 agreeing = 0.67, 1 valid sample of 3 = 0.33; 1.0 when "
            "samples=1."
        ),
    )
    votes: dict[str, int] | None = Field(
        default=None, description="Label tasks: votes per label over the valid samples."
    )
    samples: int = Field(default=1, ge=0, description="Valid samples the answer was aggregated from.")
    invalid_samples: int = Field(
        default=0, ge=0, description="Samples that stayed invalid (or whose teacher call failed)."
    )
    sample_errors: list[str] = Field(default_factory=list, description="Why each invalid sample failed.")
    error: str | None = Field(default=None, description="Failed rows: why.")
    raw: str | None = Field(
        default=None,
        description=f"Failed rows: the teacher's last raw text (the first {RAW_KEEP_CHARS:,} characters; see cap_raw).",
    )
    attempts: int = Field(default=0, ge=0)
    tokens: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0, description="Prompt tokens of every teacher call made for this row.")
    cached_tokens: int = Field(
        default=0, ge=0, description="The part of prompt_tokens the provider served from its cache."
    )
    completion_tokens: int = Field(default=0, ge=0)
    cost: float | None = Field(
        default=None,
        ge=0.0,
        allow_inf_nan=False,
        description="USD of the teacher calls that produced this row (teacher.price); None without prices.",
    )
    answered_at: str | None = Field(
        default=None, description="When the last of this row's teacher answers was obtained (UTC, ISO 8601)."
    )
    model: str
    prompt_hash: str
    stage: str | None = Field(
        default=None, description="Cascade runs: the stage whose teacher gave this label (confidence is that stage's)."
    )
    stages: dict[str, float | None] | None = Field(
        default=None,
        description="Cascade runs: the confidence at each stage the row went through, in order (None: "
        "no valid answer); usage fields (tokens, cost, ...) sum over these stages.",
    )
    # why a failed row failed (not written): "input" (empty/too long/template), "transport" (the teacher call
    # failed; not cached, a rerun asks again) or "validation" (invalid answers; cached, see --retry-failed)
    _failure_kind: FailureKind | None = PrivateAttr(default=None)

    def single_label(self) -> str | None:
        """The label of a single-label record: ``label``, else the output's ``label`` (a file written by another
        tool or an older version), read by the id cell rule (:func:`normalize_id`); None when there is none."""
        return self.label if self.label is not None else normalize_id((self.output or {}).get("label"))


class LabelInfo(BaseModel):
    name: str
    description: str = ""


class RunCounts(BaseModel):
    """What a run did (live counters during a run, final numbers in ``run.json``)."""

    rows_total: int = 0
    rows_ok: int = 0
    rows_failed: int = 0
    teacher_calls: int = 0
    cache_hits: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = Field(default=None, description="USD spent by this invocation (teacher.price).")


class StageSummary(BaseModel):
    """One stage of a cascade run: its teacher, threshold and what it did."""

    name: str
    model: str
    run_dir: str
    threshold: float | None = Field(
        description="Kept rows have confidence >= this; None: the stage keeps nothing and is not asked."
    )
    rows_asked: int = 0
    rows_kept: int = 0
    rows_failed: int = 0
    tokens: int = 0
    cost_usd: float | None = None


class CascadeSummary(BaseModel):
    """What a cascade run did and what it guarantees (``run.json``'s ``cascade``)."""

    target: float
    delta: float
    calibration: str
    certified: bool
    statement: str = Field(description="The guarantee, in one sentence.")
    assumption: str
    stages: list[StageSummary]
    rows_to_humans: int = 0
    human_queue: str | None = Field(default=None, description="Folder of the sheets of the rows left to humans.")


class AnswerProvenance(BaseModel):
    """How the answers in ``annotations.jsonl`` were obtained, whichever invocation obtained them."""

    tokens: int = Field(default=0, description="Tokens spent obtaining the answers (invalid attempts included).")
    attempts: int = Field(default=0, description="Teacher calls behind the answers.")
    first_answer_at: str | None = Field(default=None, description="When the earliest answer was obtained (UTC).")
    last_answer_at: str | None = Field(default=None, description="When the latest answer was obtained (UTC).")
    cost_usd: float | None = Field(
        default=None, description="USD the answers cost (teacher.price), failed tries included."
    )


InvocationKind = Literal["run", "resume", "rerun"]


class Invocation(RunCounts):
    """One finished ``annotator run`` on an output directory: what that invocation did.

    ``kind``: ``run`` (every answer asked of the teacher), ``resume`` (some answers came from the cache),
    ``rerun`` (no teacher call: every answer came from the cache).
    """

    kind: InvocationKind
    retry_failed: bool = False
    overrides: list[str] = []
    started_at: str
    finished_at: str | None = None
    annotator_version: str


class RunManifest(RunCounts):
    """Provenance of a run; written to ``run.json``.

    Top-level counts and times: the invocation that wrote this file. ``answers``: the provenance of the
    annotations. ``history``: every finished invocation, oldest first (the last one is this invocation).
    """

    pipeline_name: str
    pipeline_path: str
    config: dict[str, Any]
    task: TaskType
    labels: list[LabelInfo] = []
    multi_label: bool = False
    template_path: str
    template_sha256: str
    backend: str
    model: str
    cost_total_usd: float | None = Field(
        default=None, description="USD spent in this output directory over all runs (teacher.price)."
    )
    started_at: str
    finished_at: str | None = None
    annotator_version: str
    overrides: list[str] = Field(default=[], description="The --set overrides this invocation applied.")
    retry_failed: bool = False
    env_vars: list[str] = Field(default=[], description="Environment variables the pipeline file expanded.")
    answers: AnswerProvenance | None = Field(default=None, description="None in run.json files of older versions.")
    history: list[Invocation] = []
    cascade: CascadeSummary | None = Field(default=None, description="Cascade runs: stages, thresholds, guarantee.")

    def invocation(self) -> Invocation:
        """This manifest's own invocation (the top-level counts and times)."""
        teacher, cached = self.teacher_calls, self.cache_hits
        kind: InvocationKind = "rerun" if teacher == 0 and cached else ("resume" if cached else "run")
        return Invocation(
            kind=kind,
            retry_failed=self.retry_failed,
            overrides=self.overrides,
            started_at=self.started_at,
            finished_at=self.finished_at,
            annotator_version=self.annotator_version,
            **self.model_dump(include=set(RunCounts.model_fields)),
        )


def resolve_run_file(path: str | Path, name: str) -> Path:
    """Accept a run directory or a file inside it; return the path of ``name``."""
    p = Path(path)
    if p.is_dir():
        p = p / name
    return p


def iter_annotations(path: str | Path) -> Iterator[AnnotationRecord]:
    """Stream records from a run directory or an ``annotations.jsonl`` file.

    Ids follow :func:`normalize_id`; a record without an id, or an id that an earlier line already had, is an
    error (a run writes each input row once, so such a file was edited or mixed by hand).
    """
    p = resolve_run_file(path, ANNOTATIONS_FILE)
    if not p.exists():
        raise InputDataError(f"no annotations at {p} (run `annotator run PIPELINE.yaml` first)")
    first_line: dict[str, int] = {}
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rec = AnnotationRecord.model_validate_json(line)
                except ValidationError as exc:
                    cut = "" if line.endswith("\n") else " (the file ends in the middle of this line: cut off?)"
                    raise InputDataError(f"{p}:{n}: not an annotation record: {first_problem(exc)}{cut}") from None
                rid = normalize_id(rec.id)
                if rid is None:
                    raise InputDataError(f"{p}:{n}: record has no id")
                if rid in first_line:
                    raise InputDataError(
                        f"{p}: id {rid!r} occurs twice (lines {first_line[rid]} and {n}); a run writes each id "
                        "once. Run `annotator run` again into a fresh output.dir to rebuild it."
                    )
                first_line[rid] = n
                rec.id = rid
                yield rec


def read_manifest(path: str | Path) -> RunManifest | None:
    """The run's manifest, given a run directory or any file inside it; None when there is none."""
    p = Path(path)
    run_dir = p if p.is_dir() else p.parent
    manifest = run_dir / MANIFEST_FILE
    if not manifest.exists():
        return None
    try:
        return RunManifest.model_validate(json.loads(manifest.read_text(encoding="utf-8")))
    except ValidationError as exc:
        raise ManifestError(f"{manifest} is not a run manifest: {first_problem(exc)}") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise ManifestError(f"{manifest} is not a run manifest: {exc}") from None


class ManifestError(InputDataError, ValueError):
    """A ``run.json`` that is not a run manifest (one line; still a ``ValueError`` for callers that skip it)."""


def first_problem(exc: ValidationError) -> str:
    """A pydantic error in one line: the first problem, where it is and what was there."""
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "the value"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {err['msg']} (got {str(err.get('input'))[:80]!r}){more}"


def earlier_invocations(run_dir: Path) -> list[Invocation]:
    """The history in the ``run.json`` a new invocation replaces (its own entry rebuilt for older files); empty when
    there is none or it cannot be read (the history then starts again, with a warning)."""
    try:
        previous = read_manifest(run_dir)
    except (ValueError, OSError) as exc:  # unreadable or from an incompatible version
        log.warning("%s: previous run.json not readable (%s); history starts again", run_dir, exc)
        return []
    if previous is None:
        return []
    return previous.history or [previous.invocation()]
