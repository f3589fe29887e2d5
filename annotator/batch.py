"""The provider's Batch API (``teacher.mode: batch``, openai backend): the same answers, cheaper, within a day.

Before the engine's usual pass over the rows, :class:`BatchRun` fills the cache:

1. every sample that has no cached answer becomes one request line (``custom_id`` = sample key and attempt);
2. the lines are split into input files within ``teacher.batch_max_requests`` and ``teacher.batch_max_bytes``,
   uploaded (``files.create(purpose="batch")``) and a batch is created for each (``/v1/chat/completions``);
   the file id and its requests are committed to ``cache.sqlite`` before the batch is created and the batch id
   right after, so a rerun after Ctrl-C or ``kill -9`` re-attaches to the batches already submitted (a file
   uploaded but not yet known as a batch is looked up in ``batches.list()`` before a new batch is created);
3. the batches are polled every ``teacher.batch_poll_interval`` seconds (the run's progress bar shows requests
   done / submitted); output and error files are downloaded and every answer is validated like an online one
   (:meth:`annotator.retry.AnswerValidator.check`);
4. invalid answers, failed requests and the requests of expired, cancelled or failed batches go into a follow-up
   batch, up to ``validation.max_attempts`` tries per sample; then the sample is stored as failed (see
   ``--retry-failed``).

The engine's pass then finds every sample in the cache and writes the records as usual.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

import openai

from annotator.backends.base import Backend, Generation, GenerationRequest
from annotator.backends.openai_compat import is_refusal, parse_completion, refused
from annotator.backends.openai_config import OpenAITeacherConfig
from annotator.cache import ResultStore, SampleResult
from annotator.config import PipelineConfig
from annotator.costs import Budget, estimate_prompt_tokens
from annotator.errors import AnnotatorError, BackendError, BudgetReached
from annotator.inputs import InputRow
from annotator.records import RunCounts
from annotator.redact import redact
from annotator.retry import AnswerValidator, ValidationPolicy

log = logging.getLogger(__name__)

ENDPOINT: Final = "/v1/chat/completions"
_TERMINAL = {"completed", "failed", "expired", "cancelled"}

BatchProgress = Callable[[int, int, str], None]
"""``(requests done, requests submitted, status line)``."""


@runtime_checkable
class BatchBackend(Backend, Protocol):
    """A backend that can take Batch API jobs (the openai backend): its SDK client, its settings and the JSON body of
    a request. The engine asks ``isinstance(backend, BatchBackend)`` (what it can do), never which class it is."""

    cfg: OpenAITeacherConfig
    client: openai.AsyncOpenAI

    def request_body(self, request: GenerationRequest) -> dict[str, Any]: ...


class SampleSource(Protocol):
    """What a batch run needs from the engine (:class:`annotator.engine.Pipeline` is one): the rows and their
    prompts, the cache keys and requests of their samples, the budget, and the validation policy that decides, for
    online and batch answers alike, what is valid and how often a sample is asked."""

    @property
    def cfg(self) -> PipelineConfig: ...
    @property
    def retry_failed(self) -> bool: ...
    @property
    def budget(self) -> Budget: ...
    @property
    def stats(self) -> RunCounts: ...
    @property
    def policy(self) -> ValidationPolicy: ...
    @property
    def validator(self) -> AnswerValidator: ...

    def rows(self) -> Iterator[InputRow]: ...
    def prompt_of(self, row: InputRow) -> list[dict[str, str]] | str: ...
    def sample_key(self, backend: Backend, messages: list[dict[str, str]], k: int) -> str: ...
    def request(self, messages: list[dict[str, str]], k: int, attempt: int) -> GenerationRequest: ...
    def charge(self, result: SampleResult, gen: Generation) -> float | None: ...


@dataclass
class _Item:
    """One sample to get from the Batch API."""

    key: str
    row: InputRow
    messages: list[dict[str, str]]
    k: int
    attempt: int = 0
    result: SampleResult = field(default_factory=lambda: SampleResult(ok=False))

    @property
    def custom_id(self) -> str:
        return f"{self.key}:{self.attempt}"


class BatchOutput:
    """A batch's output and error files, read line by line: a line that is not a JSON object with a custom_id is
    unreadable (kept as a reason, never a crash), the others are grouped by custom_id."""

    def __init__(self) -> None:
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.unreadable: list[str] = []

    def read(self, text: str, file_id: str) -> None:
        for n, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError as exc:
                self.unreadable.append(f"{file_id} line {n}: not JSON ({exc.__class__.__name__}: {exc})")
                continue
            cid = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(cid, str) or not cid:
                self.unreadable.append(f"{file_id} line {n}: not a batch answer (no custom_id)")
                continue
            self.answers.setdefault(cid, []).append(line)


class BatchRun:
    """Gets every uncached sample of a pipeline through the Batch API into the store."""

    def __init__(
        self,
        pipeline: SampleSource,
        backend: BatchBackend,
        store: ResultStore,
        on_progress: BatchProgress | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.backend = backend
        self.client = backend.client
        self.store = store
        self.cfg = backend.cfg
        self.on_progress = on_progress
        self.items: dict[str, _Item] = {}
        self.open: dict[str, str | None] = {}  # file_id -> batch_id of batches not processed yet
        self.counts: dict[str, tuple[int, int]] = {}  # batch_id -> (done, total) at the last poll
        self.reserved: dict[str, float] = {}  # file_id -> budget booked for its batch

    async def run(self) -> None:
        self.items = {it.key: it for it in self._collect()}
        self._reattach()
        stopped: BudgetReached | None = None
        while True:
            if stopped is None:
                in_flight = self._in_flight()
                try:
                    for chunk in self._chunks([it for it in self.items.values() if it.custom_id not in in_flight]):
                        await self._submit(chunk)
                except BudgetReached as exc:  # submit nothing more; collect what is already paid for
                    stopped = exc
            if not self.open:
                if stopped is not None:
                    raise stopped
                return
            await self._wait_for_one()

    # -- what to ask -----------------------------------------------------------------------------------
    def _collect(self) -> Iterator[_Item]:
        p = self.pipeline
        for row in p.rows():
            messages = p.prompt_of(row)
            if isinstance(messages, str):
                continue  # recorded as failed by the engine without a call
            for k in range(self.cfg.samples):
                key = p.sample_key(self.backend, messages, k)
                cached = self.store.get_sample(key)
                if cached is not None and (cached.ok or not p.retry_failed):
                    continue
                yield _Item(key, row, messages, k)

    def _reattach(self) -> None:
        """Pick up the batches an earlier (interrupted) run submitted; their requests are not sent again."""
        self.open = dict(self.store.open_batches())
        if not self.open:
            return
        for custom_id in self.store.open_batch_items():
            key, _, attempt = custom_id.rpartition(":")
            if key in self.items:
                self.items[key].attempt = int(attempt)
        log.warning(
            "re-attaching to %d batch(es) submitted by an earlier run: %s",
            len(self.open),
            ", ".join(b or f"(file {f})" for f, b in self.open.items()),
        )

    def _in_flight(self) -> set[str]:
        return set(self.store.open_batch_items()) if self.open else set()

    def _line(self, item: _Item) -> bytes:
        body = self.backend.request_body(self.pipeline.request(item.messages, item.k, item.attempt))
        line = {"custom_id": item.custom_id, "method": "POST", "url": ENDPOINT, "body": body}
        return json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n"

    def _chunks(self, items: list[_Item]) -> Iterator[tuple[list[_Item], bytes]]:
        """Input files within the per-batch limits of requests and bytes."""
        chunk: list[_Item] = []
        data = bytearray()
        for item in items:
            line = self._line(item)
            if len(line) > self.cfg.batch_max_bytes:
                raise AnnotatorError(
                    f"one Batch API request is {len(line):,} bytes, more than "
                    f"teacher.batch_max_bytes={self.cfg.batch_max_bytes:,}; raise it"
                )
            if chunk and (
                len(chunk) >= self.cfg.batch_max_requests or len(data) + len(line) > self.cfg.batch_max_bytes
            ):
                yield chunk, bytes(data)
                chunk, data = [], bytearray()
            chunk.append(item)
            data += line
        if chunk:
            yield chunk, bytes(data)

    # -- submit ----------------------------------------------------------------------------------------
    async def _submit(self, chunk: tuple[list[_Item], bytes]) -> None:
        items, data = chunk
        budget = self.pipeline.budget
        estimate = sum(budget.estimate(estimate_prompt_tokens(it.messages), self.cfg.max_tokens) for it in items)
        budget.reserve(estimate)  # raises BudgetReached before anything is uploaded
        uploaded = await self._api(self.client.files.create(file=("annotator-batch.jsonl", data), purpose="batch"))
        self.reserved[uploaded.id] = estimate  # released when the batch is processed (answers charge as they come)
        self.store.add_batch_file(uploaded.id, [it.custom_id for it in items])
        self.open[uploaded.id] = None
        await self._create(uploaded.id)
        log.info("submitted batch %s: %d requests, %d bytes", self.open[uploaded.id], len(items), len(data))

    async def _create(self, file_id: str) -> None:
        batch = await self._api(
            self.client.batches.create(
                input_file_id=file_id,
                endpoint=ENDPOINT,
                completion_window=self.cfg.batch_completion_window,  # type: ignore[arg-type]
                metadata={"annotator_pipeline": self.pipeline.cfg.name},
            )
        )
        self.store.set_batch_id(file_id, batch.id)
        self.open[file_id] = batch.id

    async def _find_batch(self, file_id: str) -> None:
        """A file uploaded by an interrupted run: the batch it may have created, else a new one."""
        async for batch in self.client.batches.list(limit=100):
            if batch.input_file_id == file_id:
                self.store.set_batch_id(file_id, batch.id)
                self.open[file_id] = batch.id
                return
        await self._create(file_id)

    # -- wait and collect ------------------------------------------------------------------------------
    async def _wait_for_one(self) -> None:
        """Poll the open batches until at least one has ended; process those that have."""
        while True:
            ended = []
            for file_id, batch_id in list(self.open.items()):
                if batch_id is None:
                    await self._find_batch(file_id)
                    batch_id = self.open[file_id]
                batch = await self._api(self.client.batches.retrieve(batch_id))  # type: ignore[arg-type]
                rc = batch.request_counts
                self.counts[batch.id] = (rc.completed + rc.failed, rc.total) if rc else (0, 0)
                if batch.status in _TERMINAL:
                    ended.append((file_id, batch))
            self._report()
            if ended:
                for file_id, batch in ended:
                    await self._process(file_id, batch)
                return
            await asyncio.sleep(self.cfg.batch_poll_interval)

    def _report(self) -> None:
        if self.on_progress is not None:
            done = sum(d for d, _ in self.counts.values())
            total = sum(t for _, t in self.counts.values())
            ids = [b for b in self.open.values() if b]
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            self.on_progress(done, total, f"{len(self.open)} batch(es) open: {shown}")

    async def _process(self, file_id: str, batch: Any) -> None:
        output = BatchOutput()
        for fid in (batch.output_file_id, batch.error_file_id):
            if fid:
                content = await self._api(self.client.files.content(fid))
                output.read(content.text, fid)
        for cid, lines in output.answers.items():
            self._answer(cid, lines, batch.id)
        if output.unreadable:
            log.warning(
                "batch %s: %d line(s) of its output could not be read (%s); their requests count as failed tries",
                batch.id,
                len(output.unreadable),
                "; ".join(output.unreadable[:3]),
            )
        missing = [
            cid for cid, f in self.store.open_batch_items().items() if f == file_id and cid not in output.answers
        ]
        if batch.status != "completed":
            errors = "; ".join(e.message or "" for e in (batch.errors.data or [])) if batch.errors else ""
            log.warning(
                "batch %s %s%s: %d of its requests answered; the other %d are submitted again while they "
                "have tries left (validation.max_attempts)",
                batch.id,
                batch.status,
                f" ({errors})" if errors else "",
                len(output.answers),
                len(missing),
            )
        why = (
            f"no readable answer in batch {batch.id}'s output ({len(output.unreadable)} unreadable line(s), e.g. "
            f"{output.unreadable[0]})"
            if output.unreadable
            else f"batch {batch.id} {batch.status} before answering"
        )
        for cid in missing:
            self._retry_or_fail(cid, why)
        self.store.finish_batch(file_id)
        self.pipeline.budget.settle(self.reserved.pop(file_id, 0.0), None)
        del self.open[file_id]
        self.counts.pop(batch.id, None)

    def _answer(self, cid: str, lines: list[dict[str, Any]], batch_id: str) -> None:
        """Validate the answer to one request. Several lines for one custom_id: a repeated line is one answer;
        different answers are each charged, and the conflict fails the try."""
        lines = list({json.dumps(line, sort_keys=True): line for line in lines}.values())
        results = [self._generation(line) for line in lines]
        item = self._item(cid)
        p = self.pipeline
        for gen in results:
            if isinstance(gen, Generation) and item is not None:
                p.stats.teacher_calls += 1
                p.budget.settle(0.0, p.charge(item.result, gen))
        if len(lines) > 1:
            log.warning(
                "batch %s answered custom_id %s %d times, differently: a conflict, none of them is used",
                batch_id,
                cid,
                len(lines),
            )
            self._retry_or_fail(
                cid, f"batch {batch_id} returned {len(lines)} different answers for this request (conflict: none used)"
            )
            return
        gen = results[0]
        if isinstance(gen, str):
            self._retry_or_fail(cid, gen)
            return
        if item is None:
            return
        item.result.attempts = item.attempt + 1
        item.result = p.validator.check(item.result, gen, item.row)
        if item.result.ok:
            self._store(item)
        else:
            self._retry_or_fail(cid, item.result.error or "no valid output")

    @staticmethod
    def _generation(line: dict[str, Any]) -> Generation | str:
        """One output/error line's answer, or why it has none."""
        raw = line.get("response")
        response: dict[str, Any] = raw if isinstance(raw, dict) else {}
        status = response.get("status_code")
        if status != 200:
            body = response.get("body")
            err = line.get("error") or (body.get("error") if isinstance(body, dict) else body) or {}
            return f"teacher call failed: HTTP {status}: {err.get('message', err) if isinstance(err, dict) else err}"
        try:
            return parse_completion(response.get("body"))
        except BackendError as exc:
            return f"teacher call failed: {exc}"

    def _item(self, cid: str) -> _Item | None:
        key, _, attempt = cid.rpartition(":")
        item = self.items.get(key)
        return item if item is not None and str(item.attempt) == attempt else None

    def _retry_or_fail(self, cid: str, error: str) -> None:
        item = self._item(cid)
        if item is None:
            return
        item.result.error = error
        item.result.attempts = item.attempt + 1
        if self.pipeline.policy.another_try(item.result.attempts):
            item.attempt += 1  # a follow-up batch asks again, with the engine's retry parameters
        else:
            self._store(item)

    def _store(self, item: _Item) -> None:
        self.store.put_sample(item.key, item.result)
        del self.items[item.key]

    @staticmethod
    async def _api(call: Any) -> Any:
        """An SDK call; API errors become one clear line (the batches stay recorded for a rerun)."""
        try:
            return await call
        except openai.APIError as exc:
            if isinstance(exc, openai.APIStatusError) and is_refusal(exc):
                raise refused(exc) from None  # the answer an online call gets for the same fault
            raise AnnotatorError(
                f"Batch API call failed ({redact(str(exc))}); the batches submitted so far are "
                "recorded in cache.sqlite: run the same command again to re-attach to them"
            ) from None
