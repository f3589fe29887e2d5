"""Client-side rate limits for API teachers: requests and tokens per minute (``teacher.rpm`` / ``teacher.tpm``).

A :class:`RateLimiter` paces calls so the account's limits are not hit in the first place (a 429 costs a retry and
a wait), instead of discovering them by failing:

* **Pacing** (generic cell rate algorithm, no burst): each call moves a "next free slot" clock forward by
  ``60 / rpm`` seconds for the request and ``tokens * 60 / tpm`` seconds for its tokens; a call waits until both
  clocks have passed. Over any window the calls sent stay within the per-minute rates (plus the one call that
  opens the window). The clocks run at :data:`HEADROOM` (95%) of the configured rates, so network jitter (two
  calls sent 1/rate apart arriving closer together) does not push a call over a limit the server measures.
* **Tokens** are estimated before sending (rendered prompt chars / 4 plus ``max_tokens``, the figure providers
  count a request against the limit with) and corrected with the response's usage afterwards (the difference is
  given back to, or taken from, the token clock).
* **Server headers**: ``x-ratelimit-remaining-requests`` / ``-tokens`` and ``x-ratelimit-reset-requests`` /
  ``-tokens`` (OpenAI style durations such as ``1s``, ``6m0s``, ``20ms``) are read from every answer and 429;
  when the server says a budget is used up, no call is sent before its reset time. This works without
  ``rpm``/``tpm`` too (then the headers alone pace the calls).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping

from annotator.bounds import header_count, server_wait

log = logging.getLogger(__name__)

HEADROOM = 0.95  # pace at this share of teacher.rpm / teacher.tpm

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None) -> float | None:
    """Seconds in an ``x-ratelimit-reset-*`` value: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"0.5"`` (plain seconds).
    Unbounded (``"inf"``, ``"1e9"``): the limiter caps it (:func:`annotator.bounds.server_wait`)."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION_RE.findall(value)
    if not parts:
        return None
    return sum(float(n) * _UNIT_S[unit] for n, unit in parts)


class RateLimiter:
    """Paces calls to at most ``rpm`` requests and ``tpm`` tokens per minute (either may be None: no limit)."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_wait: float = 60.0,
    ) -> None:
        self.rpm = rpm * HEADROOM if rpm else None
        self.tpm = tpm * HEADROOM if tpm else None
        self._clock = clock
        self._next_request = 0.0  # the earliest time the next request may go (rpm clock)
        self._next_token = 0.0  # the same for the token clock
        self._hold_until = 0.0  # the server said a budget is used up until then
        self._lock = asyncio.Lock()
        self.waited_s = 0.0  # total time calls were held back (for logs and tests)
        self.max_wait = max_wait  # longest hold a server's reset header gets (teacher.max_backoff)
        self._warned: set[str] = set()  # headers whose too-long wait was already reported

    async def acquire(self, tokens: int) -> None:
        """Wait until a call estimated at ``tokens`` tokens may be sent, and book it."""
        async with self._lock:
            now = self._clock()
            start = max(now, self._next_request, self._next_token, self._hold_until)
            if self.rpm:
                self._next_request = start + 60.0 / self.rpm
            if self.tpm:
                self._next_token = start + tokens * 60.0 / self.tpm
            delay = start - now
            if delay > 0:
                self.waited_s += delay
                # sleeping under the lock keeps the calls in booking order (no starvation, no overtaking)
                await asyncio.sleep(delay)

    def correct(self, estimated: int, actual: int) -> None:
        """A call booked at ``estimated`` tokens used ``actual``: give back (or take) the difference."""
        if self.tpm and actual > 0:
            self._next_token += (actual - estimated) * 60.0 / self.tpm

    def observe(self, headers: Mapping[str, str] | None, tokens_next: int = 1) -> None:
        """Adapt to the server's ``x-ratelimit-*`` headers (an answer's or a 429's)."""
        if not headers:
            return
        now = self._clock()
        remaining_requests = header_count(headers.get("x-ratelimit-remaining-requests"))
        if remaining_requests is not None and remaining_requests < 1:
            self._hold(now, headers, "requests")
        remaining_tokens = header_count(headers.get("x-ratelimit-remaining-tokens"))
        if remaining_tokens is not None and remaining_tokens < tokens_next:
            self._hold(now, headers, "tokens")

    def _hold(self, now: float, headers: Mapping[str, str], what: str) -> None:
        header = f"x-ratelimit-reset-{what}"
        reset = server_wait(
            parse_reset(headers.get(header)), header, self.max_wait, "teacher.max_backoff", self._warned
        )
        if reset is None:
            return
        until = now + reset
        if until > self._hold_until:
            log.debug("server reports its %s budget used up; holding calls for %.3fs", what, reset)
            self._hold_until = until
