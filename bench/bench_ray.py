"""`make bench`, Ray part: teacher scaling over Ray workers, and `predict` rows/s and memory (a benchmark, not a test).

* Teacher: N rows through one label pipeline (openai backend, ``--concurrency`` requests in flight per worker)
  against tests/fault_server.py answering after a fixed latency L: locally, then on a local Ray cluster with 1
  and 2 workers (``teacher.ray.workers``). Ideal rows/s = workers * C / L; the report gives ray2/ray1 (scaling)
  and ray1/local (Ray's overhead). Actor start-up is outside the clock (it is paid once per run).
* Predict: rows/s of ``predict_file`` locally and on Ray (1 actor), model loading (and on Ray the actor pool's
  start) included, and the peak RSS of a local ``annotator
  predict`` child over R rows (default 1,000,000) vs R/10 (flat means the ratio stays near 1). The student is a
  tiny randomly initialised BERT (1 layer, width 32, MiniLM's tokenizer) saved in train-student's layout: the
  code path is the real one, the model small enough that a million rows take minutes on 2 cores.

Writes runs/bench/bench_ray.json. Options: --rows 240 --concurrency 4 --latency 0.5 --predict-rows 4000
--rows-memory 1000000 (0 skips).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))  # the fault server and its client are the tests' own
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

from bench_pipeline import pipeline_yaml, write_input  # noqa: E402  (after the sys.path set-up above)


def start_ray() -> Any:
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        object_store_memory=300_000_000,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    return ray


def teacher_rows_per_s(yaml_path: Path, workers: int | None) -> float:
    """rows/s of one cold-cache run; ``workers`` None: local."""
    import shutil

    from annotator.backends import RayConfig, build_backend
    from annotator.config import load_config
    from annotator.engine import Pipeline

    cfg = load_config(yaml_path)
    shutil.rmtree(cfg.output.dir, ignore_errors=True)
    if workers:
        cfg.teacher.ray = RayConfig(workers=workers)

    async def go() -> float:
        backend = build_backend(cfg.teacher)
        try:
            t0 = time.perf_counter()
            manifest = await Pipeline(cfg, backend=backend).run()
            elapsed = time.perf_counter() - t0
        finally:
            await backend.aclose()
        assert manifest.rows_ok == manifest.rows_total and manifest.cache_hits == 0, manifest
        return manifest.rows_total / elapsed

    return asyncio.run(go())


def teacher_scaling(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from servers import start_fault_server, stop_fault_server

    server = start_fault_server(latency=args.latency)
    try:
        server.reset(latency=args.latency, record_times=False)
        inp = write_input(work / "teacher.csv", args.rows)
        yaml_path = pipeline_yaml(work, inp, server.base_url, args.concurrency, args.latency)
        ideal = args.concurrency / args.latency
        res = {
            "rows": args.rows,
            "latency_s": args.latency,
            "concurrency_per_worker": args.concurrency,
            "ideal_rows_per_s_per_worker": ideal,
            "local": teacher_rows_per_s(yaml_path, None),
        }
        for n in (1, 2):
            res[f"ray_{n}"] = teacher_rows_per_s(yaml_path, n)
        res["scaling_ray2_over_ray1"] = res["ray_2"] / res["ray_1"]
        res["ray1_over_local"] = res["ray_1"] / res["local"]
        return res
    finally:
        stop_fault_server(server)


def tiny_student(out: Path) -> Path:
    """A student folder (metrics.json + model/) holding a 1-layer BERT of width 32 with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from annotator.student.models import packaged_minilm_dir

    labels = ["politics", "economy", "sport"]
    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    model_dir = out / "model"
    BertForSequenceClassification(cfg).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(packaged_minilm_dir()).save_pretrained(model_dir)
    (out / "metrics.json").write_text(
        json.dumps({"label_names": labels, "multi_label": False, "train_config": {"max_length": 32}})
    )
    return out


