"""A dead teacher and honest exit codes, through the real CLI against a real server on 127.0.0.1.

* the circuit breaker: many teacher calls failing in a row stop the run early (exit 5) with one line; nothing is
  lost and a rerun resumes;
* a run whose failed share is above validation.max_failed_fraction exits 4 (its outputs are still written);
* the hints match the failure kind (transport failures are not cached: no --retry-failed needed).
"""

from __future__ import annotations

from conftest import out_dir_of, read_annotations, rows_of
from servers import free_port


def _flat(proc) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    return " ".join(out.split())


def test_unreachable_teacher_trips_the_breaker(make_pipeline, run_cli):
    p = make_pipeline(
        rows_of([f"nobody answers {i}" for i in range(200)]),
        f"http://127.0.0.1:{free_port()}/v1",
        teacher={"max_retries": 0, "concurrency": 4},
        validation={"max_consecutive_transport_failures": 5},
    )
    proc = run_cli("run", str(p), "--quiet")
    flat = _flat(proc)
    assert proc.returncode == 5, flat
    assert "5 teacher calls in a row failed" in flat and "connection error" in flat.lower()
    assert "run the same command again" in flat and "--retry-failed" not in flat
    assert not (out_dir_of(p) / "annotations.jsonl").exists()  # no output that claims the run is done


def test_server_errors_trip_the_breaker_and_a_rerun_resumes(server, make_pipeline, run_cli):
    texts = [f"breaker row {i}" for i in range(120)]
    # the first 10 requests are answered, then the server fails every request (5xx)
    server.configure(by_request={str(n): "500" for n in range(11, 2000)})
    p = make_pipeline(
        rows_of(texts),
        server.base_url,
        teacher={"max_retries": 1, "concurrency": 2},
        validation={"max_consecutive_transport_failures": 6},
    )
    proc = run_cli("run", str(p), "--quiet")
    flat = _flat(proc)
    assert proc.returncode == 5, flat
    assert "6 teacher calls in a row failed" in flat and "HTTP 500" in flat
    first = server.stats()
    # stopped early: far fewer requests than 120 rows x 2 tries; in-flight calls are cancelled
    assert first["total"] <= 10 + (6 + 2) * 2, first["total"]
    answered = set(first["ok_by_item"])
    assert len(answered) == 10

    server.reset()  # the teacher is back
    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = read_annotations(out_dir_of(p))
    assert [r["text"] for r in recs] == texts and all(r["status"] == "ok" for r in recs)
    asked_again = set(server.stats()["by_item"])
    assert not answered & asked_again  # nothing answered before the breaker tripped is asked again
    assert len(asked_again) == len(texts) - len(answered)


def test_too_many_failed_rows_exit_4_with_hints_per_kind(server, make_pipeline, run_cli):
    texts = [f"fine row {i}" for i in range(8)] + ["[[schema]] invalid answer", "[[500]] server error"]
    p = make_pipeline(rows_of(texts), server.base_url, teacher={"max_retries": 0})
    proc = run_cli("run", str(p), "--quiet")
    flat = _flat(proc)
    assert proc.returncode == 4, flat
    assert "2 of 10 rows failed (20%), more than validation.max_failed_fraction=0.1" in flat
    assert "1 row(s): the teacher call failed" in flat and "not cached" in flat
    assert "1 row(s): the teacher's answers stayed invalid: rerun with --retry-failed" in flat
    recs = read_annotations(out_dir_of(p))  # the outputs are written all the same
    assert [r["status"] for r in recs] == ["ok"] * 8 + ["failed", "failed"]

    proc = run_cli("run", str(p), "--quiet", "--max-failed-fraction", "0.2")  # 20% is not above 20%
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 row(s) failed" in _flat(proc)
