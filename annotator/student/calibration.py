"""Calibrated student probabilities: temperature scaling fit on the validation split.

Temperature scaling (Guo, Pleiss, Sun and Weinberger 2017, "On Calibration of Modern Neural Networks", ICML):
divide the logits by one scalar T > 0 fit by minimising the negative log-likelihood on held-out (validation)
logits. The predicted label never changes (argmax, and for multi-label the sign of each logit, are invariant),
only the confidence does. T is saved in the model's ``config.json`` under ``student_temperature`` so every
later prediction uses it (``saved_temperature``). ECE is the audit's (``annotator.audit.calibration``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TEMPERATURE_KEY = "student_temperature"
METHOD = "temperature scaling (Guo et al. 2017): T minimises the NLL of the validation logits"
_LOG_T_BOUNDS = (-3.0, 3.0)  # T in [0.05, 20.09]
# Below this many validation items T is not fit (left at 1): on 12 items T ran to its upper bound and made the
# test ECE worse (0.017 -> 0.080 on Rotten Tomatoes); Guo et al. fit on thousands. train-student
# --min-calibration-items overrides it.
MIN_FIT_ITEMS = 30


def saved_temperature(config: Any) -> float:
    """The temperature stored with a saved student (1.0 for models saved without one)."""
    t = getattr(config, TEMPERATURE_KEY, None)
    return float(t) if isinstance(t, (int, float)) and t > 0 else 1.0


def probabilities(logits: np.ndarray, multi_label: bool, temperature: float = 1.0) -> np.ndarray:
    """Softmax (or per-label sigmoid when multi-label) of ``logits / temperature``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if multi_label:
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, targets: np.ndarray, multi_label: bool, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood. ``targets``: label ids, or a 0/1 matrix when multi-label."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if multi_label:
        y = np.asarray(targets, dtype=np.float64)
        # log(1 + exp(-|z|)) + max(z, 0) - z*y: binary cross-entropy on logits, numerically stable
        return float(np.mean(np.logaddexp(0.0, z) - z * y))
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(z)), np.asarray(targets, dtype=np.int64)]))


def all_correct(logits: np.ndarray, targets: np.ndarray, multi_label: bool) -> bool:
    """True when every prediction on these logits is right: then the NLL falls without limit as T -> 0."""
    _, correct = confidence_and_correct(probabilities(logits, multi_label), targets, multi_label)
    return bool(correct.all())


def fit_temperature(logits: np.ndarray, targets: np.ndarray, multi_label: bool) -> float:
    """T > 0 minimising the validation NLL (bounded 1-D search over log T).

    1.0 (no scaling) when there is nothing to fit: no items, or every prediction right (the NLL would push T to
    its lower bound and make the student claim certainty it has not earned).
    """
    from scipy.optimize import minimize_scalar

    if len(logits) == 0 or all_correct(logits, targets, multi_label):
        return 1.0
    res = minimize_scalar(
        lambda log_t: nll(logits, targets, multi_label, math.exp(log_t)), bounds=_LOG_T_BOUNDS, method="bounded"
    )
    best = math.exp(float(res.x))
    # never worse than leaving the model alone
    return best if nll(logits, targets, multi_label, best) <= nll(logits, targets, multi_label) else 1.0


def at_search_bound(temperature: float) -> bool:
    """True when a fitted T sits at an end of the search interval: the NLL wanted a more extreme T than allowed."""
    log_t = math.log(temperature)
    return any(abs(log_t - b) < 1e-3 for b in _LOG_T_BOUNDS)


def confidence_and_correct(probs: np.ndarray, targets: np.ndarray, multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction: the confidence in it and whether it is right.

    Single-label: top probability vs ``targets`` (label ids; -1 = a label outside the set, always wrong).
    Multi-label: every (item, label) decision at 0.5 is one prediction with confidence max(p, 1 - p).
    """
    p = np.asarray(probs, dtype=np.float64)
    if multi_label:
        y = np.asarray(targets, dtype=bool)
        return np.maximum(p, 1 - p).ravel(), ((p >= 0.5) == y).ravel()
    t = np.asarray(targets, dtype=np.int64)
    return p.max(axis=1), p.argmax(axis=1) == t


def ece(probs: np.ndarray, targets: np.ndarray, multi_label: bool) -> float | None:
    """Expected calibration error (10 equal-width bins), via the audit's implementation."""
    from annotator.audit.calibration import calibrate  # here: the CLI imports this module, the audit pulls in scipy

    if len(probs) == 0:
        return None
    conf, correct = confidence_and_correct(probs, targets, multi_label)
    return calibrate(conf, correct).ece
