"""Every number that comes from outside is checked and bounded before it is used.

* **From a server** (a teacher's answers and headers): token counts in ``usage`` (:func:`token_count`: a whole
  number in ``0..MAX_TOKENS``, else the answer is malformed), rate-limit counters (:func:`header_count`: unusable
  values are ignored) and waits (:func:`server_wait`: ``x-ratelimit-reset-*``, ``Retry-After``: finite, not
  negative, and capped at a bound with one warning naming the header, so a reset of ``1e9`` seconds cannot hold a
  run for decades in silence).
* **Files read whole** (a pipeline file, a prompt template): :func:`read_text_at_most` stops at a bound, so a path
  such as ``/dev/zero`` is a clear error, not every byte of memory.
* **From a pipeline file**: prices, budgets and times are finite and within bounds (the pydantic types below, used by
  the settings classes), so a price of ``.inf`` is refused at load instead of giving a NaN estimate and a budget
  that never stops.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

log = logging.getLogger(__name__)

MAX_TOKENS = 1_000_000_000
"""One call's token count above this is not a real usage figure."""
MAX_PRICE = 1_000_000.0
"""USD per million tokens: far above any provider's price, low enough that no cost overflows."""
MAX_SECONDS = 7 * 24 * 3600.0
"""A configured time (timeout, backoff, poll interval) of more than a week is a mistake."""

PricePerMillion = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)]
"""A price in USD per million tokens: finite, not negative."""
Usd = Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)]
"""A budget in USD: finite and positive."""
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
"""A configured duration: finite, positive, at most a week."""
PerMinute = Annotated[int, Field(gt=0, le=10**12)]
"""A rate (requests or tokens per minute)."""


def token_count(value: Any, field: str) -> int:
    """A server's token count: a whole number in ``0..MAX_TOKENS`` (None/absent is 0); else ``ValueError`` naming
    ``field`` and the value."""
    if value is None:
        return 0
    n: float | int
    if isinstance(value, bool):
        n = math.nan
    elif isinstance(value, (int, float)):
        n = value
    elif isinstance(value, str):
        try:
            n = float(value.strip())
        except ValueError:
            n = math.nan
    else:
        n = math.nan
    if not (math.isfinite(n) and n == int(n) and 0 <= n <= MAX_TOKENS):
        raise ValueError(f"{field}={value!r} is not a token count (a whole number in 0..{MAX_TOKENS:,})")
    return int(n)


def header_count(value: str | None) -> int | None:
    """A rate-limit counter header (``x-ratelimit-remaining-*``): its whole number, or None when absent or not a
    finite number (an unusable header is ignored, never a crash)."""
    if value is None:
        return None
    try:
        n = float(value)
    except ValueError:
        return None
    return int(n) if math.isfinite(n) else None


def server_wait(seconds: float | None, header: str, bound: float, setting: str, warned: set[str]) -> float | None:
    """A wait a server asked for (``header``), checked: None when absent or not a number (NaN), at least 0, and at
    most ``bound``. A longer wait is capped with one warning naming the header and the ``setting`` that bounds it
    (once per header in ``warned``, the caller's memory of what it already said)."""
    if seconds is None or math.isnan(seconds):
        return None
    if seconds <= bound:
        return max(0.0, seconds)
    if header not in warned:
        warned.add(header)
        log.warning(
            "the server's %s header asks to wait %.4gs; waiting at most %s=%gs instead", header, seconds, setting, bound
        )
    return bound


MAX_TEXT_FILE_BYTES = 10_000_000
"""A file read whole into memory (pipeline, template) holds at most this many bytes."""


def read_text_at_most(path: Path, limit: int = MAX_TEXT_FILE_BYTES) -> str | None:
    """``path``'s UTF-8 text, or None when it holds more than ``limit`` bytes (nothing past the bound is read, so a
    device or a pipe that never ends is safe). ``UnicodeDecodeError`` and ``OSError`` go to the caller."""
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    return None if len(data) > limit else data.decode("utf-8")
