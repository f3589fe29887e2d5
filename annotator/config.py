"""Pipeline configuration: a YAML file validated by pydantic.

Relative paths inside a pipeline file (input, template, output) are resolved against the directory of the
YAML file, so a pipeline behaves the same whatever directory it is run from.

Two ways to change a pipeline without editing its file, both applied before validation (so they are checked
like the file itself) and both recorded in ``run.json``:

* ``${VAR}`` / ``${VAR:-default}`` in any string value of the file is replaced by the environment variable
  (``$${`` writes a literal ``${``);
* ``--set key.path=value`` overrides (``value`` is parsed as YAML: ``8`` is a number, ``true`` a boolean);
  relative paths given this way resolve against the current directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from annotator.backends.base import BaseTeacherConfig
from annotator.backends.local_llama import LocalTeacherConfig
from annotator.backends.registry import TeacherConfig, explain_teacher_error
from annotator.bounds import MAX_TEXT_FILE_BYTES, read_text_at_most
from annotator.cascade.settings import CascadeConfig
from annotator.errors import ConfigError
from annotator.inputs import InputConfig
from annotator.redact import is_secret_name, register_secret
from annotator.retry import ValidationConfig
from annotator.tasks import TaskConfigBase, get_task_class, task_config_classes, task_names, unknown_task


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _task_union(classes: list[type[TaskConfigBase]]) -> Any:
    """The ``task:`` field type: the registered task configs, told apart by ``type``."""
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator="type")]  # noqa: UP007 - built at run time


_BUILT_WITH = task_config_classes(plugins=False)  # the built-in tasks
if TYPE_CHECKING:
    TaskConfig = TaskConfigBase
else:
    TaskConfig = _task_union(_BUILT_WITH)


class PromptConfig(_Strict):
    template: Path | None = Field(
        default=None, description="Jinja template; default: the built-in template of the task (annotator/prompts)."
    )
    system: str | None = None


class OutputConfig(_Strict):
    dir: Path


class PipelineConfig(_Strict):
    """A whole pipeline file."""

    name: str = Field(min_length=1)
    description: str = ""
    input: InputConfig
    task: TaskConfig
    prompt: PromptConfig = PromptConfig()
    teacher: TeacherConfig = LocalTeacherConfig()
    validation: ValidationConfig = ValidationConfig()
    output: OutputConfig
    cascade: CascadeConfig | None = Field(default=None, description="Several teachers in turn (docs/cascade.md).")

    source_path: Path | None = Field(default=None, exclude=True)
    overrides: list[str] = Field(default=[], exclude=True, description="The --set overrides applied, in order.")
    env_vars: list[str] = Field(default=[], exclude=True, description="Environment variables the file expanded.")

    def binding(self) -> dict[str, str]:
        """What a run directory is bound to (:func:`annotator.rundir.bind_run_dir`): the pipeline's name, its input
        file and columns, and the task type."""
        return {
            "pipeline": self.name,
            "input": str(self.input.path),
            "id_column": self.input.id_column,
            "text_column": self.input.text_column,
            "task": self.task.type,
        }

    def resolve(self, base: Path) -> PipelineConfig:
        """Make relative paths absolute against ``base`` (the YAML file's directory)."""

        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        self.input.path = fix(self.input.path)  # type: ignore[assignment]
        self.prompt.template = fix(self.prompt.template)
        self.output.dir = fix(self.output.dir)  # type: ignore[assignment]
        if self.cascade is not None:
            self.cascade.calibration = fix(self.cascade.calibration) or self.output.dir / "calibration.json"
        return self

    def stage_teachers(self) -> list[tuple[str, BaseTeacherConfig]]:
        """Every teacher of the pipeline with its place in the file: ``teacher``, or each cascade stage's."""
        if self.cascade is None:
            return [("teacher", self.teacher)]
        return [(f"cascade.stages.{i}.teacher", st.teacher) for i, st in enumerate(self.cascade.stages)]


_models: dict[tuple[type[TaskConfigBase], ...], type[PipelineConfig]] = {}


def pipeline_model() -> type[PipelineConfig]:
    """:class:`PipelineConfig` whose ``task:`` accepts every task registered now (a task registered after this
    module was imported, e.g. a plugin's, gets a subclass with the larger union)."""
    classes = task_config_classes()
    if classes == _BUILT_WITH:
        return PipelineConfig
    key = tuple(classes)
    if key not in _models:
        _models[key] = create_model(
            "PipelineConfig",
            __base__=PipelineConfig,
            __doc__=PipelineConfig.__doc__,
            task=(_task_union(classes), ...),
        )
    return _models[key]


def _refusal(path: Path, field: str, why: str, overrides: list[str]) -> ConfigError:
    """A config error for ``field``, naming the ``--set`` it came from when it came from one."""
    origin = next((o for o in reversed(overrides) if _override_touches(o, field)), None)
    return ConfigError(
        f"invalid pipeline config {path}: {field}: {why}" + (f" (from --set {origin})" if origin else "")
    )


def _check_samples(cfg: PipelineConfig, path: Path, overrides: list[str]) -> None:
    """``teacher.samples > 1`` only for a task that aggregates samples: others would pay for answers they drop."""
    n = cfg.teacher.samples
    if n > 1 and not get_task_class(cfg.task.type).aggregates_samples:
        raise _refusal(
            path,
            "teacher.samples",
            f"{n}: the {cfg.task.type} task keeps one answer per row (it does not "
            f"aggregate samples), so {n - 1} of every {n} teacher calls would be paid for nothing; set "
            "teacher.samples: 1",
            overrides,
        )


def _check_capabilities(cfg: PipelineConfig, path: Path, overrides: list[str]) -> None:
    """Refuse a setting a teacher cannot honour (:meth:`~annotator.backends.base.BaseTeacherConfig.capabilities`):
    re-asking, Ray (checked here so ``validate`` says it, not only ``run``); every teacher of the file (``teacher``,
    or each cascade stage's), each named by its place."""
    for where, teacher in cfg.stage_teachers():
        caps = teacher.capabilities()
        if cfg.validation.on_invalid == "reask" and caps.reask_refused:
            raise _refusal(path, "validation.on_invalid", caps.reask_refused.format(teacher=where), overrides)
        if teacher.ray is not None and caps.ray_refused:
            raise _refusal(path, f"{where}.ray", caps.ray_refused.format(teacher=where), overrides)


MIN_CASCADE_SAMPLES = 3
"""A stage's confidence is the vote share of its samples: fewer than 3 cannot tell 'sure' from 'unsure'."""


def _check_cascade(cfg: PipelineConfig, path: Path, overrides: list[str]) -> None:
    """A cascade has >= 2 stages with distinct names, each with a confidence (``samples`` >= 3), over a
    single-label task that aggregates samples, and no top-level ``teacher`` (each stage names its own)."""
    cascade = cfg.cascade
    if cascade is None:
        return
    if "teacher" in cfg.model_fields_set:
        raise _refusal(
            path,
            "teacher",
            "a cascade names its teachers in cascade.stages: move this teacher section "
            "into a stage, or remove the cascade section",
            overrides,
        )
    if len(cascade.stages) < 2:
        raise _refusal(
            path,
            "cascade.stages",
            f"{len(cascade.stages)} stage(s): a cascade needs at least 2 (a cheap "
            "teacher first, a stronger one for the rows it is unsure of); for one teacher remove the "
            "cascade section and use teacher:",
            overrides,
        )
    if cascade.target >= 1.0:
        raise _refusal(
            path,
            "cascade.target",
            "1: no finite human sample can show that a teacher never disagrees "
            "with humans, so this target is never certified; name one below 1 (e.g. 0.95)",
            overrides,
        )
    task_cls = get_task_class(cfg.task.type)
    if not task_cls.aggregates_samples or getattr(cfg.task, "multi_label", False):
        raise _refusal(
            path,
            "cascade",
            f"the {cfg.task.type} task has no vote-share confidence to escalate on (a "
            "cascade needs a single-label task that aggregates samples, e.g. type: label)",
            overrides,
        )
    names = [st.name.casefold() for st in cascade.stages]  # directory names: one on a case-insensitive disk
    twice = sorted({st.name for st in cascade.stages if names.count(st.name.casefold()) > 1})
    if twice:
        raise _refusal(
            path,
            "cascade.stages",
            f"stage name(s) {', '.join(twice)} used twice (case aside); each stage "
            "needs its own name (it names the stage's run directory)",
            overrides,
        )
    for i, st in enumerate(cascade.stages):
        if st.teacher.samples < MIN_CASCADE_SAMPLES:
            raise _refusal(
                path,
                f"cascade.stages.{i}.teacher.samples",
                f"{st.teacher.samples} (stage {st.name!r}): "
                "a stage's confidence is the vote share of its samples, so it needs samples: "
                f"{MIN_CASCADE_SAMPLES} or more (no built-in backend returns token log-probabilities)",
                overrides,
            )


def _format_validation_error(path: Path, exc: ValidationError, overrides: list[str]) -> str:
    lines = [f"invalid pipeline config {path}:"]
    tags = set(task_names())  # pydantic puts the union member's name in the location: task.label.labels
    for err in map(explain_teacher_error, exc.errors()):
        parts = list(err["loc"])
        if len(parts) > 1 and parts[0] == "task" and parts[1] in tags:
            del parts[1]
        loc = ".".join(str(p) for p in parts)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check spelling)"
        elif err["type"] == "union_tag_invalid" and loc == "task":
            loc, msg = "task.type", unknown_task(err["input"].get("type") if isinstance(err["input"], dict) else None)
        elif err["type"] == "model_type":  # pydantic's words name a class: "instance of LocalTeacherConfig"
            got = (
                "nothing (an empty section: fill it, or remove it for the defaults)"
                if err["input"] is None
                else f"{err['input']!r}"
            )
            msg = f"expected a section of settings (key: value lines), got {got}"
        origin = next((o for o in reversed(overrides) if _override_touches(o, loc)), None)
        if origin is None and err["type"] == "other_backend":  # the field is the file's; was the backend --set?
            origin = next((o for o in reversed(overrides) if _override_touches(o, "teacher.backend")), None)
        lines.append(f"  - {loc or '<root>'}: {msg}" + (f" (from --set {origin})" if origin else ""))
    return "\n".join(lines)


