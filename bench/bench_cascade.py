"""`make bench-cascade`: does the cascade's guarantee hold, and what does it save? (a benchmark, not a test).

A corpus of ``--items`` rows (default 4,000, 4 labels) with known item-level behaviour, in three kinds of item:

* 70% clear: the human majority right 96%, the cheap teacher right 97% per sample, the strong one 98%;
* 18% clear but hard for the cheap teacher: humans 96%, cheap 35% per sample, strong 85%;
* 12% ambiguous: humans right 30%, cheap 40%, strong 55%

(each probability jittered per item; a wrong answer is the item's one confusable label 75% of the time, a human
error 60% of the time). The cheap teacher answers ``samples: 5`` per row, the strong one ``samples: 3`` (the label
is the majority, the confidence the vote share), so the cheap teacher's label is right ~81% of the time and its vote
share is informative; the strong teacher is right ~94% at 10x the price per token (6x per row); the human majority
label is right ~88%.

1. **Both teachers answer every row through the real engine** (the cascade's stage pipelines, ``run_stage``, with
   an in-process simulated backend in place of the HTTP client and ``teacher.price`` for costs): the vote shares,
   labels, tokens and USD per row come from annotator itself.
2. **The guarantee over resampled human samples**: ``--draws`` (default 300) human samples of 200 to 300 rows,
   drawn at random, or with ``annotator sample``'s ``uncertain`` design (strata = the cheap teacher's confidence
   bands, low confidence oversampled, weights 1/pi); each is calibrated (``annotator.cascade.guarantee``, the code
   ``annotator calibrate`` runs) and the thresholds applied to the whole corpus, where the true agreement of the
   kept rows with the human majority is known. Reported: the share of samples whose kept rows agree less than the
   target (must be <= delta), how often anything is certified, the mean true agreement of the kept rows, the share
   of rows kept by each stage and left to humans (over all samples: one that certifies nothing keeps nothing), and,
   over the samples where both are certified, the cost of the cascade over the cost of the strong teacher alone on
   every row calibrated the same way at the same target (and per kept row; with the strong teacher's own coverage).
3. **End to end once** (at the lowest target): a 250-row human sheet, ``calibrate`` and ``CascadeRun`` (what
   ``annotator calibrate`` and ``annotator run`` do), from the answers of step 1 (all cache hits): per stage rows
   asked and kept, tokens, cost, the report's cost ratio, the true agreement of the kept rows, and a check that the
   run kept exactly the rows the thresholds say.

Prints a Markdown table (the README's) and writes runs/bench/cascade.json. About 2-4 minutes on 2 shared cores.
Options: --items 4000 --draws 300 --targets 0.85,0.9 --delta 0.1 --seed 0 --big-sample 500 (one more row at the
highest target with human samples of 500-600 rows).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from annotator.audit import sampling as sp  # noqa: E402
from annotator.backends import Generation, GenerationRequest  # noqa: E402
from annotator.cascade import guarantee as g  # noqa: E402
from annotator.costs import estimate_prompt_tokens  # noqa: E402

LABELS = ["politics", "economy", "sport", "science"]
KINDS = {  # share, humans right, cheap right per sample, strong right per sample (each +- jitter)
    "clear": (0.70, (0.96, 0.03), (0.97, 0.02), (0.98, 0.01)),
    "hard for cheap": (0.18, (0.96, 0.03), (0.35, 0.10), (0.85, 0.05)),
    "ambiguous": (0.12, (0.30, 0.10), (0.40, 0.10), (0.55, 0.10)),
}
SAMPLES = {"cheap": 5, "strong": 3}
PRICES = {"cheap": {"input": 0.15, "output": 0.6}, "strong": {"input": 1.5, "output": 6.0}}
COMPLETION_TOKENS = 8


@dataclass
class Population:
    """Known truth: each item's true label, the human majority label, and every teacher sample's answer."""

    truth: np.ndarray
    human: np.ndarray
    kind: np.ndarray
    answers: dict[str, np.ndarray]  # stage -> (items, samples) label indices


def population(n: int, seed: int) -> Population:
    rng = np.random.default_rng(seed)
    names = list(KINDS)
    kind = rng.choice(len(names), size=n, p=[KINDS[k][0] for k in names])
    truth = rng.integers(0, len(LABELS), size=n)
    confusable = (truth + rng.integers(1, len(LABELS), size=n)) % len(LABELS)

    def prob(col: int) -> np.ndarray:
        mean = np.array([KINDS[k][col][0] for k in names])[kind]
        spread = np.array([KINDS[k][col][1] for k in names])[kind]
        return np.clip(mean + spread * rng.uniform(-1, 1, size=n), 0.01, 1.0)

    def noisy(p: np.ndarray, samples: int | None, to_confusable: float) -> np.ndarray:
        """Answers right with probability ``p`` per item; a wrong one is the confusable label or another one."""
        shape = (n,) if samples is None else (n, samples)

        def col(a: np.ndarray) -> np.ndarray:
            return a if samples is None else a[:, None]

        right = rng.random(shape) < col(p)
        other = (col(truth) + rng.integers(1, len(LABELS), size=shape)) % len(LABELS)
        return np.where(right, col(truth), np.where(rng.random(shape) < to_confusable, col(confusable), other))

    human = noisy(prob(1), None, 0.6)
    return Population(
        truth,
        human,
        kind,
        {"cheap": noisy(prob(2), SAMPLES["cheap"], 0.75), "strong": noisy(prob(3), SAMPLES["strong"], 0.75)},
    )


class SimTeacher:
    """A :class:`annotator.backends.Backend` answering from the population: the row is found by its text
    (``item <i>``), the sample by the request's seed (``teacher.seed + k``)."""

    structured_mode = "json_schema"
    max_concurrency = 64

    def __init__(self, name: str, answers: np.ndarray):
        self.name = f"sim-{name}"
        self.model_id = f"sim:{name}"
        self.answers = answers

    async def generate(self, request: GenerationRequest) -> Generation:
        text = request.messages[-1]["content"]
        item = int(re.search(r"item (\d+)\b", text).group(1))  # type: ignore[union-attr]
        label = LABELS[int(self.answers[item, (request.seed or 0) % self.answers.shape[1]])]
        return Generation(
            text=json.dumps({"label": label}),
            finish_reason="stop",
            prompt_tokens=estimate_prompt_tokens(request.messages),
            completion_tokens=COMPLETION_TOKENS,
        )

    async def aclose(self) -> None:
        return None


