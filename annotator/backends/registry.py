"""The backend registry: ``teacher.backend`` name -> settings class, and the ``teacher`` section they make up.

A backend is a module holding its settings (a :class:`~annotator.backends.base.BaseTeacherConfig` subclass with a
``backend`` tag; ``create_backend`` builds the backend) and the backend itself, with its heavy libraries imported
lazily: every pipeline file is validated against :data:`TeacherConfig`, whatever its backend.

A backend shipped in another package registers through the ``annotator.backends`` entry-point group
(``name = "package.module:SettingsClass"``); it is loaded when this module is imported. A plugin that fails to load
is skipped with one warning line naming it (a pipeline using it then gets "unknown backend", with the reason): the line
is kept in :data:`SKIPPED` and logged by :func:`warn_skipped_plugins`, which the CLI calls once its ``--quiet`` /
``--verbose`` are read (this module is imported before they are).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union, get_args

from pydantic import Discriminator, Tag, TypeAdapter
from pydantic_core import ErrorDetails

from annotator.backends.base import BaseTeacherConfig
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


def _backend_of(value: Any) -> str:
    """The tag that picks a teacher's settings class: its ``backend`` (``local`` when the section has none)."""
    if isinstance(value, dict):
        return str(value.get("backend", DEFAULT_BACKEND))
    return str(getattr(value, "backend", DEFAULT_BACKEND))


if TYPE_CHECKING:
    TeacherConfig: TypeAlias = BaseTeacherConfig
else:
    TeacherConfig = Annotated[
        Union[tuple(Annotated[cls, Tag(name)] for name, cls in BACKENDS.items())],  # noqa: UP007 (a union built at run time)
        Discriminator(_backend_of),
    ]
"""The ``teacher`` section: the settings class of its ``backend`` (see :data:`BACKENDS`), so a setting of another
backend is an error naming both."""

_TEACHER_ADAPTER: TypeAdapter[BaseTeacherConfig] = TypeAdapter(TeacherConfig)


def teacher_config(data: Any) -> BaseTeacherConfig:
    """Validate a ``teacher`` section (a mapping, or its JSON text) into its backend's settings class."""
    if isinstance(data, (str, bytes)):
        return _TEACHER_ADAPTER.validate_json(data)
    return _TEACHER_ADAPTER.validate_python(data)


def _unknown_backend(section: Any) -> str:
    """Why a ``teacher.backend`` value names no backend, and the fix."""
    name = _backend_of(section)
    raw = section.get("backend") if isinstance(section, dict) else name
    shown = "null" if raw is None else repr(raw)
    if raw is None:
        hint = f"; leave backend out for {DEFAULT_BACKEND}"
    elif str(raw).lower() in BACKENDS and str(raw).lower() != raw:
        hint = f"; did you mean {str(raw).lower()!r}?"
    else:
        hint = ""
    why = f"; {SKIPPED[name]}" if name in SKIPPED else ""
    return f"unknown backend {shown} (known: {', '.join(BACKENDS)}{hint}{why})"


def explain_teacher_error(err: ErrorDetails) -> ErrorDetails:
    """A teacher error in the user's terms: the backend tag dropped from its location, a field of another backend
    named as such (``teacher.n_ctx: not a setting of backend openai (it belongs to backend local)``), an unknown
    backend listed against the known ones. Applies to ``teacher`` and to each cascade stage's ``teacher``; other
    errors pass unchanged."""
    loc = err["loc"]
    if "teacher" not in loc:
        return err
    at = loc.index("teacher") + 1
    head, tail = loc[:at], loc[at:]
    if err["type"] == "union_tag_invalid" and not tail:
        return {**err, "loc": (*head, "backend"), "type": "unknown_backend", "msg": _unknown_backend(err["input"])}
    if not tail or tail[0] not in BACKENDS:
        return err
    backend, rest = str(tail[0]), tail[1:]
    err = {**err, "loc": (*head, *rest)}
    if err["type"] == "extra_forbidden" and len(rest) == 1:
        owners = [name for name, cls in BACKENDS.items() if rest[0] in cls.model_fields]
        if owners:
            return {
                **err,
                "type": "other_backend",
                "msg": f"not a setting of backend {backend} (it belongs to "
                f"backend{'s' if len(owners) > 1 else ''} {', '.join(owners)})",
            }
    return err
