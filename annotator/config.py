"""Pipeline configuration: a YAML file validated by pydantic.

Relative paths inside a pipeline file (input, template, output) are resolved against the directory of the
YAML file, so a pipeline behaves the same whatever directory it is run from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from annotator.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputConfig(_Strict):
    """Where rows come from. CSV, JSONL/NDJSON and Parquet are read (streamed) with polars."""

    path: Path
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    id_column: str = "id"
    text_column: str = "text"
    max_chars: int | None = Field(
        default=None, gt=0, description="Rows whose text is longer are recorded as failed instead of being sent."
    )
    limit: int | None = Field(default=None, gt=0, description="Only process the first N rows.")


class LabelSpec(_Strict):
    name: str = Field(min_length=1)
    description: str = ""


class FewShotExample(_Strict):
    text: str
    output: dict[str, Any] = Field(description="The answer, in the task's output format, e.g. {label: sport}.")


class LabelTaskConfig(_Strict):
    type: Literal["label"]
    labels: list[LabelSpec] = Field(min_length=2)
    multi_label: bool = False
    rationale: bool = Field(default=False, description="Ask for a short rationale before the label.")
    shuffle_labels: bool = Field(default=True, description="Shuffle label order per item (position-bias control).")
    few_shot: list[FewShotExample] = []
    instructions: str = ""

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_strings(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return [{"name": k, "description": d or ""} for k, d in v.items()]
        if isinstance(v, list):
            return [{"name": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _unique_labels(self) -> LabelTaskConfig:
        names = [lab.name for lab in self.labels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate label names: {', '.join(dupes)}")
        return self

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]


class RephraseTaskConfig(_Strict):
    type: Literal["rephrase"]
    n: int = Field(default=2, ge=1, le=20, description="Paraphrases per input.")
    styles: list[str] = Field(default_factory=lambda: ["plain"], min_length=1)
    few_shot: list[FewShotExample] = []
    instructions: str = ""


class QATaskConfig(_Strict):
    type: Literal["qa"]
    min_pairs: int = Field(default=1, ge=1)
    max_pairs: int = Field(default=3, ge=1, le=50)
    require_grounding: bool = Field(
        default=True, description="Reject answers whose evidence quote is not found verbatim in the document."
    )
    few_shot: list[FewShotExample] = []
    instructions: str = ""

    @model_validator(mode="after")
    def _bounds(self) -> QATaskConfig:
        if self.min_pairs > self.max_pairs:
            raise ValueError(f"min_pairs ({self.min_pairs}) is larger than max_pairs ({self.max_pairs})")
        return self


TaskConfig = Annotated[LabelTaskConfig | RephraseTaskConfig | QATaskConfig, Field(discriminator="type")]


class PromptConfig(_Strict):
    template: Path | None = Field(default=None, description="Jinja template; default prompts/<task>.jinja.")
    system: str | None = None


class TeacherConfig(_Strict):
    """The teacher model and how to call it. Fields that do not apply to a backend are ignored by it."""

    backend: Literal["local", "openai", "vllm"] = "local"
    model: str | None = Field(default=None, description="Model name/path; local default: SmolLM2-135M-Instruct.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=256, gt=0)
    seed: int = 0
    samples: int = Field(default=1, ge=1, le=64, description="Self-consistency: answers drawn per item.")
    sample_temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Temperature used when samples > 1.")
    # local (llama.cpp)
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int | None = None
    # openai-compatible
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    concurrency: int = Field(default=16, ge=1, le=4096)
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=50, description="Transport retries (429, 5xx, timeouts).")
    max_backoff: float = Field(default=60.0, gt=0)
    # vllm
    vllm_engine_args: dict[str, Any] = {}
    batch_size: int = Field(default=256, ge=1, description="vllm: requests kept in flight in the async engine.")


class ValidationConfig(_Strict):
    max_attempts: int = Field(default=3, ge=1, le=20, description="Tries per sample when output is invalid.")
    max_tokens_per_row: int | None = Field(
        default=None, gt=0, description="Stop retrying a row once it has used this many tokens."
    )


class OutputConfig(_Strict):
    dir: Path


class PipelineConfig(_Strict):
    """A whole pipeline file."""

    name: str = Field(min_length=1)
    description: str = ""
    input: InputConfig
    task: TaskConfig
    prompt: PromptConfig = PromptConfig()
    teacher: TeacherConfig = TeacherConfig()
    validation: ValidationConfig = ValidationConfig()
    output: OutputConfig

    source_path: Path | None = Field(default=None, exclude=True)

    def resolve(self, base: Path) -> PipelineConfig:
        """Make relative paths absolute against ``base`` (the YAML file's directory)."""
        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        self.input.path = fix(self.input.path)  # type: ignore[assignment]
        self.prompt.template = fix(self.prompt.template)
        self.output.dir = fix(self.output.dir)  # type: ignore[assignment]
        return self


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"invalid pipeline config {path}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in {"label", "rephrase", "qa"}))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check spelling)"
        lines.append(f"  - {loc or '<root>'}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML. Raises :class:`ConfigError` with field names and the file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"pipeline file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level, got {type(data).__name__}")
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(p, exc)) from None
    cfg.source_path = p.resolve()
    return cfg.resolve(p.resolve().parent)
