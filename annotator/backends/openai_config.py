"""Settings of ``backend: openai`` (any OpenAI-compatible chat endpoint).

They live apart from :mod:`annotator.backends.openai_compat` because that module imports the OpenAI SDK (over a
second) at import time, and every pipeline file is validated against these settings, whatever its backend. That
module imports these settings; they import it back only inside :meth:`OpenAITeacherConfig.create_backend`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from annotator.backends.base import Backend, BaseTeacherConfig, PriceConfig, RayPlacement, TeacherCapabilities
from annotator.bounds import PerMinute, Seconds, Usd


class OpenAITeacherConfig(BaseTeacherConfig):
    """``backend: openai``: an API (OpenAI, or ``base_url``: vLLM serve, llama.cpp's llama-server, ...)."""

    backend: Literal["openai"]
    base_url: str | None = Field(default=None, description="The server's /v1 URL (default: api.openai.com).")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Environment variable holding the API key.")
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    concurrency: int = Field(default=16, ge=1, le=4096, description="Requests in flight.")
    timeout: Seconds = Field(default=60.0, description="Seconds for the whole request (connect, wait, read).")
    max_retries: int = Field(default=5, ge=0, le=50, description="Transport retries (429, 5xx, timeouts).")
    max_backoff: Seconds = Field(
        default=60.0, description="Longest wait before a retry, and longest hold a server's rate-limit headers get."
    )
    rpm: PerMinute | None = Field(
        default=None, description="Requests per minute the account allows (paced client-side)."
    )
    tpm: PerMinute | None = Field(default=None, description="Tokens per minute the account allows (paced client-side).")
    price: PriceConfig | None = Field(default=None, description="Prices, for cost per row, totals and estimates.")
    max_cost: Usd | None = Field(
        default=None, description="USD: stop starting teacher calls once this output directory would spend more."
    )
    mode: Literal["online", "batch"] = Field(
        default="online", description="'batch' sends the run through the provider's Batch API (files + batches)."
    )
    batch_max_requests: int = Field(default=50_000, gt=0, description="Batch API: requests per batch at most.")
    batch_max_bytes: int = Field(default=200_000_000, gt=0, description="Batch API: input file size per batch at most.")
    batch_poll_interval: Seconds = Field(default=30.0, description="Batch API: seconds between status checks.")
    batch_completion_window: str = "24h"

    @model_validator(mode="after")
    def _budget_needs_price(self) -> OpenAITeacherConfig:
        if self.max_cost is not None and self.price is None:
            raise ValueError("max_cost needs teacher.price (e.g. price: {input: 2.5, cached_input: 1.25, output: 10})")
        return self

    def capabilities(self) -> TeacherCapabilities:
        """Priced (``price``, ``max_cost``); ``mode: batch`` answers through the Batch API, which cannot re-ask (a
        follow-up batch sends the same prompt again) or run on Ray."""
        if self.mode != "batch":
            return TeacherCapabilities(price=self.price, max_cost=self.max_cost)
        return TeacherCapabilities(
            price=self.price,
            max_cost=self.max_cost,
            batch=True,
            reask_refused="reask is not available with {teacher}.mode: batch (a follow-up batch asks the same prompt "
            "again): use on_invalid: resample, or mode: online",
            ray_refused="the Batch API does not run on Ray: drop {teacher}.ray, or use mode: online",
        )

    def create_backend(self) -> Backend:
        """The backend (:mod:`annotator.backends.openai_compat`, imported here: it loads the OpenAI SDK)."""
        from annotator.backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(self)

    @property
    def location(self) -> str:
        return self.base_url or self.backend

    def ray_placement(self, resources: dict[str, float], workers: int | None) -> RayPlacement:
        """One API client per CPU; ``rpm`` / ``tpm`` are the account's limits, so each of the n clients paces at
        its share."""
        n, per_actor, inner = super().ray_placement(resources, workers)
        shares = {k: max(1, v // n) for k in ("rpm", "tpm") if (v := getattr(self, k))}
        return n, per_actor, inner.model_copy(update=shares)
