"""Prompt templates: a sandboxed Jinja environment with StrictUndefined.

A template renders the *user* message; the optional system message comes from ``prompt.system`` (also Jinja).
Templates can't reach Python internals (sandbox) and fail loudly on any variable they reference but were not given.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from annotator.bounds import MAX_TEXT_FILE_BYTES, read_text_at_most
from annotator.errors import TemplateError
from annotator.tasks import get_task_class

BUILTIN_PREFIX = "builtin:"


def _default_template(task: str) -> tuple[str, Path]:
    """The file name of the default template that ``task`` declares (``default_template``) and where it lies:
    beside the module that defines the task class (a plugin task ships its own), else in this package's
    ``prompts`` folder (the built-in tasks')."""
    cls = get_task_class(task)
    name = cls.default_template
    if name is None:
        raise TemplateError(f"task {task!r} has no built-in prompt template: set prompt.template in the pipeline")
    try:
        beside = Path(inspect.getfile(cls)).parent / name
    except TypeError:  # a class defined interactively has no file
        beside = None
    if beside is not None and beside.is_file():
        return name, beside
    return name, Path(str(resources.files("annotator") / "prompts" / name))


def default_template_path(task: str) -> Path:
    """Where the default template of ``task`` lies (for tools that track files, e.g. ``annotator deps``)."""
    return _default_template(task)[1]


def builtin_template_source(task: str) -> str:
    """The source of the default template of ``task`` (see :func:`default_template_path`)."""
    _, path = _default_template(task)
    if not path.is_file():
        raise TemplateError(f"no built-in prompt template for task {task!r} ({path} is missing)")
    return path.read_text(encoding="utf-8")


def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=False)
    return env


class PromptTemplate:
    """A loaded template (user message) plus an optional system message template."""

    def __init__(self, source: str, name: str, system: str | None = None):
        self.source = source
        self.name = name
        self.system_source = system
        env = _env()
        try:
            self._user = env.from_string(source)
            self._system = env.from_string(system) if system else None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {name}: syntax error on line {exc.lineno}: {exc.message}") from None

    @classmethod
    def from_file(cls, path: Path, system: str | None = None) -> PromptTemplate:
        if not path.exists():
            raise TemplateError(f"prompt template not found: {path}")
        try:
            source = read_text_at_most(path)
        except UnicodeDecodeError:
            raise TemplateError(f"prompt template {path} is not UTF-8 text") from None
        except OSError as exc:
            raise TemplateError(f"cannot read the prompt template {path}: {exc.strerror or exc}") from None
        if source is None:
            raise TemplateError(f"prompt template {path} holds more than {MAX_TEXT_FILE_BYTES:,} bytes: not a template")
        return cls(source, str(path), system)

    @classmethod
    def builtin(cls, task: str, system: str | None = None) -> PromptTemplate:
        """The default template the task declares (:func:`default_template_path`); its name is ``builtin:<file>``."""
        return cls(builtin_template_source(task), f"{BUILTIN_PREFIX}{_default_template(task)[0]}", system)

    @property
    def sha256(self) -> str:
        """Hash of everything in the template that shapes prompts (recorded in provenance)."""
        return hashlib.sha256((self.source + "\0" + (self.system_source or "")).encode()).hexdigest()

    def render(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        """Render to chat messages. Raises :class:`TemplateError` naming an undefined variable."""
        try:
            messages = []
            if self._system is not None:
                messages.append({"role": "system", "content": self._system.render(variables).strip()})
            messages.append({"role": "user", "content": self._user.render(variables).strip()})
        except jinja2.UndefinedError as exc:
            available = ", ".join(sorted(variables))
            raise TemplateError(f"template {self.name}: {exc.message} (available variables: {available})") from None
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"template {self.name}: blocked by the sandbox: {exc}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {self.name}: {exc}") from None
        except Exception as exc:  # template code is user code: range() too big, bad format(), include, ...
            raise TemplateError(f"template {self.name}: {type(exc).__name__}: {exc}") from None
        return messages
