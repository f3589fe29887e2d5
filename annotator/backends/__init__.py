"""Teacher backends behind one protocol (:class:`annotator.backends.base.Backend`), registered by name.

A backend is a module holding its settings (a :class:`~annotator.backends.base.BaseTeacherConfig` subclass with a
``backend`` tag; ``create_backend`` builds the backend) and the backend itself, with its heavy libraries imported
lazily: :data:`BACKENDS` is imported by :mod:`annotator.config` to validate every pipeline file.

A backend shipped in another package registers through the ``annotator.backends`` entry-point group
(``name = "package.module:SettingsClass"``); it is loaded when this module is imported. A plugin that fails to load
is skipped with one warning line naming it (a pipeline using it then gets "unknown backend", with the reason): the line
is kept in :data:`SKIPPED` and logged by :func:`warn_skipped_plugins`, which the CLI calls once its ``--quiet`` /
``--verbose`` are read (this module is imported before they are).
"""

from __future__ import annotations

import logging
from typing import get_args

from annotator.backends.base import Backend, BaseTeacherConfig, Generation, GenerationRequest
from annotator.backends.local_llama import LocalTeacherConfig
from annotator.backends.openai_config import OpenAITeacherConfig
from annotator.backends.vllm_offline import VLLMTeacherConfig
from annotator.errors import ConfigError
from annotator.plugins import load_plugins

BACKENDS: dict[str, type[BaseTeacherConfig]] = {
    "local": LocalTeacherConfig,
    "openai": OpenAITeacherConfig,
    "vllm": VLLMTeacherConfig,
}
"""Every backend's settings by ``teacher.backend`` name (the tag of the config union)."""

ENTRY_POINT_GROUP = "annotator.backends"
log = logging.getLogger(__name__)

def _accept(name: str, cls: object) -> None:
    """Register ``cls`` as the settings class of backend ``name``; :class:`ConfigError` saying why it cannot be."""
    if not (isinstance(cls, type) and issubclass(cls, BaseTeacherConfig)):
        raise ConfigError("it is not a subclass of annotator.backends.BaseTeacherConfig")
    tag = cls.model_fields.get("backend")
    if tag is None or tag.annotation is None or get_args(tag.annotation) != (name,) or tag.default != name:
        raise ConfigError(f"its backend field must be `backend: Literal[{name!r}] = {name!r}`")
    if name in BACKENDS and BACKENDS[name] is not cls:
        raise ConfigError(f"backend {name!r} is already {BACKENDS[name].__module__}.{BACKENDS[name].__qualname__}")
    BACKENDS[name] = cls


SKIPPED: dict[str, str] = load_plugins(ENTRY_POINT_GROUP, "backend", _accept)
"""Backend plugins that failed to load: entry-point name -> the warning line saying why."""


def warn_skipped_plugins() -> None:
    """Log one warning line per backend plugin that failed to load."""
    for line in SKIPPED.values():
        log.warning("%s", line)

DEFAULT_BACKEND = "local"
"""The teacher of a pipeline whose ``teacher`` section has no ``backend`` (or no ``teacher`` section)."""


def build_backend(cfg: BaseTeacherConfig) -> Backend:
    """Instantiate the configured backend (on Ray when ``cfg.ray`` is set)."""
    if cfg.ray is not None:
        from annotator.backends.ray_pool import RayPoolBackend

        return RayPoolBackend(cfg)
    return cfg.create_backend()


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "SKIPPED", "Backend", "BaseTeacherConfig", "Generation",
           "GenerationRequest", "build_backend", "warn_skipped_plugins"]
