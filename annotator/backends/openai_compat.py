"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM serve, llama.cpp server, ...).

Failed requests (429, 5xx, timeouts, dropped connections) are retried under the transport policy of
:mod:`annotator.retry` (:class:`~annotator.retry.TransportRetry`: tenacity, exponential backoff, the server's
``Retry-After``, ``teacher.max_retries`` at most). Every attempt first passes the
:class:`~annotator.backends.rate_limit.RateLimiter` (``teacher.rpm``/``tpm`` and the server's ``x-ratelimit-*``
headers), so 429s stay rare.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import openai

from annotator.backends.base import Generation, GenerationRequest
from annotator.backends.openai_config import OpenAITeacherConfig
from annotator.backends.rate_limit import RateLimiter
from annotator.bounds import token_count
from annotator.costs import estimate_prompt_tokens
from annotator.errors import AnnotatorError, BackendError
from annotator.redact import redact, register_secret
from annotator.retry import RequestTimeout, TransportRetry

# Connections per httpx pool. httpcore's pool does O(pool size) bookkeeping on every request, so one pool of
# 256 connections costs ~3x the client CPU per request of 16 pools of 16 (see bench/bench_pipeline.py).
POOL_SIZE = 16
_FATAL_STATUS = {401, 403, 404}


def _describe(exc: BaseException) -> str:
    """One line about a failed request, with secrets redacted (a server may echo the API key)."""
    return redact(_describe_raw(exc))


def _describe_raw(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, RequestTimeout):
        return f"request timed out ({exc})"
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection error: {exc.__cause__ or exc}"
    if isinstance(exc, json.JSONDecodeError):
        return f"response body is not JSON ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _split_query(url: str | None) -> tuple[str | None, dict[str, str] | None]:
    """``base_url`` without its query string, and the query's parameters (the SDK would append paths after it)."""
    if not url or "?" not in url:
        return url, None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment)), dict(parse_qsl(parts.query))


def refused(exc: openai.APIStatusError) -> AnnotatorError:
    """The one answer to a 401/403/404 from the teacher's endpoint, whichever path made the call (online, Batch API,
    a Ray worker): the run stops, naming what to check."""
    return AnnotatorError(f"teacher endpoint refused the request ({_describe(exc)}); check model/key/URL")


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is an HTTP status that no retry will change (401, 403, 404)."""
    return isinstance(exc, openai.APIStatusError) and exc.status_code in _FATAL_STATUS


def _ssl_context() -> ssl.SSLContext:
    """One verifying context shared by all pools (building one costs ~80 ms)."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover
        return ssl.create_default_context()


class OpenAICompatBackend:
    """Async clients whose connection pools add up to the concurrency limit (``POOL_SIZE`` connections each;
    a request goes to the pool with the most free connections)."""

    name = "openai"

    def __init__(self, cfg: OpenAITeacherConfig):
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
        register_secret(key)
        self.cfg = cfg
        self.model_id = f"openai:{redact(cfg.base_url or 'api.openai.com')}:{redact(cfg.model)}"  # no secret in it
        self.structured_mode: str = cfg.structured_output
        self.max_concurrency = cfg.concurrency
        ctx = _ssl_context()
        base_url, query = _split_query(cfg.base_url)
        self._clients: list[openai.AsyncOpenAI] = []
        self._free: list[int] = []  # free connections per pool
        for start in range(0, cfg.concurrency, POOL_SIZE):
            size = min(POOL_SIZE, cfg.concurrency - start)
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            self._clients.append(
                openai.AsyncOpenAI(
                    api_key=key,
                    base_url=base_url,
                    default_query=query,  # a gateway's ?api-key=... goes on every request, not into the path
                    max_retries=0,  # retries are ours (tenacity), so they are bounded and observable
                    timeout=cfg.timeout,
                    # recent openai releases type this client against httpx2, whose pools read only httpx.Limits' fields
                    http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=cfg.timeout, verify=ctx),  # type: ignore[arg-type]
                )
            )
            self._free.append(size)
        self.client = self._clients[0]  # the Batch API's files and batches (annotator.batch)
        self.transport_retry = TransportRetry(cfg.max_retries, cfg.max_backoff)
        self.limiter = RateLimiter(cfg.rpm, cfg.tpm, max_wait=cfg.max_backoff)

    def _response_format(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None or self.cfg.structured_output == "none":
            return None
        if self.cfg.structured_output == "json_object":  # llama.cpp server style
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "annotation", "strict": True, "schema": schema}}

    def request_body(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions`` for ``request`` (also a Batch API line's body)."""
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        fmt = self._response_format(request.json_schema)
        if fmt is not None:
            body["response_format"] = fmt
        return body

    async def generate(self, request: GenerationRequest) -> Generation:
        kwargs = self.request_body(request)
        # what providers count against the token limit before answering: the prompt plus max_tokens
        estimate = estimate_prompt_tokens(request.messages) + request.max_tokens
        try:
            async for attempt in self.transport_retry.attempts():
                with attempt:
                    await self.limiter.acquire(estimate)
                    data = await self._post(kwargs, estimate)
        except openai.APIStatusError as exc:
            if exc.status_code in _FATAL_STATUS:
                raise refused(exc) from None
            raise BackendError(_describe(exc)) from None
        except (openai.APIError, httpx.HTTPError, ValueError, RequestTimeout) as exc:
            raise BackendError(_describe(exc)) from None
        generation = parse_completion(data)
        self.limiter.correct(estimate, generation.tokens)
        return generation

    async def _post(self, body: dict[str, Any], estimate: int) -> Any:
        """One POST /chat/completions on the pool with the most free connections; the parsed JSON answer.
        The rate limiter sees the response's (or the error's) ``x-ratelimit-*`` headers."""
        i = max(range(len(self._free)), key=self._free.__getitem__)
        self._free[i] -= 1
        try:
            # The SDK's raw POST: same transport, status errors and timeouts as chat.completions.create, without
            # its per-request deep transform of the params (the schema) and response-model construction: about a
            # third of the client CPU per request.
            response = await _bounded(
                self._clients[i].post("/chat/completions", body=body, cast_to=httpx.Response), self.cfg.timeout
            )
        except openai.APIStatusError as exc:
            self.limiter.observe(exc.response.headers, estimate)
            raise
        finally:
            self._free[i] += 1
        self.limiter.observe(response.headers, estimate)
        return json.loads(response.content)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()


async def _bounded(request: Awaitable[httpx.Response], timeout: float) -> httpx.Response:
    """``request`` cancelled after ``timeout`` seconds in all. httpx's timeout bounds each read, so a server
    trickling a byte at a time would otherwise keep a request alive for as long as it likes."""
    try:
        return await asyncio.wait_for(request, timeout)
    except asyncio.TimeoutError:
        raise RequestTimeout(f"no complete answer within teacher.timeout={timeout:g}s") from None


def parse_completion(data: Any) -> Generation:
    """A chat completion (parsed JSON) as a :class:`Generation`; anything else is a :class:`BackendError`."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices:
        raise BackendError("response has no choices")
    try:
        choice = choices[0]
        message = choice.get("message") or {}
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return Generation(
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=token_count(usage.get("prompt_tokens"), "usage.prompt_tokens"),
            cached_tokens=token_count(details.get("cached_tokens"), "usage.prompt_tokens_details.cached_tokens"),
            completion_tokens=token_count(usage.get("completion_tokens"), "usage.completion_tokens"),
        )
    except (AttributeError, TypeError, ValueError) as exc:  # JSON, but not a chat completion
        raise BackendError(f"malformed chat completion response: {type(exc).__name__}: {exc}") from None
