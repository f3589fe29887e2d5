"""The teacher-backend protocol. The pipeline engine only ever sees these types."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field


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
