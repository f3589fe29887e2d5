"""The teacher-backend protocol. The pipeline engine only ever sees these types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from annotator.bounds import PricePerMillion


class GenerationRequest(BaseModel):
    """One chat completion to make."""

    messages: list[dict[str, str]]
    json_schema: dict[str, Any] | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int | None = None


class Generation(BaseModel):
    """What the teacher returned."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = Field(default=0, description="Part of prompt_tokens served from the provider's prompt cache.")
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Backend(Protocol):
    """A teacher. ``generate`` raises :class:`annotator.errors.BackendError` once its own transport
    retries are exhausted or the request cannot succeed (e.g. prompt longer than the context)."""

    name: str
    model_id: str
    """Identifies the model for the cache key (changing the model invalidates cached answers)."""
    max_concurrency: int
    """How many ``generate`` calls the engine may have in flight."""
    structured_mode: str
    """How the schema is enforced (part of the cache key)."""

    async def generate(self, request: GenerationRequest) -> Generation: ...

    async def aclose(self) -> None: ...


class RayConfig(BaseModel):
    """Spread the teacher over a Ray cluster (also ``annotator run --ray [ADDRESS]``)."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        default=None, description="host:6379, ray://host:10001 or auto (none: ray.init()'s default)."
    )
    workers: int | None = Field(default=None, ge=1, description="Teacher replicas (default: fill the cluster).")


class PriceConfig(BaseModel):
    """What the provider charges, in USD per million tokens (copy it from the provider's price page)."""

    model_config = ConfigDict(extra="forbid")

    input: PricePerMillion = Field(description="USD per 1M prompt tokens.")
    cached_input: PricePerMillion | None = Field(
        default=None, description="USD per 1M prompt tokens served from the provider's prompt cache (default: input)."
    )
    output: PricePerMillion = Field(description="USD per 1M completion tokens.")


@dataclass(frozen=True)
class TeacherCapabilities:
    """What a teacher's settings let a run do. The config checks, the engine and the cost accounting ask
    :meth:`BaseTeacherConfig.capabilities` and never which backend a teacher is, so a plugin backend gets a feature
    by declaring it here (e.g. a priced API returns its ``price``)."""

    price: PriceConfig | None = None
    """Prices: cost per row and per run, ``validate --estimate`` (None: the runs of this teacher have no cost)."""
    max_cost: float | None = None
    """USD this output directory may spend (``teacher.max_cost``): no new call starts once it would pass it."""
    batch: bool = False
    """The answers come through a provider's Batch API: the engine fills the cache from it (:mod:`annotator.batch`)
    before its usual pass, and the backend must be batch-capable (:class:`annotator.batch.BatchBackend`)."""
    reask_refused: str | None = None
    """Why ``validation.on_invalid: reask`` cannot be used with these settings (None: it can); ``{teacher}`` in it
    stands for the section's place in the pipeline file (``teacher``, or a cascade stage's)."""
    ray_refused: str | None = None
    """Why ``teacher.ray`` cannot be used with these settings (None: it can); ``{teacher}`` as above."""


RayPlacement = tuple[int, dict[str, float], "BaseTeacherConfig"]
"""(actors, Ray resources per actor, the config each actor builds its plain backend from)."""


class BaseTeacherConfig(BaseModel, ABC):
    """The settings every backend has. Each backend module subclasses it with its own ``backend`` tag and fields
    (extra fields are refused, so a setting of another backend is an error), and registers the subclass in
    :data:`annotator.backends.BACKENDS`."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str | None = Field(default=None, description="Model name/path; local default: SmolLM2-135M-Instruct.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=256, gt=0, le=10_000_000)
    seed: int = 0
    samples: int = Field(default=1, ge=1, le=64, description="Self-consistency: answers drawn per item.")
    sample_temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Temperature used when samples > 1.")
    # Ray: the backend above, one replica per worker (annotator/backends/ray_pool.py)
    ray: RayConfig | None = None

    @abstractmethod
    def create_backend(self) -> Backend:
        """The backend these settings describe (its heavy libraries are imported here, not at module import)."""

    def capabilities(self) -> TeacherCapabilities:
        """What these settings let a run do (default: no price, no budget, online answers, re-asks and Ray)."""
        return TeacherCapabilities()

    @property
    def location(self) -> str:
        """Where the teacher runs, for messages about an unreachable teacher."""
        return self.backend

    def ray_placement(self, resources: dict[str, float], workers: int | None) -> RayPlacement:
        """How to spread this teacher over a Ray cluster with ``resources``: by default one actor per CPU
        (``workers``, when given, is the count)."""
        return workers or max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}, self.model_copy(update={"ray": None})