def write_pipeline(work: Path, n: int, target: float) -> Path:
    with (work / "corpus.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"r{i:06d}", f"item {i} of the simulated corpus"])
    stages = [
        {
            "name": name,
            "teacher": {
                "backend": "openai",
                "model": f"sim-{name}",
                "samples": SAMPLES[name],
                "max_tokens": 16,
                "price": PRICES[name],
            },
        }
        for name in ("cheap", "strong")
    ]
    cfg = {
        "name": "bench_cascade",
        "input": {"path": "corpus.csv"},
        "task": {"type": "label", "labels": LABELS},
        "output": {"dir": "out"},
        "cascade": {"stages": stages, "target": target, "delta": 0.1},
    }
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Answers:
    """Per stage, per row (input order): label index, confidence, USD."""

    label: dict[str, np.ndarray]
    conf: dict[str, np.ndarray]
    cost: dict[str, np.ndarray]
    seconds: float


async def answer_everything(cfg: Any, backends: dict[str, SimTeacher], n: int) -> Answers:
    """Both stages on every row, through the real stage pipelines."""
    from annotator.cascade.stages import run_stage
    from annotator.records import iter_annotations

    out = Answers({}, {}, {}, 0.0)
    t0 = time.perf_counter()
    for k, name in enumerate(("cheap", "strong")):
        run = await run_stage(cfg, k, range(n), backends[name])
        recs = list(iter_annotations(run.dir))
        out.label[name] = np.array([LABELS.index(r.label) if r.label else -1 for r in recs])
        out.conf[name] = np.array([np.nan if r.confidence is None else r.confidence for r in recs])
        out.cost[name] = np.array([r.cost or 0.0 for r in recs])
    out.seconds = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------- resampling


def draw_sample(
    rng: np.random.Generator, ans: Answers, design: str, sizes: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and design weights of one human sample of ``sizes[0]`` to ``sizes[1]`` rows."""
    total = len(ans.conf["cheap"])
    n = min(int(rng.integers(sizes[0], sizes[1] + 1)), total)
    if design == "random":
        return rng.choice(total, size=n, replace=False), np.ones(n)
    cands = [sp.Candidate(str(i), "", "x", float(c)) for i, c in enumerate(ans.conf["cheap"])]
    sample = sp.draw(cands, n, "uncertain", int(rng.integers(1 << 31)), ["x"])
    return np.array([int(c.id) for c in sample.items]), 1.0 / np.array(sample.inclusion_prob)


def resample(
    pop: Population,
    ans: Answers,
    target: float,
    delta: float,
    draws: int,
    design: str,
    seed: int,
    sizes: tuple[int, int] = (200, 300),
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    wrong = {s: ans.label[s] != pop.human for s in ("cheap", "strong")}
    conf = [ans.conf["cheap"], ans.conf["strong"]]
    stats: dict[str, list[float]] = {
        k: []
        for k in (
            "fail",
            "cert",
            "cov_cheap",
            "cov_strong",
            "cov",
            "humans",
            "ratio",
            "alone_cov",
            "alone_fail",
            "agree",
            "kept_ratio",
        )
    }
    alone_cost = float(ans.cost["strong"].sum())
    for _ in range(draws):
        idx, w = draw_sample(rng, ans, design, sizes)
        data = [g.StageData(s, ans.conf[s][idx], wrong[s][idx]) for s in ("cheap", "strong")]
        choice = g.calibrate_cascade(data, w, target, delta)
        kept_by = g.apply_thresholds(conf, choice.thresholds)
        kept = kept_by >= 0
        alone = g.calibrate_cascade([data[1]], w, target, delta)
        alone_kept = g.apply_thresholds([conf[1]], alone.thresholds) >= 0
        stats["alone_fail"].append(float(alone_kept.any() and 1 - wrong["strong"][alone_kept].mean() < target))
        stats["alone_cov"].append(float(alone_kept.mean()))
        stats["cert"].append(float(kept.any()))
        stats["cov_cheap"].append(float((kept_by == 0).mean()))
        stats["cov_strong"].append(float((kept_by == 1).mean()))
        stats["cov"].append(float(kept.mean()))
        stats["humans"].append(float(1 - kept.mean()))
        if not kept.any():
            stats["fail"].append(0.0)
            continue
        agree = 1 - np.where(kept_by == 0, wrong["cheap"], wrong["strong"])[kept].mean()
        stats["agree"].append(float(agree))
        stats["fail"].append(float(agree < target))
        reach = g.reach_shares(kept_by, np.ones(len(kept_by)), choice.thresholds)
        cost = sum(
            float(ans.cost[s][(kept_by < 0) | (kept_by >= j)].sum()) if reach[j] else 0.0
            for j, s in enumerate(("cheap", "strong"))
        )
        if alone_kept.any():
            stats["ratio"].append(cost / alone_cost)
            stats["kept_ratio"].append((cost / kept.sum()) / (alone_cost / alone_kept.sum()))
    mean = {k: (float(np.mean(v)) if v else None) for k, v in stats.items()}
    return {
        "target": target,
        "delta": delta,
        "design": design,
        "sizes": list(sizes),
        "draws": draws,
        "failure_share": mean["fail"],
        "cost_per_kept_row_ratio_mean": mean["kept_ratio"],
        "certified_share": mean["cert"],
        "coverage_cheap": mean["cov_cheap"],
        "coverage_strong": mean["cov_strong"],
        "coverage": mean["cov"],
        "to_humans": mean["humans"],
        "true_agreement_mean": mean["agree"],
        "cost_ratio_mean": mean["ratio"],
        "cost_ratio_median": float(np.median(stats["ratio"])) if stats["ratio"] else None,
        "strong_alone_coverage": mean["alone_cov"],
        "strong_alone_failure_share": mean["alone_fail"],
    }


# ------------------------------------------------------------------------------------------- end to end


async def end_to_end(
    cfg: Any, pop: Population, ans: Answers, backends: dict[str, SimTeacher], work: Path, seed: int
) -> dict[str, Any]:
    """One human sheet of 250 random rows -> calibrate -> CascadeRun (every answer is a cache hit by now)."""
    from annotator.cascade.calibration import calibrate
    from annotator.cascade.runner import CascadeRun
    from annotator.records import iter_annotations

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pop.human), size=250, replace=False)
    humans = work / "humans.csv"
    with humans.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "annotator", "label"])
        w.writerows([f"r{i:06d}", "ann_1", LABELS[pop.human[i]]] for i in idx)
    t0 = time.perf_counter()
    cal = await calibrate(cfg, humans, backends)
    t1 = time.perf_counter()
    manifest = await CascadeRun(cfg, backends).run()
    t2 = time.perf_counter()
    kept = {int(r.id[1:]): r for r in iter_annotations(cfg.output.dir)}
    expected = g.apply_thresholds([ans.conf["cheap"], ans.conf["strong"]], cal.thresholds)
    same = all((expected[i] >= 0) == (i in kept) for i in range(len(expected)))
    agree = np.mean([LABELS.index(r.label or "") == pop.human[i] for i, r in kept.items()]) if kept else None
    report = json.loads((Path(cfg.output.dir) / "cascade" / "report.json").read_text())
    assert manifest.cascade is not None
    return {
        "thresholds": cal.thresholds,
        "certified": cal.certified,
        "statement": cal.statement,
        "stages": [s.model_dump() for s in manifest.cascade.stages],
        "rows_to_humans": manifest.cascade.rows_to_humans,
        "true_agreement_of_kept": agree,
        "cost_ratio_report": report["cost"]["ratio"],
        "run_matches_thresholds": same,
        "calibrate_s": t1 - t0,
        "run_s": t2 - t1,
        "teacher_calls_in_run": manifest.teacher_calls,
    }


# ------------------------------------------------------------------------------------------- main


def table(rows: list[dict[str, Any]]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    lines = [
        "| target | delta | human sample | draws | guarantee failed (<= delta) | certified | true agreement of kept "
        "| kept by cheap | kept by strong | to humans | cost / strong alone | per kept row | strong alone: kept |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            "-" if r["cost_ratio_mean"] is None else f"{r['cost_ratio_mean']:.2f} (median {r['cost_ratio_median']:.2f})"
        )
        per_kept = "-" if r["cost_per_kept_row_ratio_mean"] is None else f"{r['cost_per_kept_row_ratio_mean']:.2f}"
        sample = f"{r['design']}, {r['sizes'][0]}-{r['sizes'][1]}"
        lines.append(
            f"| {r['target']:g} | {r['delta']:g} | {sample} | {r['draws']} | {pct(r['failure_share'])} | "
            f"{pct(r['certified_share'])} | {pct(r['true_agreement_mean'])} | {pct(r['coverage_cheap'])} | "
            f"{pct(r['coverage_strong'])} | "
            f"{pct(r['to_humans'])} | {ratio} | {per_kept} | {pct(r['strong_alone_coverage'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--targets", default="0.85,0.9")
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--big-sample", type=int, default=500, help="One more row: human samples of N to N+100 rows.")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "cascade.json")
    args = ap.parse_args(argv)
    from annotator.config import load_config

    pop = population(args.items, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        targets = [float(t) for t in args.targets.split(",")]
        cfg = load_config(write_pipeline(work, args.items, min(targets)), [f"cascade.delta={args.delta}"])
        backends = {name: SimTeacher(name, pop.answers[name]) for name in ("cheap", "strong")}
        ans = asyncio.run(answer_everything(cfg, backends, args.items))
        facts = {
            "items": args.items,
            "humans_right": float((pop.human == pop.truth).mean()),
            "cheap_right": float((ans.label["cheap"] == pop.truth).mean()),
            "strong_right": float((ans.label["strong"] == pop.truth).mean()),
            "cheap_agrees_with_humans": float((ans.label["cheap"] == pop.human).mean()),
            "strong_agrees_with_humans": float((ans.label["strong"] == pop.human).mean()),
            "cost_per_row_usd": {s: float(ans.cost[s].mean()) for s in ans.cost},
            "engine_seconds_both_stages_every_row": ans.seconds,
        }
        print(
            f"corpus: {args.items} rows; humans right {facts['humans_right']:.1%}, cheap {facts['cheap_right']:.1%}, "
            f"strong {facts['strong_right']:.1%}; USD per row cheap {facts['cost_per_row_usd']['cheap']:.2e}, strong "
            f"{facts['cost_per_row_usd']['strong']:.2e}; both stages on every row through the engine in "
            f"{ans.seconds:.1f}s",
            flush=True,
        )
        rows = []
        for target in targets:
            for design in ("random", "uncertain"):
                t0 = time.perf_counter()
                rows.append(resample(pop, ans, target, args.delta, args.draws, design, args.seed + 1))
                print(f"target {target:g}, {design}: {time.perf_counter() - t0:.1f}s", flush=True)
        big = (args.big_sample, args.big_sample + 100)
        rows.append(resample(pop, ans, max(targets), args.delta, args.draws, "random", args.seed + 1, big))
        e2e = asyncio.run(end_to_end(cfg, pop, ans, backends, work, args.seed + 2))
    print()
    print(table(rows))
    print()
    print(
        f"end to end (target {min(targets):g}, delta {args.delta:g}, 250 random human rows): "
        f"thresholds {e2e['thresholds']}, "
        f"{e2e['rows_to_humans']} rows to humans, true agreement of kept rows "
        f"{e2e['true_agreement_of_kept']:.1%}, cost / strong alone {e2e['cost_ratio_report']:.2f}, run kept exactly "
        f"the rows the thresholds say: {e2e['run_matches_thresholds']}, teacher calls in the run "
        f"{e2e['teacher_calls_in_run']} (all cached), calibrate {e2e['calibrate_s']:.1f}s, run {e2e['run_s']:.1f}s"
    )
    for s in e2e["stages"]:
        print(
            f"  stage {s['name']}: threshold {s['threshold']}, asked {s['rows_asked']}, kept {s['rows_kept']}, "
            f"tokens {s['tokens']:,}, ${s['cost_usd'] or 0.0:.4f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"facts": facts, "resampling": rows, "end_to_end": e2e}, indent=2, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
