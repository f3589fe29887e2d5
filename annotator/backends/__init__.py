"""Teacher backends behind one protocol (:class:`annotator.backends.base.Backend`), registered by name
(:mod:`annotator.backends.registry`, where plugins join too).

Each backend module holds its settings class, which declares what the teacher can do
(:meth:`~annotator.backends.base.BaseTeacherConfig.capabilities`) and builds the backend.
"""

from __future__ import annotations

from annotator.backends.base import (
    Backend,
    BaseTeacherConfig,
    Generation,
    GenerationRequest,
    PriceConfig,
    RayConfig,
    TeacherCapabilities,
)
from annotator.backends.registry import (
    BACKENDS,
    DEFAULT_BACKEND,
    SKIPPED,
    TeacherConfig,
    teacher_config,
    warn_skipped_plugins,
)


def build_backend(cfg: BaseTeacherConfig) -> Backend:
    """Instantiate the configured backend (on Ray when ``cfg.ray`` is set)."""
    if cfg.ray is not None:
        from annotator.backends.ray_pool import RayPoolBackend

        return RayPoolBackend(cfg)
    return cfg.create_backend()


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "SKIPPED",
    "Backend",
    "BaseTeacherConfig",
    "Generation",
    "GenerationRequest",
    "PriceConfig",
    "RayConfig",
    "TeacherCapabilities",
    "TeacherConfig",
    "build_backend",
    "teacher_config",
    "warn_skipped_plugins",
]