def predict_rows_per_s(student: Path, inp: Path, out: Path, on_ray: bool) -> float:
    from annotator.inputs import InputConfig
    from annotator.student.predict import PredictOptions, load_student_info, local_labeler, predict_file
    from annotator.student.ray_predict import ray_labeler

    info = load_student_info(student)
    labeler = ray_labeler(info, 256, workers=1) if on_ray else local_labeler(info, "cpu", 256)
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    s = predict_file(info, InputConfig(path=inp), PredictOptions(out=out, batch_size=256), labeler)
    return s.predicted / (time.perf_counter() - t0)


def predict_bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    student = tiny_student(work / "student")
    inp = write_input(work / "predict.csv", args.predict_rows)
    res: dict[str, Any] = {
        "student": "tiny BERT (1 layer, width 32), MiniLM tokenizer",
        "rows": args.predict_rows,
        "local_rows_per_s": predict_rows_per_s(student, inp, work / "p_local.jsonl", False),
        "ray_1_actor_rows_per_s": predict_rows_per_s(student, inp, work / "p_ray.jsonl", True),
    }
    if args.rows_memory:
        big = write_input(work / "predict_big.csv", args.rows_memory)
        small = write_input(work / "predict_small.csv", args.rows_memory // 10)
        res["memory_rows"] = args.rows_memory
        res["peak_rss_mb_big"] = _child_peak(student, big, work / "p_big.jsonl")
        res["peak_rss_mb_tenth"] = _child_peak(student, small, work / "p_small.jsonl")
        res["peak_ratio_big_over_tenth"] = res["peak_rss_mb_big"] / res["peak_rss_mb_tenth"]
    return res


def _child_peak(student: Path, inp: Path, out: Path) -> float:
    """Peak RSS of an `annotator predict` child, read by a fresh parent (RUSAGE_CHILDREN keeps the max of all)."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)"
    )
    cmd = [
        str(Path(sys.executable).with_name("annotator")),
        "predict",
        str(student),
        str(inp),
        "--out",
        str(out),
        "--quiet",
        "--batch-size",
        "256",
        "--device",
        "cpu",
    ]
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True, timeout=7200, cwd=str(REPO)
    )
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description="annotator on Ray: teacher scaling, predict rows/s and memory")
    ap.add_argument("--rows", type=int, default=240)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--predict-rows", type=int, default=4000)
    ap.add_argument("--rows-memory", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    args = ap.parse_args()
    os.environ.update(
        {
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    work = args.out / "ray_work"
    work.mkdir(parents=True, exist_ok=True)
    ray = start_ray()
    try:
        report = {"teacher": teacher_scaling(args, work), "predict": predict_bench(args, work)}
    finally:
        ray.shutdown()
    (args.out / "bench_ray.json").write_text(json.dumps(report, indent=2))
    t, p = report["teacher"], report["predict"]
    print(
        f"teacher ({t['rows']} rows, L={t['latency_s']}s, C={t['concurrency_per_worker']}/worker, "
        f"ideal {t['ideal_rows_per_s_per_worker']:.1f} rows/s per worker)"
    )
    print(f"  local {t['local']:.2f} rows/s   ray x1 {t['ray_1']:.2f}   ray x2 {t['ray_2']:.2f}")
    print(f"  scaling ray2/ray1 = {t['scaling_ray2_over_ray1']:.2f}   overhead ray1/local = {t['ray1_over_local']:.2f}")
    print(
        f"predict ({p['rows']} rows, {p['student']}): local {p['local_rows_per_s']:.0f} rows/s, "
        f"ray x1 {p['ray_1_actor_rows_per_s']:.0f} rows/s"
    )
    if "memory_rows" in p:
        print(
            f"  peak RSS: {p['memory_rows']:,} rows {p['peak_rss_mb_big']:.0f} MB, a tenth "
            f"{p['peak_rss_mb_tenth']:.0f} MB, ratio {p['peak_ratio_big_over_tenth']:.2f}"
        )


if __name__ == "__main__":
    main()
