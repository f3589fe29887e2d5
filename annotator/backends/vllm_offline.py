"""vLLM offline batched inference (optional extra ``annotator[vllm]``, needs a GPU).

Requests that arrive together are micro-batched into one ``LLM.chat`` call; the JSON schema is enforced with the
current structured-outputs API (``SamplingParams(structured_outputs=StructuredOutputsParams(json=...))``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from annotator.backends.base import Generation, GenerationRequest
from annotator.config import TeacherConfig
from annotator.errors import AnnotatorError, BackendError


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMBackend:
    name = "vllm"
    structured_mode = "vllm-structured-outputs-json"

    def __init__(self, cfg: TeacherConfig):
        if not cfg.model:
            raise AnnotatorError("teacher.model is required for the vllm backend (an HF model name or path)")
        try:
            from vllm import LLM, SamplingParams
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError:
            raise AnnotatorError(
                "the vllm backend needs vLLM: `pip install 'annotator[vllm]'` on a machine with a supported GPU"
            ) from None
        self._sampling_params = SamplingParams
        self._structured = StructuredOutputsParams
        try:
            self.llm = LLM(model=cfg.model, seed=cfg.seed, **cfg.vllm_engine_args)
        except Exception as exc:
            raise AnnotatorError(f"vLLM could not load {cfg.model}: {exc}") from None
        self.model_id = f"vllm:{cfg.model}"
        self.max_concurrency = cfg.batch_size
        self.batch_size = cfg.batch_size
        self._pending: list[tuple[GenerationRequest, asyncio.Future[Generation]]] = []
        self._flush_scheduled = False
        self._gpu_lock = asyncio.Lock()

    def _params(self, req: GenerationRequest) -> Any:
        structured = self._structured(json=req.json_schema) if req.json_schema is not None else None
        return self._sampling_params(
            temperature=req.temperature, max_tokens=req.max_tokens, seed=req.seed, structured_outputs=structured
        )

    def _run_batch(self, batch: list[GenerationRequest]) -> list[Generation]:
        outputs = self.llm.chat(
            [r.messages for r in batch], sampling_params=[self._params(r) for r in batch], use_tqdm=False
        )
        results = []
        for out in outputs:
            comp = out.outputs[0]
            results.append(
                Generation(
                    text=comp.text,
                    finish_reason=comp.finish_reason,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(comp.token_ids or []),
                )
            )
        return results

    async def _flush(self) -> None:
        async with self._gpu_lock:
            self._flush_scheduled = False
            while self._pending:
                batch = self._pending[: self.batch_size]
                self._pending = self._pending[self.batch_size :]
                try:
                    results = await asyncio.to_thread(self._run_batch, [r for r, _ in batch])
                except Exception as exc:  # one bad batch fails its rows, not the run
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(BackendError(f"vLLM generation failed: {exc}"))
                    continue
                for (_, fut), res in zip(batch, results):
                    if not fut.done():
                        fut.set_result(res)

    async def generate(self, request: GenerationRequest) -> Generation:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Generation] = loop.create_future()
        self._pending.append((request, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # wait a tick so that every request the engine issues concurrently joins the same batch
            loop.call_later(0.005, lambda: asyncio.ensure_future(self._flush()))
        return await fut

    async def aclose(self) -> None:
        return None
