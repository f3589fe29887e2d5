"""vLLM offline batched inference (optional extra ``annotator-llm[vllm]``, needs a GPU).

Requests that arrive together are micro-batched into one ``LLM.chat`` call; the JSON schema is enforced with the
current structured-outputs API (``SamplingParams(structured_outputs=StructuredOutputsParams(json=...))``).
"""

from __future__ import annotations

from typing import Any

from annotator.backends.base import Generation, GenerationRequest
from annotator.backends.micro_batcher import MicroBatcher
from annotator.config import TeacherConfig
from annotator.errors import AnnotatorError


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
                "the vllm backend needs vLLM: `pip install 'annotator-llm[vllm]'` on a machine with a supported GPU"
            ) from None
        self._sampling_params = SamplingParams
        self._structured = StructuredOutputsParams
        try:
            self.llm = LLM(model=cfg.model, seed=cfg.seed, **cfg.vllm_engine_args)
        except Exception as exc:
            raise AnnotatorError(f"vLLM could not load {cfg.model}: {exc}") from None
        self.model_id = f"vllm:{cfg.model}"
        self.max_concurrency = cfg.batch_size
        self._batcher: MicroBatcher[GenerationRequest, Generation] = MicroBatcher(self._run_batch, cfg.batch_size)

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

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self._batcher.submit(request)

    async def aclose(self) -> None:
        return None
