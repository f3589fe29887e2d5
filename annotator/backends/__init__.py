"""Teacher backends behind one protocol (:class:`annotator.backends.base.Backend`)."""

from __future__ import annotations

from annotator.backends.base import Backend, Generation, GenerationRequest
from annotator.config import TeacherConfig


def build_backend(cfg: TeacherConfig) -> Backend:
    """Instantiate the configured backend (imports its heavy dependencies lazily)."""
    if cfg.ray is not None:
        from annotator.backends.ray_pool import RayPoolBackend

        return RayPoolBackend(cfg)
    if cfg.backend == "local":
        from annotator.backends.local_llama import LocalLlamaBackend

        return LocalLlamaBackend(cfg)
    if cfg.backend == "openai":
        from annotator.backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(cfg)
    from annotator.backends.vllm_offline import VLLMBackend

    return VLLMBackend(cfg)


__all__ = ["Backend", "Generation", "GenerationRequest", "build_backend"]
