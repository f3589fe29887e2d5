"""The run directory: one process at a time (lock), one pipeline/input per directory (binding), run.json's counts
checked against annotations.jsonl, and every problem with the location one clear line (real CLI processes
against the fault server on 127.0.0.1)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import LABELS, kill_group, out_dir_of, read_annotations, rows_of, spawn_cli
from fault_server import expected_label

N_ROWS = 80


def _clean_error(proc, code: int, *needles: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out, out
    flat = " ".join(out.split())  # rich wraps long lines
    for needle in needles:
        assert needle in flat, f"{needle!r} not in:\n{out}"
    return flat


HELD = {"concurrency": 4, "timeout": 120}


def _start_held_run(server, p: Path) -> subprocess.Popen[str]:
    """Start `annotator run` with the teacher's answers held (``hold``: the run stays alive, holding the lock, until
    the test releases them) and return once its first requests are in flight. Its pipeline needs ``HELD`` teacher
    settings: with the suite's 2 s timeout a held request could time out and be asked again while the test waits
    (seen once in some hundred runs: one item asked twice)."""
    server.configure(hold=True)
    proc = spawn_cli("run", str(p), "--quiet")
    server.wait_for(lambda s: s["in_flight"] >= 1 or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    return proc


def _assert_complete(run_dir: Path, texts: list[str], prefix: str = "r") -> None:
    recs = read_annotations(run_dir)
    assert [r["id"] for r in recs] == [f"{prefix}{i:05d}" for i in range(len(texts))]
    assert [r["text"] for r in recs] == texts
    assert all(r["status"] == "ok" for r in recs)
    assert [r["label"] for r in recs] == [expected_label(t, LABELS) for t in texts]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert (manifest["rows_total"], manifest["rows_ok"], manifest["rows_failed"]) == (len(texts), len(texts), 0)


@pytest.mark.parametrize("second", ["same", "limit", "other-pipeline"])
@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_second_process_on_the_same_dir_fails_at_once_naming_the_holder(server, make_pipeline, run_cli, second):
    texts = [f"lock row {i} about the harvest" for i in range(N_ROWS)]
    p = make_pipeline(rows_of(texts), server.base_url, teacher=HELD)
    if second == "other-pipeline":
        q = make_pipeline(
            rows_of([f"other {i}" for i in range(5)], prefix="o"),
            server.base_url,
            name="other",
            input_file="data/other.jsonl",
        )
        args = ["run", str(q)]
    else:
        args = ["run", str(p), *(["--limit", "5"] if second == "limit" else [])]
    first = _start_held_run(server, p)
    try:
        busy = run_cli(*args, "--quiet", timeout=60)
        assert first.poll() is None, "the first run ended before the second was refused: the test proves nothing"
        _clean_error(busy, 6, "is in use by another annotator process", f"(pid {first.pid})")
        server.configure(hold=False)
        out, _ = first.communicate(timeout=120)
    finally:
        kill_group(first)
    assert first.returncode == 0, out
    _assert_complete(out_dir_of(p), texts)
    # the refused process never reached the teacher
    assert set(server.stats()["by_item"]) == set(texts)
    assert all(n == 1 for n in server.stats()["by_item"].values())


def test_the_lock_of_a_killed_run_is_taken_over(server, make_pipeline, run_cli):
    texts = [f"stale lock row {i}" for i in range(N_ROWS)]
    p = make_pipeline(rows_of(texts), server.base_url, teacher=HELD)
    first = _start_held_run(server, p)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    server.configure(hold=False)
    lock = out_dir_of(p) / "run.lock"
    assert lock.read_text().strip() == str(first.pid)  # the dead process's pid is still written there
    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_complete(out_dir_of(p), texts)
    assert lock.read_text() == ""  # a clean exit releases it


def test_another_pipeline_into_a_used_dir_is_refused(server, make_pipeline, run_cli):
    texts = [f"bound row {i}" for i in range(6)]
    p = make_pipeline(rows_of(texts), server.base_url, name="first")
    assert run_cli("run", str(p), "--quiet").returncode == 0
    before = (out_dir_of(p) / "annotations.jsonl").read_bytes()
    calls = server.stats()["total"]

    other = [f"other input row {i}" for i in range(4)]
    q = make_pipeline(rows_of(other, prefix="o"), server.base_url, name="second", input_file="data/other.jsonl")
    yaml_text = q.read_text().replace("name: test_pipeline", "name: other_pipeline")
    q.write_text(yaml_text)
    proc = run_cli("run", str(q), "--quiet")
    _clean_error(
        proc,
        2,
        "belongs to another run",
        "pipeline='test_pipeline'",
        "other_pipeline",
        "Set another output.dir",
        "or delete",
    )
    assert (out_dir_of(p) / "annotations.jsonl").read_bytes() == before
    assert server.stats()["total"] == calls


def test_a_limited_run_of_the_same_pipeline_is_the_same_binding_and_consistent(server, make_pipeline, run_cli):
    texts = [f"limit row {i}" for i in range(10)]
    p = make_pipeline(rows_of(texts), server.base_url)
    run_dir = out_dir_of(p)
    assert run_cli("run", str(p), "--quiet").returncode == 0
    proc = run_cli("run", str(p), "--quiet", "--limit", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_complete(run_dir, texts[:3])  # annotations.jsonl and run.json both say 3 rows
    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_complete(run_dir, texts)
    assert server.stats()["total"] == len(texts)  # the limited and the repeated run were served from the cache


def test_run_json_is_checked_against_annotations(server, make_pipeline, run_cli):
    from annotator.cache import ResultStore
    from annotator.errors import InconsistentOutputs
    from annotator.rundir import verify_outputs

    p = make_pipeline(rows_of([f"verify row {i}" for i in range(5)]), server.base_url)
    assert run_cli("run", str(p), "--quiet").returncode == 0
    run_dir = out_dir_of(p)
    ann = run_dir / "annotations.jsonl"
    lines = ann.read_text().splitlines(keepends=True)
    store = ResultStore(run_dir / "cache.sqlite")
    try:
        verify_outputs(run_dir, store)  # a real run's outputs agree
        ann.write_text("".join(lines[:3]))
        with pytest.raises(InconsistentOutputs, match=r"run.json claims .*'rows': 5.* holds .*'rows': 3"):
            verify_outputs(run_dir, store)
        ann.write_text("".join(lines[:4] + lines[:1]))
        with pytest.raises(InconsistentOutputs, match=r"id 'r00000' occurs twice \(lines 1 and 5\)"):
            verify_outputs(run_dir, store)
    finally:
        store.close()
