"""Token estimates, prices and the run budget: the ``price`` and ``max_cost`` a teacher declares in its capabilities
(:meth:`~annotator.backends.base.BaseTeacherConfig.capabilities`; ``teacher.price`` and ``teacher.max_cost`` of the
openai backend). A teacher without a price has runs without a cost.

Prices come from the pipeline file only (USD per million input, cached-input and output tokens): there is no
built-in price list to go stale. Estimates are a chars/4 count of the rendered prompt (the usual rule of thumb for
English with GPT-style tokenizers; no tokenizer is loaded), so they are approximate; actual costs come from the
usage each answer reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from annotator.backends.base import BaseTeacherConfig, PriceConfig
from annotator.errors import BudgetReached

CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators per chat message
REPLY_PRIMER_TOKENS = 3


def estimate_prompt_tokens(messages: Sequence[dict[str, str]]) -> int:
    """Estimated prompt tokens of a chat request: characters / 4 plus a few per message."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(messages) + REPLY_PRIMER_TOKENS


def call_cost(
    price: PriceConfig | None, prompt_tokens: int, cached_tokens: int, completion_tokens: int
) -> float | None:
    """USD for one call's usage (``cached_tokens`` is the part of ``prompt_tokens`` served from the provider's
    prompt cache); None without a price."""
    if price is None:
        return None
    cached = min(cached_tokens, prompt_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    return ((prompt_tokens - cached) * price.input + cached * cached_price + completion_tokens * price.output) / 1e6


class Budget:
    """What this output directory has spent, and ``teacher.max_cost``.

    Before a call, :meth:`reserve` books its estimated cost (prompt estimate plus ``max_tokens`` of output, an
    upper bound on the output side); when the spend so far plus the calls in flight plus this one would pass the
    budget it raises :class:`BudgetReached` instead, so no new call starts. :meth:`settle` swaps the booking for
    the call's actual cost. Calls in flight finish and are saved.
    """

    def __init__(self, price: PriceConfig | None, max_cost: float | None, spent_before: float = 0.0) -> None:
        self.price = price
        self.max_cost = max_cost
        self.spent_before = spent_before
        self.spent_now = 0.0  # by this process
        self._reserved = 0.0

    @classmethod
    def of(cls, teacher: BaseTeacherConfig) -> Budget:
        """The budget of ``teacher``: the ``price`` and ``max_cost`` it declares (none for a teacher without prices)."""
        caps = teacher.capabilities()
        return cls(caps.price, caps.max_cost)

    @property
    def spent(self) -> float:
        return self.spent_before + self.spent_now

    def estimate(self, prompt_tokens: int, max_tokens: int) -> float:
        """Upper-bound cost of one call (0.0 without a price)."""
        return call_cost(self.price, prompt_tokens, 0, max_tokens) or 0.0

    def reserve(self, estimate: float) -> None:
        if self.max_cost is not None and self.spent + self._reserved + estimate > self.max_cost:
            raise BudgetReached(
                f"budget reached: ${self.spent:.4f} spent in this output directory and the next call (up to "
                f"${estimate:.6f}) would pass teacher.max_cost=${self.max_cost:g}. Every answer so far is saved; "
                "raise teacher.max_cost and run the same command again to continue."
            )
        self._reserved += estimate

    def settle(self, estimate: float, actual: float | None) -> None:
        self._reserved -= estimate
        self.spent_now += actual or 0.0


@dataclass
class RunEstimate:
    """Tokens and cost of a whole run before any call (first attempts only: invalid answers asked again cost more).

    Prompt tokens: :func:`estimate_prompt_tokens` of every rendered prompt. Completion tokens: ``max_tokens`` per
    call (an upper bound), and a typical figure when earlier answers in the output directory tell one.
    """

    rows: int = 0
    rows_skipped: int = 0  # empty, too long or not renderable: never sent
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens_max: int = 0
    typical_completion: tuple[float, int] | None = None  # (tokens per call, from how many earlier calls)
    price: PriceConfig | None = None

    def add_prompt(self, prompt_tokens: int, samples: int, max_tokens: int) -> None:
        self.rows += 1
        self.calls += samples
        self.prompt_tokens += prompt_tokens * samples
        self.completion_tokens_max += max_tokens * samples

    def summary(self) -> dict[str, int | float | None]:
        """The estimate as plain numbers (``validate --estimate --json``)."""
        return {
            "rows": self.rows,
            "rows_skipped": self.rows_skipped,
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens_max": self.completion_tokens_max,
            "completion_tokens_typical": self.completion_tokens_typical,
            "cost_max_usd": self.cost_max,
            "cost_typical_usd": self.cost_typical,
        }

    @property
    def completion_tokens_typical(self) -> int | None:
        if self.typical_completion is None:
            return None
        return round(self.typical_completion[0] * self.calls)

    @property
    def cost_max(self) -> float | None:
        return call_cost(self.price, self.prompt_tokens, 0, self.completion_tokens_max)

    @property
    def cost_typical(self) -> float | None:
        typical = self.completion_tokens_typical
        return None if typical is None else call_cost(self.price, self.prompt_tokens, 0, typical)


@dataclass
class CostSummary:
    """What a run's annotations cost: the sum of the rows' ``cost`` (failed rows' calls included), per row."""

    total_usd: float
    rows: int

    @property
    def per_item_usd(self) -> float:
        return self.total_usd / self.rows if self.rows else 0.0

    def describe(self) -> str:
        return f"${self.total_usd:,.4f} for {self.rows:,} rows (${self.per_item_usd:.6f} per item)"


class CostTally:
    """Accumulates :class:`CostSummary` over records read one by one (``add(record.cost)``)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.rows = 0
        self.known = False

    def add(self, cost: float | None) -> None:
        self.rows += 1
        if cost is not None:
            self.known = True
            self.total += cost

    def summary(self) -> CostSummary | None:
        """None when no record carries a cost (the run had no teacher.price)."""
        return CostSummary(self.total, self.rows) if self.known else None
