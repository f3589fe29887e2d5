"""Percentile bootstrap over items.

Items (not single ratings) are resampled with replacement, so every rating of an item travels together and the
dependence between raters on one item is kept. All statistics of one resample are computed from the same item
sample. Resamples where a statistic is undefined (e.g. no variation) are ignored for that statistic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def bootstrap_ci(
    stat: Callable[[np.ndarray], dict[str, float]],
    n_items: int,
    n_boot: int,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """``stat(idx)`` computes every statistic on the items ``idx``; returns ``{name: (low, high)}``."""
    if n_boot <= 0 or n_items < 2:
        return {}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = rng.integers(0, n_items, size=n_items)
        for name, value in stat(idx).items():
            samples.setdefault(name, []).append(value)
    tail = (1.0 - confidence) / 2.0 * 100.0
    out: dict[str, tuple[float, float]] = {}
    for name, values in samples.items():
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if len(arr) < max(10, n_boot // 10):
            out[name] = (math.nan, math.nan)
        else:
            lo, hi = np.percentile(arr, [tail, 100.0 - tail])
            out[name] = (float(lo), float(hi))
    return out
