"""The pipeline engine: stream rows -> render prompt -> teacher (cached) -> validate -> aggregate -> persist.

It knows tasks and backends only through their protocols (:mod:`annotator.tasks.base`,
:mod:`annotator.backends.base`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

import annotator
from annotator.backends import Backend, BaseTeacherConfig, Generation, GenerationRequest, build_backend
from annotator.cache import ResultStore, SampleResult, cache_key, prompt_hash, sample_key, task_fingerprint
from annotator.config import PipelineConfig
from annotator.costs import Budget, call_cost, estimate_prompt_tokens
from annotator.errors import (
    BackendError,
    BudgetReached,
    ConfigError,
    InputDataError,
    TeacherUnreachable,
    TemplateError,
)
from annotator.guard import check_run_outputs
from annotator.inputs import InputRow, check_ids, count_rows, cut_by_limit, iter_rows
from annotator.plugins import foreign_exit
from annotator.records import (
    CACHE_FILE,
    AnnotationRecord,
    AnswerProvenance,
    FailureKind,
    RunCounts,
    RunManifest,
    earlier_invocations,
)
from annotator.redact import redact_data
from annotator.retry import AnswerValidator, RowBudget, ValidationPolicy
from annotator.rundir import RunDirLock, bind_run_dir, verify_outputs, write_run_outputs
from annotator.schemas import strict_json_schema
from annotator.tasks import Task, build_task
from annotator.templates import PromptTemplate

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _utc(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


class AnswerTotals:
    """Accumulates the provenance of the answers behind a run's records (tokens, calls, when obtained)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.attempts = 0
        self.first: float | None = None
        self.last: float | None = None
        self.cost: float | None = None  # USD (teacher.price)

    def observe(self, results: list[SampleResult]) -> float | None:
        """Count one row's sample results; return when the latest of them was obtained."""
        times = [r.created for r in results if r.created is not None]
        self.tokens += sum(r.tokens for r in results)
        self.attempts += sum(r.attempts for r in results)
        costs = [r.cost for r in results if r.cost is not None]
        if costs:
            self.cost = (self.cost or 0.0) + sum(costs)
        if not times:
            return None
        self.first = min(times) if self.first is None else min(self.first, *times)
        self.last = max(times) if self.last is None else max(self.last, *times)
        return max(times)

    def provenance(self) -> AnswerProvenance:
        return AnswerProvenance(
            tokens=self.tokens,
            attempts=self.attempts,
            first_answer_at=_utc(self.first),
            last_answer_at=_utc(self.last),
            cost_usd=self.cost,
        )


class RunStats(RunCounts):
    """Live counters (the progress bar reads these)."""

    rows_done: int = 0
    started: float = Field(default_factory=time.monotonic)
    failed_by_kind: dict[str, int] = Field(default_factory=dict, description="Failed rows per FailureKind.")

    def count(self, record: AnnotationRecord) -> None:
        """One finished row: ok, or failed (by kind)."""
        self.rows_done += 1
        if record.status == "ok":
            self.rows_ok += 1
        else:
            self.rows_failed += 1
            kind = record._failure_kind or "validation"
            self.failed_by_kind[kind] = self.failed_by_kind.get(kind, 0) + 1

    @property
    def rows_per_s(self) -> float:
        dt = time.monotonic() - self.started
        return self.rows_done / dt if dt > 0 else 0.0


def load_template(cfg: PipelineConfig) -> PromptTemplate:
    """The pipeline's template: ``prompt.template`` when set, else the package's default for the task."""
    if cfg.prompt.template is None:
        return PromptTemplate.builtin(cfg.task.type, system=cfg.prompt.system)
    return PromptTemplate.from_file(Path(cfg.prompt.template), system=cfg.prompt.system)


ANSWER_FIELDS = {"backend", "model", "temperature", "sample_temperature", "samples", "seed", "max_tokens"}
"""The teacher settings that shape its answers (with the prompt, the task and ``validation``)."""
VALIDATION_FIELDS = {"max_attempts", "max_tokens_per_row", "on_invalid"}
"""The ``validation`` settings that decide which answers end valid (so a row's label and vote share)."""


