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
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import ErrorDetails

# The teacher's settings are defined by their backends (annotator/backends/) and re-exported here.
from annotator.backends import BACKENDS, DEFAULT_BACKEND, SKIPPED
from annotator.backends.base import BaseTeacherConfig as BaseTeacherConfig
from annotator.backends.base import RayConfig as RayConfig
from annotator.backends.local_llama import LocalTeacherConfig as LocalTeacherConfig
from annotator.backends.openai_config import OpenAITeacherConfig as OpenAITeacherConfig
from annotator.backends.openai_config import PriceConfig as PriceConfig
from annotator.backends.vllm_offline import VLLMTeacherConfig as VLLMTeacherConfig
from annotator.choices import InputFormat
from annotator.errors import ConfigError
from annotator.tasks import TaskConfigBase, get_task_class, task_config_classes, task_names, unknown_task


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputConfig(_Strict):
    """Where rows come from. CSV, JSONL/NDJSON and Parquet are read (streamed) with polars."""

    path: Path
    format: InputFormat = InputFormat.auto
    id_column: str = "id"
    text_column: str = "text"
    max_chars: int | None = Field(
        default=None, gt=0, description="Rows whose text is longer are recorded as failed instead of being sent."
    )
    limit: int | None = Field(default=None, gt=0, description="Only process the first N rows.")


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
"""The ``teacher`` section: the settings class of its ``backend`` (see :data:`annotator.backends.BACKENDS`), so a
setting of another backend is an error naming both."""

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


def _explain_teacher_error(err: ErrorDetails) -> ErrorDetails:
    """A teacher error in the user's terms: the backend tag dropped from its location, a field of another backend
    named as such (``teacher.n_ctx: not a setting of backend openai (it belongs to backend local)``), an unknown
    backend listed against the known ones. Applies to ``teacher`` and to each cascade stage's ``teacher``."""
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
            return {**err, "type": "other_backend", "msg": f"not a setting of backend {backend} (it belongs to "
                    f"backend{'s' if len(owners) > 1 else ''} {', '.join(owners)})"}
    return err


OnInvalid = Literal["resample", "reask"]
"""``validation.on_invalid``: how an invalid answer is asked again (see :mod:`annotator.retry`)."""


class ValidationConfig(_Strict):
    max_attempts: int = Field(default=3, ge=1, le=20, description="Tries per sample when output is invalid.")
    max_tokens_per_row: int | None = Field(
        default=None, gt=0, description="Stop retrying a row once it has used this many tokens."
    )
    on_invalid: OnInvalid = Field(
        default="resample",
        description="What the next try of an invalid answer sends: 'resample' = the same prompt again (warmer, "
                    "another seed); 'reask' = the conversation plus the invalid answer and the validation error, "
                    "so the teacher can correct it (more prompt tokens per try; see annotator/retry.py).",
    )
    max_consecutive_transport_failures: int = Field(
        default=20, ge=1,
        description="Circuit breaker: stop the run (exit 5) after this many teacher calls in a row failed for good "
                    "(connection, timeout, 5xx after retries). Nothing is lost: a rerun resumes.",
    )
    max_failed_fraction: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="The run exits 4 (outputs still written) when more than this share of rows failed; 1.0 = never.",
    )


class OutputConfig(_Strict):
    dir: Path


class CascadeStageConfig(_Strict):
    """One stage of a cascade: a name (its run directory is ``<output.dir>/stages/<k>-<name>``) and a whole teacher
    section (any backend, ``samples`` >= 3: the stage's confidence is its vote share)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64,
                      description="Letters, digits, '_', '.', '-' (it names a directory).")
    teacher: TeacherConfig


class HumanQueueConfig(_Strict):
    """The sheets of the rows no stage keeps (written like ``annotator sample``'s)."""

    annotators: int = Field(default=1, ge=1, description="Annotators the queue is shared between.")
    per_item: int = Field(default=1, ge=1, description="Annotators per row (<= annotators).")

    @model_validator(mode="after")
    def _per_item_fits(self) -> HumanQueueConfig:
        if self.per_item > self.annotators:
            raise ValueError(f"per_item ({self.per_item}) cannot exceed annotators ({self.annotators})")
        return self


class CascadeConfig(_Strict):
    """``cascade:`` teachers in order, cheapest first; each keeps the rows it is sure of (confidence >= its
    threshold, chosen by ``annotator calibrate``), passes the others on; the last one's leftovers go to humans.
    See docs/cascade.md."""

    stages: list[CascadeStageConfig]
    target: float = Field(gt=0.0, le=1.0, description="Agreement with the human majority the kept labels must reach.")
    delta: float = Field(default=0.1, gt=0.0, le=0.5,
                         description="Allowed chance that the guarantee fails (over the draw of the human sample).")
    calibration: Path | None = Field(
        default=None, description="The thresholds file `annotator calibrate` writes and `run` reads "
                                  "(default: <output.dir>/calibration.json).")
    human_queue: HumanQueueConfig = HumanQueueConfig()


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
            "PipelineConfig", __base__=PipelineConfig, __doc__=PipelineConfig.__doc__,
            task=(_task_union(classes), ...),
        )
    return _models[key]


