"""PNG plots for the audit (matplotlib with the Agg backend, imported lazily)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from annotator.audit.calibration import Calibration
from annotator.audit.results import Estimate, Slices
from annotator.rundir import atomic_write_bytes


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    """The figure as a PNG (120 dpi); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    _plt().close(fig)
    return buf.getvalue()


def save_png(fig: Any, path: Path) -> None:
    """Write the figure as a PNG (:func:`png_bytes`), atomically (:func:`annotator.rundir.atomic_write_bytes`)."""
    atomic_write_bytes(path, png_bytes(fig))


def confusion_matrix_png(cm: np.ndarray, labels: list[str], path: Path) -> None:
    plt = _plt()
    k = len(labels)
    size = max(4.5, 0.7 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("teacher label")
    ax.set_ylabel("human majority label")
    ax.set_title("Teacher vs human majority (colour: row share)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    save_png(fig, path)


def per_class_agreement_png(
    labels: list[str], human: list[float | None], teacher: list[float | None], low: list[bool], path: Path
) -> None:
    plt = _plt()
    k = len(labels)
    x = np.arange(k)
    h = np.array([np.nan if v is None else v for v in human], dtype=float)
    t = np.array([np.nan if v is None else v for v in teacher], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * k + 2), 4.2))
    ax.bar(x - 0.2, np.nan_to_num(h), width=0.4, label="human-human", color="#4C72B0")
    ax.bar(x + 0.2, np.nan_to_num(t), width=0.4, label="teacher-human", color="#DD8452")
    for i, flag in enumerate(low):
        if flag:
            ax.text(x[i], 1.02, "humans\ndisagree", ha="center", va="bottom", fontsize=7, color="#C44E52")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("specific agreement")
    ax.set_title("Per-class agreement: human-human vs teacher-human")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def calibration_png(cal: Calibration, path: Path) -> None:
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    filled = [b for b in cal.bins if b.n]
    centers = [(b.low + b.high) / 2 for b in cal.bins]
    width = cal.bins[0].high - cal.bins[0].low if cal.bins else 0.1
    ax.bar(
        [(b.low + b.high) / 2 for b in filled],
        [b.accuracy for b in filled],
        width=width * 0.9,
        alpha=0.7,
        color="#4C72B0",
        edgecolor="black",
        label="accuracy vs human majority",
    )
    ax.plot(
        [b.confidence for b in filled],
        [b.accuracy for b in filled],
        "o",
        color="#DD8452",
        label="(mean confidence, accuracy)",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE = {cal.ece:.3f}, n = {cal.n})")
    ax.legend(loc="upper left", fontsize=8)
    ax2.bar(centers, [b.n for b in cal.bins], width=width * 0.9, color="#8C8C8C")
    ax2.set_xlabel("teacher confidence")
    ax2.set_ylabel("items")
    fig.tight_layout()
    save_png(fig, path)


def _point_and_err(estimates: list[Estimate | None]) -> tuple[np.ndarray, np.ndarray]:
    """Bar heights (nan -> 0) and asymmetric error bars (0 where there is no interval)."""
    v = np.array([np.nan if e is None or e.value is None else e.value for e in estimates], dtype=float)
    lo = np.array([0.0 if e is None or e.ci_low is None or e.value is None else e.value - e.ci_low for e in estimates])
    hi = np.array(
        [0.0 if e is None or e.ci_high is None or e.value is None else e.ci_high - e.value for e in estimates]
    )
    return np.nan_to_num(v), np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)])


def agreement_by_slice_png(s: Slices, path: Path) -> None:
    """Human-human next to teacher-human kappa and the teacher's accuracy, per slice, with CI error bars."""
    plt = _plt()
    x = np.arange(len(s.slices))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(s.slices) + 2), 4.2))
    series = [
        ("human-human kappa", [c.human_human_kappa for c in s.slices], "#4C72B0"),
        ("teacher-human kappa", [c.teacher_human_kappa for c in s.slices], "#DD8452"),
        ("teacher accuracy", [c.accuracy for c in s.slices], "#55A868"),
    ]
    for i, (name, ests, colour) in enumerate(series):
        v, err = _point_and_err(ests)
        ax.bar(x + (i - 1) * 0.27, v, width=0.27, yerr=err, capsize=2, label=name, color=colour)
    for i, c in enumerate(s.slices):
        if c.too_small:
            ax.text(x[i], 0.05, "too small", ha="center", va="bottom", fontsize=7, color="#C44E52", rotation=90)
    ax.set_xticks(x, [f"{c.value}\n(n={c.n_items})" for c in s.slices], rotation=30, ha="right")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.3)
    ax.set_ylabel("agreement / accuracy")
    ax.set_title(f"Agreement by {s.column}")
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
