"""Where retries happen: every retry policy of a teacher call lives in this module.

Two bounded loops, one inside the other:

* **Transport retries** (:class:`TransportRetry`, used by the openai backend): one teacher call is up to
  ``teacher.max_retries + 1`` HTTP requests. 429, 408/409/425, 5xx, timeouts, dropped connections and bodies that
  are not JSON are retried with exponential backoff and jitter, or after the server's ``Retry-After`` (capped at
  ``teacher.max_backoff``). Other 4xx are not retried. A call that still fails raises
  :class:`~annotator.errors.BackendError` and is recorded as a transport failure (never cached).
* **Validation retries** (:class:`ValidationPolicy`, used by the engine): one sample is up to
  ``validation.max_attempts`` teacher calls until an answer passes the schema and the task's checks
  (:class:`AnswerValidator`), and stops early once the row has used ``validation.max_tokens_per_row`` tokens.
  ``validation.on_invalid`` says what the next call sends: ``resample`` (the same prompt, warmer and with another
  seed) or ``reask`` (the conversation so far plus the invalid answer and a user message stating the validation
  error, as instructor does). Every attempt's tokens and cost count.

The Batch API (:mod:`annotator.batch`) asks again under the same policy: :meth:`ValidationPolicy.another_try` says
whether a sample gets another try, :meth:`ValidationPolicy.request` what it sends (resample only).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from annotator.backends.base import Generation, GenerationRequest
from annotator.bounds import server_wait
from annotator.cache import SampleResult
from annotator.errors import BackendError
from annotator.inputs import InputRow
from annotator.records import cap_raw
from annotator.redact import redact
from annotator.schemas import extract_json

if TYPE_CHECKING:
    from annotator.tasks.base import Task

log = logging.getLogger(__name__)

# -- transport retries -----------------------------------------------------------------------------------------
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class RequestTimeout(Exception):
    """The whole request (connect, send, wait, read the body) took longer than ``teacher.timeout``."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failed HTTP request is worth sending again."""
    import httpx  # here, not at the top: the openai SDK takes a second to import and only its backend needs it
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, RequestTimeout)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    # a body that is not JSON (e.g. a proxy's HTML error page with status 200) is transient too
    return isinstance(exc, (httpx.TransportError, openai.APIResponseValidationError, json.JSONDecodeError))


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` / ``retry-after-ms``), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


class RetryAfterOrBackoff:
    """tenacity wait: the server's Retry-After when given, else exponential backoff with jitter; at most
    ``max_backoff`` seconds either way."""

    def __init__(self, max_backoff: float, warned: set[str] | None = None):
        self.max_backoff = max_backoff
        self.warned = set() if warned is None else warned
        self.backoff = wait_exponential_jitter(multiplier=0.5, max=max_backoff, jitter=0.5)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = server_wait(
            retry_after_seconds(exc), "Retry-After", self.max_backoff, "teacher.max_backoff", self.warned
        )
        if hinted is not None:
            return hinted
        return self.backoff(state)


def _log_retry(state: RetryCallState) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        return
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.debug(
        "teacher request %d failed (%s: %s); retrying in %.2fs",
        state.attempt_number,
        type(exc).__name__,
        redact(str(exc)),
        wait,
    )


@dataclass(frozen=True)
class TransportRetry:
    """How one teacher call retries failed HTTP requests (``teacher.max_retries``, ``teacher.max_backoff``)."""

    max_retries: int
    max_backoff: float
    warned: set[str] = field(default_factory=set, compare=False)  # Retry-After waits already reported as capped

    def attempts(self) -> AsyncRetrying:
        """A fresh tenacity loop for one call (``async for attempt in ...: with attempt: ...``); the last error
        is re-raised once the retries are spent."""
        return AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=RetryAfterOrBackoff(self.max_backoff, self.warned),
            before_sleep=_log_retry,
            reraise=True,
        )


# -- validation -------------------------------------------------------------------------------------------------
OnInvalid = Literal["resample", "reask"]
"""``validation.on_invalid``: how an invalid answer is asked again."""


class ValidationConfig(BaseModel):
    """The ``validation:`` section of a pipeline: how invalid answers are retried, and when a run gives up."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=20, description="Tries per sample when output is invalid.")
    max_tokens_per_row: int | None = Field(
        default=None, gt=0, description="Stop retrying a row once it has used this many tokens."
    )
    on_invalid: OnInvalid = Field(
        default="resample",
        description="What the next try of an invalid answer sends: 'resample' = the same prompt again (warmer, "
        "another seed); 'reask' = the conversation plus the invalid answer and the validation error, "
        "so the teacher can correct it (more prompt tokens per try; see annotator/retry.py).",
    )
    max_consecutive_transport_failures: int = Field(
        default=20,
        ge=1,
        description="Circuit breaker: stop the run (exit 5) after this many teacher calls in a row failed for good "
        "(connection, timeout, 5xx after retries). Nothing is lost: a rerun resumes.",
    )
    max_failed_fraction: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="The run exits 4 (outputs still written) when more than this share of rows failed; 1.0 = never.",
    )


class AnswerValidator:
    """Checks one teacher answer: complete (not cut at ``max_tokens``), JSON, the task's output model, the
    task's own checks (:meth:`annotator.tasks.base.Task.check`)."""

    def __init__(self, task: Task, max_tokens: int):
        self.task = task
        self.max_tokens = max_tokens

    def check(self, result: SampleResult, gen: Generation, row: InputRow) -> SampleResult:
        """``result`` turned ok with the parsed output, or with the raw text and why the answer is invalid (its
        usage must already be charged)."""
        result.raw = redact(cap_raw(gen.text))
        if gen.finish_reason == "length":
            result.error = f"output truncated (finish_reason=length at max_tokens={self.max_tokens})"
            return result
        try:
            parsed: BaseModel = self.task.output_model.model_validate(extract_json(gen.text))
            self.task.check(parsed, row)
        except ValidationError as exc:
            result.error = "schema violation: " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]
            )
            return result
        except ValueError as exc:
            result.error = f"invalid output: {exc}"
            return result
        return result.model_copy(
            update={"ok": True, "output": parsed.model_dump(mode="json"), "raw": None, "error": None}
        )


REASK_MESSAGE = "Your answer was invalid: {error}. Answer again with the corrected JSON only."
"""The user message of a re-ask (after the invalid answer, as the assistant's message)."""


@dataclass
class RowBudget:
    """Tokens a row's samples have used, against ``validation.max_tokens_per_row`` (shared by the samples)."""

    limit: int | None
    tokens: int = 0
    row_id: str | None = None  # for the log lines

    def exhausted(self) -> bool:
        return self.limit is not None and self.tokens >= self.limit


TeacherCall = Callable[[GenerationRequest, SampleResult], Awaitable[Generation]]
"""One teacher call that charges its usage to the sample (raises BackendError after transport retries)."""
AnswerCheck = Callable[[SampleResult, Generation], SampleResult]


@dataclass(frozen=True)
class ValidationPolicy:
    """How a sample is asked again when its answer is invalid (``validation.*``)."""

    max_attempts: int
    max_tokens_per_row: int | None
    on_invalid: OnInvalid

    @classmethod
    def from_config(cls, cfg: ValidationConfig) -> ValidationPolicy:
        return cls(cfg.max_attempts, cfg.max_tokens_per_row, cfg.on_invalid)

    def another_try(self, attempts: int) -> bool:
        """Whether a sample whose ``attempts`` tries so far gave no valid answer is asked again (online here, in a
        follow-up batch by :mod:`annotator.batch`)."""
        return attempts < self.max_attempts

    def request(
        self,
        first: GenerationRequest,
        attempt: int,
        feedback: list[dict[str, str]] | None = None,
    ) -> GenerationRequest:
        """Try ``attempt`` (0-based) of a sample whose first try is ``first``.

        resample: the same messages; a retry at temperature 0 would repeat the invalid answer, so it is warmed to
        0.7 at least and gets another seed. reask: the messages plus ``feedback`` (each invalid answer and its
        error so far), same temperature and seed.
        """
        if attempt == 0:
            return first
        if self.on_invalid == "reask":
            return first.model_copy(update={"messages": [*first.messages, *(feedback or [])]})
        seed = (first.seed or 0) + 7919 * attempt
        return first.model_copy(update={"temperature": max(first.temperature, 0.7), "seed": seed})

    def feedback(self, gen: Generation, error: str) -> list[dict[str, str]]:
        """What a re-ask adds to the conversation after the invalid answer ``gen``."""
        return [
            {"role": "assistant", "content": cap_raw(gen.text)},
            {"role": "user", "content": REASK_MESSAGE.format(error=error)},
        ]

    async def ask(
        self, first: GenerationRequest, call: TeacherCall, check: AnswerCheck, budget: RowBudget, result: SampleResult
    ) -> SampleResult:
        """Ask until an answer is valid, ``max_attempts`` are used or the row's token budget is spent.

        ``result`` carries usage from before (``--retry-failed``); every attempt's usage is added to it by
        ``call``. A transport failure ends the sample with ``transport=True`` (the caller does not cache it).
        """
        feedback: list[dict[str, str]] = []
        attempt = 0
        while self.another_try(attempt):
            if budget.exhausted():
                result.error = (
                    f"token budget exhausted ({budget.tokens} >= {budget.limit} tokens); last error: {result.error}"
                )
                break
            try:
                gen = await call(self.request(first, attempt, feedback), result)
            except BackendError as exc:
                result.error = f"teacher call failed: {exc}"
                result.attempts = attempt + 1
                result.transport = True
                result.created = time.time()
                return result
            result.attempts = attempt + 1
            budget.tokens += gen.tokens
            result = check(result, gen)
            if result.ok:
                break
            if self.on_invalid == "reask":
                feedback += self.feedback(gen, result.error or "no valid output")
            log.debug("row %s: attempt %d/%d invalid (%s)", budget.row_id, attempt + 1, self.max_attempts, result.error)
            attempt += 1
        return result