def _override_touches(override: str, loc: str) -> bool:
    key = override.partition("=")[0].strip()
    return bool(loc) and (key == loc or key.startswith(loc + ".") or loc.startswith(key + "."))


MAX_CONFIG_VALUES = 200_000
"""A pipeline's values, YAML aliases expanded, at most: an alias bomb (each level repeating the one below) is refused
before anything walks it, instead of taking minutes and gigabytes."""


def check_size(data: Any, where: str) -> None:
    """Refuse ``data`` (parsed YAML) whose aliases expand to more than :data:`MAX_CONFIG_VALUES` values, or that
    holds itself (a recursive alias). Linear in the distinct nodes: each node's expanded size is computed once."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{where}: a YAML alias refers to itself (a recursive structure); remove it")
        active.add(key)
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_CONFIG_VALUES:
                raise ConfigError(
                    f"{where}: more than {MAX_CONFIG_VALUES:,} values once YAML aliases (*name) are "
                    "expanded; a pipeline file needs far fewer (an alias bomb?)"
                )
        active.discard(key)
        sizes[key] = total
        return total

    size(data)


_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
PATH_FIELDS = ("input.path", "prompt.template", "output.dir", "cascade.calibration")


def expand_env(data: Any, path: Path, used: list[str], where: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value of ``data``; record the names in ``used``."""
    if isinstance(data, dict):
        return {k: expand_env(v, path, used, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, path, used, f"{where}.{i}") for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is None:
                raise ConfigError(
                    f"{path}: {where or '<root>'}: environment variable {name} is not set "
                    f"(set it, or write ${{{name}:-default}} in the file)"
                )
            value = default
        if name not in used:
            used.append(name)
        if is_secret_name(name):  # redacted wherever it ends up (URLs, run.json, messages)
            register_secret(value)
        return value

    return _ENV_REF.sub(sub, data)


def apply_override(data: dict[str, Any], override: str, path: Path) -> None:
    """Apply one ``key.path=value`` override to the raw YAML mapping (before validation)."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {override!r}: expected KEY.PATH=VALUE, e.g. --set teacher.concurrency=32")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {override!r}: the value is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"--set {key}: the value is nested too deeply") from None
    check_size(value, f"--set {key}")
    if key in PATH_FIELDS and isinstance(value, str) and value:
        value = str(Path(value).expanduser().resolve())  # a path typed on the command line: relative to the cwd
    *parents, leaf = key.split(".")
    node: Any = data
    for i, part in enumerate(parents):
        node = _child(node, part, key)
        if not isinstance(node, (dict, list)):
            done = ".".join(parents[: i + 1])
            raise ConfigError(f"--set {key}: {path}: {done} is a {type(node).__name__}, not a section")
    if isinstance(node, list):
        node[_index(node, leaf, key)] = value
    else:
        node[leaf] = value


def _index(node: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {len(node)} item(s)")
    return int(part)


def _child(node: dict[str, Any] | list[Any], part: str, key: str) -> Any:
    """The section ``part`` of ``node`` (created empty when missing)."""
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML, after ``${VAR}`` expansion and ``--set`` ``overrides``.

    Raises :class:`ConfigError` naming the file, the field and (for overrides) the ``--set`` that caused it.
    """
    overrides = list(overrides or [])
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"pipeline file not found: {p}")
    try:
        text = read_text_at_most(p, MAX_TEXT_FILE_BYTES)
        if text is None:
            raise ConfigError(
                f"{p} holds more than {MAX_TEXT_FILE_BYTES:,} bytes: a pipeline file is at most that "
                "(put data in the input file, not in the pipeline)"
            )
        data = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{p} is nested too deeply to be a pipeline file (hundreds of levels of [ or {{)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the pipeline file {p}: {exc.strerror or exc}") from None
    check_size(data, str(p))
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level, got {type(data).__name__}")
    env_vars: list[str] = []
    data = expand_env(data, p, env_vars)
    for override in overrides:
        apply_override(data, override, p)
    try:
        cfg = pipeline_model().model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(p, exc, overrides)) from None
    _check_samples(cfg, p, overrides)
    _check_capabilities(cfg, p, overrides)
    _check_cascade(cfg, p, overrides)
    cfg.source_path = p.resolve()
    cfg.overrides = overrides
    cfg.env_vars = env_vars
    return cfg.resolve(p.resolve().parent)
