"""Kill a run midway (SIGKILL, or Ctrl-C = SIGINT), rerun it, and check that the final output has each input row
exactly once and that rows finished before the kill were never sent to the teacher again.

"Finished before the kill" is read from the run's SQLite cache after the process is dead: the fault server
echoes each item's text in the ``rationale`` field, so every cached answer names its row.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

from conftest import LABELS, out_dir_of, read_annotations, rows_of, spawn_cli
from fault_server import expected_label

N_ROWS = 240


def finished_texts(run_dir: Path) -> set[str]:
    """Texts whose answer is in the cache (committed before the process died)."""
    conn = sqlite3.connect(str(run_dir / "cache.sqlite"))
    try:
        rows = conn.execute("SELECT output FROM samples WHERE ok = 1").fetchall()
    finally:
        conn.close()
    texts = set()
    for (output,) in rows:
        rationale = json.loads(output)["rationale"]
        assert rationale.startswith("echo: ")
        texts.add(rationale[len("echo: ") :])
    return texts


def interrupt_midway(p: Path, server, sig: signal.Signals, after_requests: int) -> str:
    """Start `annotator run`, wait until the server has seen ``after_requests`` more requests, send ``sig``,
    wait for the process to end; return its output."""
    start = server.stats()["total"]
    proc = spawn_cli("run", str(p), "--quiet")
    try:
        server.wait_for(lambda s: s["total"] >= start + after_requests or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, "the run finished before it could be interrupted:\n" + (
            proc.stdout.read() if proc.stdout else ""
        )
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, out
        assert "Traceback" not in out, out
        assert "interrupted" in out and "Run the same command again to resume" in out, out
    return out


@pytest.mark.parametrize(
    "signals",
    [
        pytest.param([signal.SIGKILL], id="kill-9"),
        pytest.param([signal.SIGINT], id="ctrl-c"),
        pytest.param([signal.SIGKILL, signal.SIGINT], id="kill-9-then-ctrl-c"),
    ],
)
@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_interrupted_run_resumes_without_asking_again(server, make_pipeline, run_cli, signals):
    texts = [f"crash row {i:04d} about the central bank" for i in range(N_ROWS)]
    server.configure(latency=0.06)
    p = make_pipeline(
        rows_of(texts),
        task={"rationale": True},
        teacher={"base_url": server.base_url, "concurrency": 8, "timeout": 5.0, "max_retries": 2},
    )
    run_dir = out_dir_of(p)

    finished: set[str] = set()
    for sig in signals:
        interrupt_midway(p, server, sig, after_requests=60)
        now_finished = finished_texts(run_dir)
        assert finished <= now_finished  # nothing that was saved is ever lost
        finished = now_finished
    assert 0 < len(finished) < N_ROWS, len(finished)
    at_kill = server.stats()["by_item"]
    assert not (run_dir / "annotations.jsonl").exists()  # an interrupted run publishes nothing half-done

    server.configure(latency=0.0)  # the latency kept calls in flight at the interrupt; the rerun need not wait
    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = server.stats()["by_item"]

    again = sorted(t for t in finished if after[t] != at_kill[t])
    assert not again, f"{len(again)} finished rows were sent to the teacher again, e.g. {again[:3]}"
    for t in set(texts) - finished:
        assert after[t] - at_kill.get(t, 0) == 1, t  # the unfinished ones: asked exactly once by the rerun

    records = read_annotations(run_dir)
    assert [r["id"] for r in records] == [f"r{i:05d}" for i in range(N_ROWS)]  # each row exactly once, in order
    assert all(r["status"] == "ok" for r in records)
    assert all(r["label"] == expected_label(r["text"], LABELS) for r in records)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["rows_total"] == N_ROWS
    assert manifest["cache_hits"] == len(finished)
    assert manifest["teacher_calls"] == N_ROWS - len(finished)

    if len(signals) > 1:
        return
    # a finished run rerun asks nothing
    before = server.stats()["total"]
    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0
    assert server.stats()["total"] == before
    assert [r["id"] for r in read_annotations(run_dir)] == [f"r{i:05d}" for i in range(N_ROWS)]


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_kill_during_validation_retries_keeps_bounds(server, make_pipeline, run_cli):
    """Rows whose answers were invalid and already recorded as failed are not retried after a crash either."""
    texts = [("[[malformed]] " if i % 10 == 0 else "") + f"row {i:04d} on elections" for i in range(200)]
    server.configure(latency=0.05)
    p = make_pipeline(
        rows_of(texts),
        task={"rationale": True},
        validation={"max_attempts": 2},
        teacher={"base_url": server.base_url, "concurrency": 8, "timeout": 5.0},
    )
    run_dir = out_dir_of(p)
    interrupt_midway(p, server, signal.SIGKILL, after_requests=90)
    conn = sqlite3.connect(str(run_dir / "cache.sqlite"))
    failed_raw = [r[0] for r in conn.execute("SELECT raw FROM samples WHERE ok = 0")]
    n_failed_saved = len(failed_raw)
    conn.close()
    at_kill = server.stats()["by_item"]
    assert n_failed_saved > 0

    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = server.stats()["by_item"]
    records = read_annotations(run_dir)
    assert len(records) == len({r["id"] for r in records}) == 200
    bad = [t for t in texts if t.startswith("[[malformed]]")]
    # an invalid row whose failure was saved is a cache hit; every other one gets a full round of attempts
    reasked = [t for t in bad if after[t] > at_kill.get(t, 0)]
    assert len(reasked) == len(bad) - n_failed_saved
    assert all(after[t] - at_kill.get(t, 0) == 2 for t in reasked)
    assert all(
        r["status"] == "failed" and "not valid JSON" in r["error"]
        for r in records
        if r["text"].startswith("[[malformed]]")
    )
    assert sum(r["status"] == "ok" for r in records) == 200 - len(bad)
