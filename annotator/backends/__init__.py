"""Teacher backends behind one protocol (:class:`annotator.backends.base.Backend`), registered by name.

A backend is a module holding its settings (a :class:`~annotator.backends.base.BaseTeacherConfig` subclass with a
``backend`` tag; ``create_backend`` builds the backend) and the backend itself, with its heavy libraries imported
lazily: :data:`BACKENDS` is imported by :mod:`annotator.config` to validate every pipeline file.
"""

from __future__ import annotations

from annotator.backends.base import Backend, BaseTeacherConfig, Generation, GenerationRequest
from annotator.backends.local_llama import LocalTeacherConfig
from annotator.backends.openai_config import OpenAITeacherConfig
from annotator.backends.vllm_offline import VLLMTeacherConfig

BACKENDS: dict[str, type[BaseTeacherConfig]] = {
    "local": LocalTeacherConfig,
    "openai": OpenAITeacherConfig,
    "vllm": VLLMTeacherConfig,
}
"""Every backend's settings by ``teacher.backend`` name (the tag of the config union)."""

DEFAULT_BACKEND = "local"
"""The teacher of a pipeline whose ``teacher`` section has no ``backend`` (or no ``teacher`` section)."""


def build_backend(cfg: BaseTeacherConfig) -> Backend:
    """Instantiate the configured backend (on Ray when ``cfg.ray`` is set)."""
    if cfg.ray is not None:
        from annotator.backends.ray_pool import RayPoolBackend

        return RayPoolBackend(cfg)
    return cfg.create_backend()


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "BaseTeacherConfig", "Generation", "GenerationRequest",
           "build_backend"]
