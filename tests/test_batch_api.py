"""teacher.mode: batch against the fake files + batches endpoints of the fault server (tests/batch_fake.py)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from conftest import kill_group, out_dir_of, read_annotations, rows_of, spawn_cli

BATCH = {"mode": "batch", "batch_poll_interval": 0.05}


def _run_ok(run_cli, yaml_path) -> None:
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 0, res.stderr


def test_batch_run_splits_validates_and_retries_invalid_rows(run_cli, make_pipeline, server):
    texts = [f"batch item {i}" for i in range(23)] + ["bad once [[schema:1]]", "bad always [[schema]]"]
    yaml_path = make_pipeline(
        rows_of(texts),
        server.base_url,
        teacher={**BATCH, "batch_max_requests": 10, "price": {"input": 1.25, "output": 5.0}},
    )
    _run_ok(run_cli, yaml_path)
    stats = server.stats()
    assert stats["total"] == 0  # not one online chat completion
    b = stats["batch"]
    # 25 requests in batches of at most 10 -> 3; then the two invalid rows, twice more (max_attempts=3)
    assert b["batches_created"] == 5 and b["batch_requests"] == 25 + 2 + 1
    records = {r["text"]: r for r in read_annotations(out_dir_of(yaml_path))}
    assert all(records[t]["status"] == "ok" and records[t]["attempts"] == 1 for t in texts[:23])
    assert records["bad once [[schema:1]]"]["status"] == "ok" and records["bad once [[schema:1]]"]["attempts"] == 2
    bad = records["bad always [[schema]]"]
    assert bad["status"] == "failed" and bad["attempts"] == 3 and "schema violation" in bad["error"]
    assert records["batch item 0"]["cost"] == (50 * 1.25 + 10 * 5.0) / 1e6
    manifest = json.loads((out_dir_of(yaml_path) / "run.json").read_text())
    assert manifest["teacher_calls"] == 28

    _run_ok(run_cli, yaml_path)  # finished: nothing is submitted again
    assert server.stats()["batch"]["batches_created"] == 5


def _committed_batch_ids(run_dir) -> list[str]:
    """Batch ids the run has committed to its cache (a reader sees only committed rows)."""
    try:
        conn = sqlite3.connect(f"file:{run_dir / 'cache.sqlite'}?mode=ro", uri=True)
    except sqlite3.OperationalError:  # not created yet
        return []
    try:
        return [r[0] for r in conn.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL")]
    except sqlite3.OperationalError:  # the table is not created yet
        return []
    finally:
        conn.close()


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_kill_after_upload_rerun_reattaches_instead_of_paying_twice(run_cli, make_pipeline, server):
    server.reset(batch_delay=1.5)  # the kill follows the batch's creation within milliseconds (it waits for an event)
    texts = [f"kill item {i}" for i in range(12)]
    yaml_path = make_pipeline(rows_of(texts), server.base_url, teacher=BATCH)
    proc = spawn_cli("run", str(yaml_path), "--quiet")
    try:
        server.wait_for(lambda s: s["batch"]["batches_created"] >= 1, timeout=60)
        deadline = time.monotonic() + 30  # the batch id is committed right after creation: wait for that commit
        while not _committed_batch_ids(out_dir_of(yaml_path)) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        kill_group(proc)
    assert server.stats()["batch"]["statuses"] == {"batch_1": "in_progress"}
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "re-attaching to 1 batch(es)" in res.stderr and "batch_1" in res.stderr
    b = server.stats()["batch"]
    assert b["batches_created"] == 1 and b["files_uploaded"] == 1 and b["batch_requests"] == 12
    assert all(r["status"] == "ok" for r in read_annotations(out_dir_of(yaml_path)))


def test_uploaded_file_without_batch_is_found_or_created_on_rerun(run_cli, make_pipeline, server):
    server.reset(batch_create_status=500)
    yaml_path = make_pipeline(rows_of([f"upload item {i}" for i in range(5)]), server.base_url, teacher=BATCH)
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 2 and "run the same command again to re-attach" in res.stderr
    assert "Traceback" not in res.stderr
    server.configure(batch_create_status=0)
    _run_ok(run_cli, yaml_path)
    b = server.stats()["batch"]
    assert b["files_uploaded"] == 1 and b["batches_created"] == 1
    assert len(read_annotations(out_dir_of(yaml_path))) == 5


def test_expired_batch_resubmits_what_is_missing(run_cli, make_pipeline, server):
    server.reset(batch_fail_next="expired")
    texts = [f"expiring item {i}" for i in range(10)]
    yaml_path = make_pipeline(rows_of(texts), server.base_url, teacher=BATCH)
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "batch_1 expired: 5 of its requests answered; the other 5 are submitted again" in res.stderr
    b = server.stats()["batch"]
    assert b["batches_created"] == 2 and b["batch_requests"] == 15
    assert set(server.stats()["by_item"].values()) == {1}  # every item answered exactly once
    assert all(r["status"] == "ok" for r in read_annotations(out_dir_of(yaml_path)))


def test_failed_batches_end_as_failed_rows_after_max_attempts(run_cli, make_pipeline, server):
    server.reset(batch_fail_next="failed")
    yaml_path = make_pipeline(
        rows_of(["a doomed item"]), server.base_url, teacher=BATCH, validation={"max_attempts": 1}
    )
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 4, res.stderr  # every row failed: more than validation.max_failed_fraction
    assert "batch_1 failed (injected failed)" in res.stderr
    [rec] = read_annotations(out_dir_of(yaml_path))
    assert rec["status"] == "failed" and "batch_1 failed before answering" in rec["error"]


def test_budget_stops_submitting_collects_what_is_submitted_and_resumes(run_cli, make_pipeline, server):
    # one request's upper bound: ~65 estimated prompt tokens + max_tokens 100 at $1/1M = ~$0.000165; a batch of 5
    # fits in $0.001, a second one does not once the first has cost 5 x (50 + 10) tokens = $0.0003
    teacher = {
        **BATCH,
        "batch_max_requests": 5,
        "max_tokens": 100,
        "price": {"input": 1.0, "output": 1.0},
        "max_cost": 0.001,
    }
    yaml_path = make_pipeline(rows_of([f"budget batch item {i}" for i in range(12)]), server.base_url, teacher=teacher)
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 8, res.stderr
    assert "budget reached" in res.stderr and "Traceback" not in res.stderr
    b = server.stats()["batch"]
    assert b["batches_created"] == 1 and b["statuses"] == {"batch_1": "completed"}

    yaml_path.write_text(yaml_path.read_text().replace("max_cost: 0.001", "max_cost: 1.0"))
    _run_ok(run_cli, yaml_path)
    b = server.stats()["batch"]
    assert b["batches_created"] == 3 and b["batch_requests"] == 12
    assert all(r["status"] == "ok" for r in read_annotations(out_dir_of(yaml_path)))