def _refusal(path: Path, field: str, why: str, overrides: list[str]) -> ConfigError:
    """A config error for ``field``, naming the ``--set`` it came from when it came from one."""
    origin = next((o for o in reversed(overrides) if _override_touches(o, field)), None)
    return ConfigError(f"invalid pipeline config {path}: {field}: {why}" + (f" (from --set {origin})" if origin else ""))


def _check_samples(cfg: PipelineConfig, path: Path, overrides: list[str]) -> None:
    """``teacher.samples > 1`` only for a task that aggregates samples: others would pay for answers they drop."""
    n = cfg.teacher.samples
    if n > 1 and not get_task_class(cfg.task.type).aggregates_samples:
        raise _refusal(path, "teacher.samples", f"{n}: the {cfg.task.type} task keeps one answer per row (it does not "
                       f"aggregate samples), so {n - 1} of every {n} teacher calls would be paid for nothing; set "
                       "teacher.samples: 1", overrides)


def _check_batch_mode(cfg: PipelineConfig, path: Path, overrides: list[str]) -> None:
    """``teacher.mode: batch`` refuses what a batch cannot do: re-asking, and Ray (checked here so ``validate``
    says it, not only ``run``)."""
    for where, teacher in cfg.stage_teachers():
        if not (isinstance(teacher, OpenAITeacherConfig) and teacher.mode == "batch"):
            continue
        if cfg.validation.on_invalid == "reask":
            raise _refusal(path, "validation.on_invalid", f"reask is not available with {where}.mode: batch (a "
                           "follow-up batch asks the same prompt again): use on_invalid: resample, or mode: online",
                           overrides)
        if teacher.ray is not None:
            raise _refusal(path, f"{where}.ray", f"the Batch API does not run on Ray: drop {where}.ray, or use mode: "
                           "online", overrides)


MIN_CASCADE_SAMPLES = 3
"""A stage's confidence is the vote share of its samples: fewer than 3 cannot tell 'sure' from 'unsure'."""


def _check_cascade(cfg: PipelineConfig, path: Path, overrides: list[str]) -> None:
    """A cascade has >= 2 stages with distinct names, each with a confidence (``samples`` >= 3), over a
    single-label task that aggregates samples, and no top-level ``teacher`` (each stage names its own)."""
    cascade = cfg.cascade
    if cascade is None:
        return
    if "teacher" in cfg.model_fields_set:
        raise _refusal(path, "teacher", "a cascade names its teachers in cascade.stages: move this teacher section "
                       "into a stage, or remove the cascade section", overrides)
    if len(cascade.stages) < 2:
        raise _refusal(path, "cascade.stages", f"{len(cascade.stages)} stage(s): a cascade needs at least 2 (a cheap "
                       "teacher first, a stronger one for the rows it is unsure of); for one teacher remove the "
                       "cascade section and use teacher:", overrides)
    task_cls = get_task_class(cfg.task.type)
    if not task_cls.aggregates_samples or getattr(cfg.task, "multi_label", False):
        raise _refusal(path, "cascade", f"the {cfg.task.type} task has no vote-share confidence to escalate on (a "
                       "cascade needs a single-label task that aggregates samples, e.g. type: label)", overrides)
    names = [st.name for st in cascade.stages]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _refusal(path, "cascade.stages", f"stage name(s) {', '.join(twice)} used twice; each stage needs its "
                       "own name (it names the stage's run directory)", overrides)
    for i, st in enumerate(cascade.stages):
        if st.teacher.samples < MIN_CASCADE_SAMPLES:
            raise _refusal(path, f"cascade.stages.{i}.teacher.samples", f"{st.teacher.samples} (stage {st.name!r}): "
                           "a stage's confidence is the vote share of its samples, so it needs samples: "
                           f"{MIN_CASCADE_SAMPLES} or more (no built-in backend returns token log-probabilities)",
                           overrides)


def _format_validation_error(path: Path, exc: ValidationError, overrides: list[str]) -> str:
    lines = [f"invalid pipeline config {path}:"]
    tags = set(task_names())  # pydantic puts the union member's name in the location: task.label.labels
    for err in map(_explain_teacher_error, exc.errors()):
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
            got = "nothing (an empty section: fill it, or remove it for the defaults)" if err["input"] is None \
                else f"{err['input']!r}"
            msg = f"expected a section of settings (key: value lines), got {got}"
        origin = next((o for o in reversed(overrides) if _override_touches(o, loc)), None)
        if origin is None and err["type"] == "other_backend":  # the field is the file's; was the backend --set?
            origin = next((o for o in reversed(overrides) if _override_touches(o, "teacher.backend")), None)
        lines.append(f"  - {loc or '<root>'}: {msg}" + (f" (from --set {origin})" if origin else ""))
    return "\n".join(lines)


def _override_touches(override: str, loc: str) -> bool:
    key = override.partition("=")[0].strip()
    return bool(loc) and (key == loc or key.startswith(loc + ".") or loc.startswith(key + "."))


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
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
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
    _check_batch_mode(cfg, p, overrides)
    _check_cascade(cfg, p, overrides)
    cfg.source_path = p.resolve()
    cfg.overrides = overrides
    cfg.env_vars = env_vars
    return cfg.resolve(p.resolve().parent)
