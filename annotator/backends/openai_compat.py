"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM serve, llama.cpp server, ...).

This is where the OpenAI retry happens: :func:`_retrying` (tenacity) retries 429, 5xx, timeouts and dropped
connections with exponential backoff, honouring a server's ``Retry-After`` header, a bounded number of times.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from annotator.backends.base import Generation, GenerationRequest
from annotator.config import TeacherConfig
from annotator.errors import AnnotatorError, BackendError

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_FATAL_STATUS = {401, 403, 404}


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
    return isinstance(exc, (httpx.TransportError, openai.APIResponseValidationError))


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
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            from email.utils import parsedate_to_datetime
            from datetime import datetime, timezone

            try:
                when = parsedate_to_datetime(value)
                return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
            except (TypeError, ValueError):
                return None
    return None


class _RetryAfterOrBackoff:
    """tenacity wait: the server's Retry-After when given, else exponential backoff with jitter."""

    def __init__(self, max_backoff: float):
        self.max_backoff = max_backoff
        self.backoff = wait_exponential_jitter(initial=0.5, max=max_backoff, jitter=0.5)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = retry_after_seconds(exc)
        if hinted is not None:
            return min(hinted, self.max_backoff)
        return self.backoff(state)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection error: {exc.__cause__ or exc}"
    return f"{type(exc).__name__}: {exc}"


class OpenAICompatBackend:
    """Async client with a connection pool sized to the concurrency limit."""

    name = "openai"

    def __init__(self, cfg: TeacherConfig):
        if not cfg.model:
            raise AnnotatorError("teacher.model is required for the openai backend (e.g. gpt-4o-mini)")
        key = os.environ.get(cfg.api_key_env)
        if not key:
            if cfg.base_url is None:
                raise AnnotatorError(
                    f"the openai backend needs an API key in ${cfg.api_key_env} (or set teacher.base_url "
                    "for a local OpenAI-compatible server)"
                )
            key = "no-key"
        self.cfg = cfg
        self.model_id = f"openai:{cfg.base_url or 'api.openai.com'}:{cfg.model}"
        self.structured_mode = cfg.structured_output
        self.max_concurrency = cfg.concurrency
        limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
        self.client = openai.AsyncOpenAI(
            api_key=key,
            base_url=cfg.base_url,
            max_retries=0,  # retries are ours (tenacity), so they are bounded and observable
            timeout=cfg.timeout,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=cfg.timeout),
        )
        self.retries = 0
        self._wait = _RetryAfterOrBackoff(cfg.max_backoff)

    def _response_format(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None or self.cfg.structured_output == "none":
            return None
        if self.cfg.structured_output == "json_object":  # llama.cpp server style
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "annotation", "strict": True, "schema": schema}}

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1

    async def generate(self, request: GenerationRequest) -> Generation:
        kwargs: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        fmt = self._response_format(request.json_schema)
        if fmt is not None:
            kwargs["response_format"] = fmt
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_is_retryable),
                stop=stop_after_attempt(self.cfg.max_retries + 1),
                wait=self._wait,
                before_sleep=self._count_retry,
                reraise=True,
            ):
                with attempt:
                    resp = await self.client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            if exc.status_code in _FATAL_STATUS:
                raise AnnotatorError(f"teacher endpoint refused the request ({_describe(exc)}); check model/key/URL")
            raise BackendError(_describe(exc)) from None
        except (openai.APIError, httpx.HTTPError) as exc:
            raise BackendError(_describe(exc)) from None
        if not resp.choices:
            raise BackendError("response has no choices")
        choice = resp.choices[0]
        usage = resp.usage
        return Generation(
            text=(choice.message.content if choice.message else None) or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    async def aclose(self) -> None:
        await self.client.close()
