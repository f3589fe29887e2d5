"""The embedded offline teacher: llama.cpp in-process through ``xllamacpp`` (a prebuilt wheel, no compiler).

``xllamacpp.Server`` is llama.cpp's own server (continuous batching over ``n_parallel`` slots) driven from Python:
``handle_chat_completions`` takes an OpenAI-style request and releases the GIL, so ``parallel`` worker threads keep
that many requests decoding together in one batch. Each slot keeps its last prompt in the KV cache and a request goes
to the slot with the longest common prefix, so only the part of a prompt that differs is evaluated: the task's
shared instructions once per slot, a row's text once per slot that samples it. The JSON schema is enforced by
LLGuidance (inside llama.cpp) with compact separators, so a small model cannot wander into runs of whitespace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from annotator.backends.base import BaseTeacherConfig, Generation, GenerationRequest, RayPlacement
from annotator.backends.model_files import default_gguf_path
from annotator.errors import AnnotatorError, BackendError

log = logging.getLogger(__name__)

# LLGuidance JSON options: fixed separators instead of free whitespace (see the module docstring).
COMPACT_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
DEFAULT_THREADS = 1
"""llama.cpp threads per backend. On 2 shared cores one thread used 3-5x less CPU per row than two (make bench)."""


class LocalTeacherConfig(BaseTeacherConfig):
    """``backend: local`` (the default teacher): a GGUF model in this process through llama.cpp."""

    backend: Literal["local"] = "local"
    n_ctx: int = Field(default=2048, ge=256, description="Context tokens per slot (prompt + answer).")
    n_threads: int | None = Field(default=None, ge=1, description=f"llama.cpp threads (default {DEFAULT_THREADS}).")
    parallel: int = Field(default=1, ge=1, le=64, description="Requests decoded together (llama.cpp slots, one batch).")

    def create_backend(self) -> LocalLlamaBackend:
        return LocalLlamaBackend(self)

    def ray_placement(self, resources: dict[str, float], workers: int | None) -> RayPlacement:
        """One llama.cpp per ``n_threads`` CPUs."""
        threads = self.n_threads or DEFAULT_THREADS
        inner = self.model_copy(update={"ray": None, "n_threads": threads})
        return workers or max(1, int(resources.get("CPU", 1)) // threads), {"num_cpus": threads}, inner


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """An LLGuidance grammar that accepts exactly the JSON documents valid under ``schema``, compactly spaced."""
    return "%llguidance {}\nstart: %json " + json.dumps({**schema, "x-guidance": COMPACT_JSON}, sort_keys=True)


def chat_request(req: GenerationRequest) -> dict[str, Any]:
    """The llama.cpp chat-completion body for one :class:`GenerationRequest` (also used by ``make bench``)."""
    body: dict[str, Any] = {"messages": req.messages, "temperature": req.temperature, "max_tokens": req.max_tokens}
    if req.seed is not None:
        body["seed"] = req.seed
    if req.json_schema is not None:
        body["grammar"] = json_schema_grammar(req.json_schema)
    return body


def server_params(path: Path, cfg: LocalTeacherConfig) -> Any:
    """``xllamacpp.CommonParams`` for ``cfg.parallel`` slots of ``cfg.n_ctx`` tokens each."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = cfg.parallel
    params.n_ctx = cfg.n_ctx * cfg.parallel  # llama.cpp splits the context evenly between the slots
    threads = cfg.n_threads or DEFAULT_THREADS
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = 0  # llama.cpp logs nothing; errors come back in the responses
    # The server also listens on HTTP. Keep it to an ephemeral loopback port behind a key nobody has:
    # this backend only calls it in-process.
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.api_keys = [secrets.token_hex(16)]
    return params


def parse_response(resp: dict[str, Any]) -> Generation:
    """A :class:`Generation` from a llama.cpp chat-completion response; its errors raise :class:`BackendError`."""
    if "choices" not in resp:
        err = resp.get("error", resp)
        message = err.get("message", err) if isinstance(err, dict) else err
        raise BackendError(f"llama.cpp: {message}")
    choice = resp["choices"][0]
    usage = resp.get("usage") or {}
    return Generation(
        text=choice["message"].get("content") or "",
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
    )


class LocalLlamaBackend:
    """Runs a GGUF model in this process with ``teacher.parallel`` concurrent slots."""

    name = "local"
    structured_mode = "llguidance-json-schema-compact"

    def __init__(self, cfg: LocalTeacherConfig):
        try:
            import xllamacpp
        except ImportError:  # pragma: no cover - it is a core dependency
            raise AnnotatorError("the local backend needs xllamacpp (`pip install xllamacpp`)") from None
        path = Path(cfg.model) if cfg.model else default_gguf_path()
        if not path.is_file():
            raise AnnotatorError(f"local model file not found: {path} (teacher.model must be a .gguf path)")
        try:
            self._server: Any = xllamacpp.Server(server_params(path, cfg))
        except RuntimeError:
            raise AnnotatorError(
                f"cannot load local model {path}: llama.cpp could not start with it (teacher.model must be a valid "
                f".gguf file; teacher.n_ctx={cfg.n_ctx} x teacher.parallel={cfg.parallel} must fit in memory)"
            ) from None
        self.model_id = f"gguf:{path.name}:{path.stat().st_size}"
        self.max_concurrency = cfg.parallel
        self._pool = ThreadPoolExecutor(max_workers=cfg.parallel, thread_name_prefix="llama-slot")
        log.info("local teacher %s: %d slots x %d tokens", path.name, cfg.parallel, cfg.n_ctx)

    def _generate_sync(self, req: GenerationRequest) -> Generation:
        return parse_response(self._server.handle_chat_completions(chat_request(req)))

    async def generate(self, request: GenerationRequest) -> Generation:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._generate_sync, request)

    async def aclose(self) -> None:
        """Wait for requests in flight, then stop llama.cpp and free the model."""
        self._pool.shutdown(wait=True)
        self._server = None  # its destructor stops llama.cpp's loop and frees the model