def answer_fingerprint(cfg: PipelineConfig, teacher: BaseTeacherConfig | None = None) -> str:
    """A hash of what shapes ``teacher``'s (default: the pipeline's) answers to the pipeline's rows: its model and
    sampling settings, the prompt template and system prompt, the whole task (its labels, instructions and few-shot
    examples) and how invalid answers are tried again (``validation``: fewer tries or another policy change which
    rows end with a valid answer). Answers made under another one are stale (a cascade's calibration) or would all
    be asked again (a resumed distillation)."""
    t = teacher or cfg.teacher
    return cache_key(
        {
            "teacher": t.model_dump(mode="json", include=ANSWER_FIELDS),
            "template": load_template(cfg).sha256,
            "system": cfg.prompt.system,
            "task": cfg.task.model_dump(mode="json"),
            "validation": cfg.validation.model_dump(mode="json", include=VALIDATION_FIELDS),
        }
    )


def item_rng(seed: int, row_id: str) -> random.Random:
    """Per-item RNG (label shuffling): same item, same order, so prompts (and the cache) are stable."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class _Lane:
    """What every row of a run goes through: the teacher, its concurrency limit and the store."""

    backend: Backend
    sem: asyncio.Semaphore
    store: ResultStore


class _InFlight:
    """The rows in flight: at most ``limit`` at once. The first failure stops new rows and cancels the others (circuit
    breaker, full disk: saved answers stay cached), except :class:`BudgetReached`: calls in flight are paid for, so
    they finish and are saved; no new call starts."""

    def __init__(self, limit: int) -> None:
        self.window = asyncio.Semaphore(limit)
        self.pending: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []

    async def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Start ``work()`` once a place is free; False (nothing started) once a row has failed."""
        await self.window.acquire()
        if self.errors:
            return False
        task = asyncio.create_task(work())
        self.pending.add(task)
        task.add_done_callback(self._done)
        return True

    def release(self) -> None:
        """A row's teacher work is over: its place goes to the next row."""
        self.window.release()

    def _done(self, t: asyncio.Task[None]) -> None:
        self.pending.discard(t)
        exc = None if t.cancelled() else t.exception()
        if exc is None:
            return
        self.errors.append(exc)
        if isinstance(exc, BudgetReached):
            return
        for other in self.pending:
            other.cancel()

    async def finish(self) -> None:
        """Wait for the rows in flight; raise the first failure."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        if self.errors:
            raise self.errors[0]

    def cancel(self) -> None:
        """Cancel the rows still in flight (the run is ending)."""
        for t in self.pending:
            t.cancel()


class Pipeline:
    """One configured pipeline. ``await pipeline.run()`` annotates every input row exactly once."""

    def __init__(
        self,
        cfg: PipelineConfig,
        backend: Backend | None = None,
        retry_failed: bool = False,
        on_row: Callable[[AnnotationRecord, RunStats], None] | None = None,
        only_rows: Collection[int] | None = None,
    ):
        self.cfg = cfg
        self.only_rows = only_rows  # input positions to annotate (a cascade stage's rows); None: every row
        self.task: Task = build_task(cfg.task)
        self.template = load_template(cfg)
        self.schema = strict_json_schema(self.task.output_model)
        self._backend = backend
        self.retry_failed = retry_failed
        self.on_row = on_row
        self.stats = RunStats()
        self.answers = AnswerTotals()
        self.out_dir = Path(cfg.output.dir)
        self._transport_streak = 0  # teacher calls failed in a row (the circuit breaker)
        self.budget = Budget.of(cfg.teacher)
        self.on_batch: Callable[[int, int, str], None] | None = None  # teacher.mode batch: requests answered
        if self.budget.price is not None:
            self.stats.cost_usd = 0.0
        self._task_fingerprint = task_fingerprint(cfg.task)
        self.policy = ValidationPolicy.from_config(cfg.validation)
        self.validator = AnswerValidator(self.task, cfg.teacher.max_tokens)

    # -- prompts -------------------------------------------------------------------------------------
    def rows(self) -> Iterator[InputRow]:
        """The input rows this run annotates, in input order: every row, or those at :attr:`only_rows`."""
        for row in iter_rows(self.cfg.input):
            if self.only_rows is None or row.index in self.only_rows:
                yield row

    def render(self, row: InputRow) -> list[dict[str, str]]:
        variables = self.task.template_variables(row, item_rng(self.cfg.teacher.seed, row.id or ""))
        return self.template.render(variables)

    def preview(self) -> tuple[InputRow, list[dict[str, str]]]:
        """The first input row and its rendered prompt (used by `annotator validate`)."""
        for row in iter_rows(self.cfg.input.model_copy(update={"limit": 1})):
            return row, self.render(row)
        raise InputDataError(f"input file has no rows: {self.cfg.input.path}")

    def prompt_of(self, row: InputRow) -> list[dict[str, str]] | str:
        """The rendered prompt of a row, or why the row is recorded as failed without a teacher call."""
        if not row.text or not row.text.strip():
            return "empty text"
        max_chars = self.cfg.input.max_chars
        if max_chars and len(row.text) > max_chars:
            return f"text too long ({len(row.text)} > input.max_chars={max_chars} characters)"
        try:
            return self.render(row)
        except TemplateError as exc:  # this row's data does not fit the template (the first row did: preview)
            return f"prompt could not be rendered: {exc}"

    # -- one sample ----------------------------------------------------------------------------------
    def _sample_params(self, k: int) -> tuple[float, int]:
        t = self.cfg.teacher
        temperature = t.sample_temperature if t.samples > 1 else t.temperature
        return temperature, t.seed + k

    async def _sample(
        self, lane: _Lane, messages: list[dict[str, str]], k: int, row: InputRow, budget: RowBudget
    ) -> SampleResult:
        """Sample ``k`` of a row: from the cache, else asked (and validated) under :attr:`policy`, then cached
        (transport failures are not)."""
        key = self.sample_key(lane.backend, messages, k)
        cached = lane.store.get_sample(key)
        if cached is not None and (cached.ok or not self.retry_failed):
            self.stats.cache_hits += 1
            return cached
        result = SampleResult(ok=False, attempts=0, tokens=0)
        if cached is not None:  # asked again (--retry-failed): what it cost before still counts
            result = result.model_copy(update=cached.model_dump(include=_USAGE_FIELDS))

        async def call(req: GenerationRequest, sample: SampleResult) -> Generation:
            return await self._call(lane, req, sample)

        result = await self.policy.ask(
            self.request(messages, k, 0),
            call,
            lambda sample, gen: self.validator.check(sample, gen, row),
            budget,
            result,
        )
        if not result.transport:
            lane.store.put_sample(key, result)
        return result

    async def _call(self, lane: _Lane, req: GenerationRequest, result: SampleResult) -> Generation:
        """One teacher call within the concurrency limit and ``teacher.max_cost``, its usage charged to
        ``result`` and the run; a failure counts towards the circuit breaker."""
        estimate = self.budget.estimate(estimate_prompt_tokens(req.messages), req.max_tokens)
        async with lane.sem:
            self.budget.reserve(estimate)  # raises BudgetReached: no new call once teacher.max_cost is near
            self.stats.teacher_calls += 1
            try:
                gen = await lane.backend.generate(req)
            except BackendError as exc:  # transport failure after the backend's own retries
                self.budget.settle(estimate, None)
                self._trip_breaker(exc)
                raise
            self.budget.settle(estimate, self.charge(result, gen))
            self._transport_streak = 0
        return gen

    def sample_key(self, backend: Backend, messages: list[dict[str, str]], k: int) -> str:
        """The cache key of sample ``k`` of a prompt (see :func:`annotator.cache.sample_key`)."""
        temperature, seed = self._sample_params(k)
        return sample_key(
            messages=messages,
            model=backend.model_id,
            mode=backend.structured_mode,
            schema=self.schema,
            temperature=temperature,
            max_tokens=self.cfg.teacher.max_tokens,
            seed=seed,
            sample=k,
            task=self._task_fingerprint,
        )

    def request(self, messages: list[dict[str, str]], k: int, attempt: int) -> GenerationRequest:
        """The teacher request of sample ``k``, try ``attempt`` (0-based) when resampling (the Batch API's
        follow-up batches; online re-asks build theirs in :meth:`annotator.retry.ValidationPolicy.ask`)."""
        temperature, seed = self._sample_params(k)
        first = GenerationRequest(
            messages=messages,
            json_schema=self.schema,
            max_tokens=self.cfg.teacher.max_tokens,
            temperature=temperature,
            seed=seed,
        )
        return self.policy.request(first, attempt)

    def charge(self, result: SampleResult, gen: Generation) -> float | None:
        """Add one answer's usage (and cost, with teacher.price) to the sample and the run; return the cost."""
        cost = call_cost(self.budget.price, gen.prompt_tokens, gen.cached_tokens, gen.completion_tokens)
        for target in (result, self.stats):
            target.tokens += gen.tokens
            target.prompt_tokens += gen.prompt_tokens
            target.cached_tokens += gen.cached_tokens
            target.completion_tokens += gen.completion_tokens
        if cost is not None:
            result.cost = (result.cost or 0.0) + cost
            self.stats.cost_usd = (self.stats.cost_usd or 0.0) + cost
        return cost

    def _trip_breaker(self, exc: BackendError) -> None:
        """Count a failed teacher call; stop the run when too many failed in a row (the teacher is down)."""
        self._transport_streak += 1
        limit = self.cfg.validation.max_consecutive_transport_failures
        if self._transport_streak >= limit:
            where = self.cfg.teacher.location
            raise TeacherUnreachable(
                f"stopped: {self._transport_streak} teacher calls in a row failed (last: {exc}). Check that the "
                f"teacher ({where}) is up and reachable, then run the same command again: every answer saved so far "
                "is kept and failed calls are asked again (validation.max_consecutive_transport_failures="
                f"{limit})"
            )

    # -- one row -------------------------------------------------------------------------------------
    def _failed(
        self,
        row: InputRow,
        error: str,
        model: str,
        kind: FailureKind,
        prompt_hash: str = "",
        raw: str | None = None,
        attempts: int = 0,
        tokens: int = 0,
    ) -> AnnotationRecord:
        record = AnnotationRecord(
            id=row.id or "",
            text=row.text or "",
            task=self.cfg.task.type,
            status="failed",
            error=error,
            raw=raw,
            samples=0,
            attempts=attempts,
            tokens=tokens,
            model=model,
            prompt_hash=prompt_hash,
        )
        record._failure_kind = kind
        return record

    async def _row(self, lane: _Lane, row: InputRow) -> AnnotationRecord:
        model = lane.backend.model_id
        messages = self.prompt_of(row)
        if isinstance(messages, str):
            return self._failed(row, messages, model, "input")
        phash = prompt_hash(messages)
        budget = RowBudget(self.policy.max_tokens_per_row, row_id=row.id)
        results = await asyncio.gather(
            *(_no_plugin_exit(self._sample(lane, messages, k, row, budget)) for k in range(self.cfg.teacher.samples))
        )
        attempts = sum(r.attempts for r in results)
        tokens = sum(r.tokens for r in results)
        usage = _row_usage(results)
        answered_at = _utc(self.answers.observe(results))
        good = [self.task.output_model.model_validate(r.output) for r in results if r.ok]
        sample_errors = [r.error or "no valid output" for r in results if not r.ok]
        if not good:
            last = results[-1]
            kind: FailureKind = "transport" if all(r.transport for r in results) else "validation"
            failed = self._failed(row, last.error or "no valid output", model, kind, phash, last.raw, attempts, tokens)
            return failed.model_copy(
                update={
                    "invalid_samples": len(results),
                    "sample_errors": sample_errors,
                    "answered_at": answered_at,
                    **usage,
                }
            )
        agg = self.task.aggregate(good, len(results))
        return AnnotationRecord(
            id=row.id or "",
            text=row.text,
            task=self.cfg.task.type,
            status="ok",
            output=agg.output,
            label=agg.label,
            labels=agg.labels,
            confidence=agg.confidence,
            votes=agg.votes,
            samples=len(good),
            invalid_samples=len(sample_errors),
            sample_errors=sample_errors,
            attempts=attempts,
            tokens=tokens,
            answered_at=answered_at,
            model=model,
            prompt_hash=phash,
            **usage,
        )

    # -- the run -------------------------------------------------------------------------------------
    async def run(self) -> RunManifest:
        """Annotate every row; persist as results arrive; write annotations.jsonl and run.json at the end.

        Holds the run directory's lock throughout; checks the input (ids, template) before any teacher call and
        the written outputs before returning (see :mod:`annotator.rundir`).
        """
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        check_run_outputs(
            self.out_dir,
            {
                "input file": self.cfg.input.path,
                "prompt template": self.cfg.prompt.template,
                "pipeline file": self.cfg.source_path,
            },
        )
        with RunDirLock(self.out_dir):
            self.stats.rows_total = count_rows(self.cfg.input)  # honours input.limit
            if self.only_rows is not None:
                self.stats.rows_total = sum(1 for i in self.only_rows if i < self.stats.rows_total)
            check_ids(self.cfg.input)
            self.preview()  # fail fast on a template error before any teacher call
            store = ResultStore(self.out_dir / CACHE_FILE)
            try:
                bind_run_dir(store, self.cfg.binding(), self.cfg.source_path)
                backend = self._backend or build_backend(self.cfg.teacher)
                try:
                    store.start_run()
                    self.budget.spent_before = store.spent()
                    await self._annotate(backend, store)
                finally:
                    if self._backend is None:
                        await backend.aclose()
                manifest = self._manifest(backend, started_at)
                write_run_outputs(self.out_dir, store, manifest, partial=cut_by_limit(self.cfg.input))
                verify_outputs(self.out_dir, store)
            finally:
                store.close()
        return manifest

    async def _annotate(self, backend: Backend, store: ResultStore) -> None:
        """Stream the rows through the teacher; each finished record goes to the store's result log."""
        lane = _Lane(backend, asyncio.Semaphore(backend.max_concurrency), store)
        # rows in flight: enough to keep the teacher busy; few enough that one row's samples run back to back
        # (llama.cpp reuses the KV cache of a shared prompt prefix)
        flight = _InFlight(max(2, backend.max_concurrency * 2))

        async def process(row: InputRow) -> None:
            try:
                record = await _no_plugin_exit(self._row(lane, row))
            finally:
                flight.release()
            store.put_result(row.index, record.id, record.model_dump_json())
            self._count(record)

        try:
            if self.cfg.teacher.capabilities().batch:
                await self._fill_from_batches(backend, store)
            for row in self.rows():
                if not await flight.start(partial(process, row)):
                    break
            await flight.finish()
        finally:
            flight.cancel()

    async def _fill_from_batches(self, backend: Backend, store: ResultStore) -> None:
        """teacher.mode batch: get every uncached sample through the Batch API into the store first (the pass over
        the rows then reads them from the cache); see :mod:`annotator.batch`."""
        from annotator.batch import BatchBackend, BatchRun

        if not isinstance(backend, BatchBackend):
            raise ConfigError(
                f"teacher.mode: batch needs the openai backend on this machine (not {backend.name}; "
                "the Batch API does not run on Ray: drop --ray / teacher.ray)"
            )
        await BatchRun(self, backend, store, self.on_batch).run()

    def _count(self, record: AnnotationRecord) -> None:
        self.stats.count(record)
        if self.on_row:
            self.on_row(record, self.stats)

    def _manifest(self, backend: Backend, started_at: str) -> RunManifest:
        labels, multi_label = self.task.manifest_labels()
        manifest = RunManifest(
            pipeline_name=self.cfg.name,
            pipeline_path=str(self.cfg.source_path or ""),
            config=redact_data(self.cfg.model_dump(mode="json")),
            task=self.cfg.task.type,
            labels=labels,
            multi_label=multi_label,
            template_path=self.template.name,
            template_sha256=self.template.sha256,
            backend=backend.name,
            model=backend.model_id,
            **self.stats.model_dump(include=set(RunCounts.model_fields)) | {"rows_total": self.stats.rows_done},
            cost_total_usd=self.budget.spent if self.budget.price else None,
            started_at=started_at,
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            annotator_version=annotator.__version__,
            overrides=redact_data(self.cfg.overrides),
            retry_failed=self.retry_failed,
            env_vars=self.cfg.env_vars,
            answers=self.answers.provenance(),
        )
        manifest.history = [*earlier_invocations(self.out_dir), manifest.invocation()]
        return manifest


async def _no_plugin_exit(work: Awaitable[_T]) -> _T:
    """``await work``, with a task plugin's ``sys.exit()`` turned into this run's error (in a task, a SystemExit
    would leave the event loop at once, the run's cleanup undone)."""
    try:
        return await work
    except SystemExit as exc:
        raise foreign_exit(exc) or exc from None


_USAGE_FIELDS = {"prompt_tokens", "cached_tokens", "completion_tokens", "cost"}


def _row_usage(results: list[SampleResult]) -> dict[str, Any]:
    """A row's tokens by kind and cost (None when no sample has a cost), summed over its samples."""
    costs = [r.cost for r in results if r.cost is not None]
    return {
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "cached_tokens": sum(r.cached_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "cost": sum(costs) if costs else None,
    }
