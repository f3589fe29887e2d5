"""The embedded offline teacher: llama.cpp in-process via llama-cpp-python, JSON-schema constrained."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

from annotator.backends.base import Generation, GenerationRequest
from annotator.backends.model_files import default_gguf_path
from annotator.config import TeacherConfig
from annotator.errors import AnnotatorError, BackendError


class LocalLlamaBackend:
    """Runs a GGUF model in this process. One generation at a time (llama.cpp contexts are not thread-safe)."""

    name = "local"
    structured_mode = "gbnf-json-schema"
    max_concurrency = 1

    def __init__(self, cfg: TeacherConfig):
        try:
            from llama_cpp import Llama, LlamaGrammar
        except ImportError as exc:  # pragma: no cover - it is a core dependency
            raise AnnotatorError("the local backend needs llama-cpp-python (`pip install llama-cpp-python`)") from exc
        path = Path(cfg.model) if cfg.model else default_gguf_path()
        if not path.exists():
            raise AnnotatorError(f"local model file not found: {path} (teacher.model must be a .gguf path)")
        self._grammar_cls = LlamaGrammar
        threads = cfg.n_threads or max(1, min(8, os.cpu_count() or 1))
        try:
            self.llm = Llama(model_path=str(path), n_ctx=cfg.n_ctx, n_threads=threads, seed=cfg.seed, verbose=False)
        except Exception as exc:
            raise AnnotatorError(f"cannot load local model {path}: {exc}") from None
        self.model_id = f"gguf:{path.name}:{path.stat().st_size}"
        self._lock = threading.Lock()
        self._grammars: dict[str, Any] = {}

    def _grammar(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = self._grammar_cls.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def _generate_sync(self, req: GenerationRequest) -> Generation:
        kwargs: dict[str, Any] = {}
        if req.json_schema is not None:
            kwargs["grammar"] = self._grammar(req.json_schema)
        with self._lock:
            try:
                resp = self.llm.create_chat_completion(
                    messages=req.messages,  # type: ignore[arg-type]
                    temperature=req.temperature,
                    max_tokens=req.max_tokens,
                    seed=req.seed,
                    **kwargs,
                )
            except ValueError as exc:  # e.g. "Requested tokens (3000) exceed context window of 2048"
                raise BackendError(str(exc)) from None
        choice = resp["choices"][0]  # type: ignore[index]
        usage = resp.get("usage") or {}  # type: ignore[union-attr]
        return Generation(
            text=choice["message"]["content"] or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
        )

    async def generate(self, request: GenerationRequest) -> Generation:
        return await asyncio.to_thread(self._generate_sync, request)

    async def aclose(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None
