"""The `openai` backend against a real HTTP server on 127.0.0.1 that injects faults (tests/fault_server.py).

Every run must end with each input row either annotated or recorded as failed with its reason, and retries must
be bounded: in number (teacher.max_retries transport retries x validation.max_attempts) and in tokens
(validation.max_tokens_per_row).
"""

from __future__ import annotations

import random
import time

import pytest

from conftest import LABELS, out_dir_of, read_annotations, rows_of, run_pipeline
from fault_server import expected_label

MAX_RETRIES = 3  # transport retries -> 4 HTTP requests per teacher call at most
MAX_ATTEMPTS = 3  # validation attempts per sample
TRIES = MAX_RETRIES + 1
TOKENS_PER_CALL = 60  # the fault server reports 50 prompt + 10 completion tokens per answer

# marker, expected status, expected HTTP requests for the row, substring of the error (failed rows)
CASES = [
    ("", "ok", 1, None),
    ("[[429:2]]", "ok", 3, None),
    ("[[429]]", "failed", TRIES, "HTTP 429"),
    ("[[500]]", "failed", TRIES, "HTTP 500"),
    ("[[503:1]]", "ok", 2, None),
    ("[[flaky:3]]", "ok", TRIES, None),  # succeeds on the last allowed retry
    ("[[flaky:4]]", "failed", TRIES, "HTTP 500"),  # one failure too many
    ("[[timeout:1]]", "ok", 2, None),
    ("[[timeout]]", "failed", TRIES, "timed out"),
    ("[[drop:2]]", "ok", 3, None),
    ("[[drop]]", "failed", TRIES, "connection error"),
    ("[[garbage:1]]", "ok", 2, None),
    ("[[garbage]]", "failed", TRIES, "not JSON"),
    ("[[nochoices]]", "failed", 1, "no choices"),
    ("[[wrongshape]]", "failed", 1, "malformed chat completion"),
    ("[[400]]", "failed", 1, "HTTP 400"),  # a 4xx other than 408/409/425/429 is not retried
    ("[[malformed]]", "failed", MAX_ATTEMPTS, "not valid JSON"),
    ("[[malformed:2]]", "ok", 3, None),
    ("[[schema]]", "failed", MAX_ATTEMPTS, "schema violation"),
    ("[[schema:1]]", "ok", 2, None),
    ("[[length]]", "failed", MAX_ATTEMPTS, "truncated (finish_reason=length"),
    ("[[length:1]]", "ok", 2, None),
]
VALIDATION_FAULTS = ("malformed", "schema", "length")


def _teacher(base_url: str, **kw):
    # timeout 1 s: short enough for [[timeout]] rows, long enough that a loaded machine does not time out others
    return {"base_url": base_url, "timeout": 1.0, "max_retries": MAX_RETRIES, "max_backoff": 0.05, **kw}


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_every_fault_ends_annotated_or_failed_with_reason(server, make_pipeline):
    texts = [f"{marker} case {i} about the budget vote".strip() for i, (marker, *_rest) in enumerate(CASES)]
    server.configure(hang=5)
    p = make_pipeline(
        rows_of(texts), teacher=_teacher(server.base_url, concurrency=8), validation={"max_attempts": MAX_ATTEMPTS}
    )
    started = time.monotonic()
    manifest, records = run_pipeline(p)
    elapsed = time.monotonic() - started
    stats = server.stats()

    assert len(records) == len(CASES)
    assert manifest.rows_total == len(CASES)
    assert manifest.rows_ok + manifest.rows_failed == len(CASES)
    for i, (marker, status, calls, reason) in enumerate(CASES):
        rid, text = f"r{i:05d}", texts[i]
        rec = records[rid]
        where = f"{marker or 'plain'}: {rec}"
        assert rec["status"] == status, where
        assert stats["by_item"][text] == calls, where
        if status == "ok":
            assert rec["label"] == expected_label(text, LABELS), where
            assert rec["error"] is None, where
        else:
            assert rec["label"] is None and rec["output"] is None, where
            assert reason in rec["error"], where
        if any(k in marker for k in VALIDATION_FAULTS):
            # every validation attempt is one teacher answer whose tokens count
            assert rec["attempts"] == calls, where
            assert rec["tokens"] == calls * TOKENS_PER_CALL, where
            if status == "failed":
                assert rec["raw"], where  # the last raw answer is kept for inspection
    assert manifest.rows_failed == sum(1 for c in CASES if c[1] == "failed")
    assert elapsed < 20, f"fault run took {elapsed:.1f}s: retries or timeouts are not bounded"


def test_retry_after_is_honoured_and_capped(server, make_pipeline):
    server.configure(retry_after=0.1)
    p = make_pipeline(rows_of(["[[429:2]] rate limited"]), teacher=_teacher(server.base_url, max_backoff=5.0))
    _, records = run_pipeline(p)
    assert records["r00000"]["status"] == "ok"
    times = server.stats()["times"]["[[429:2]] rate limited"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 2
    # the server asked for 0.1 s; without Retry-After the exponential backoff waits 0.5-1 s, then 1-1.5 s
    assert all(0.1 <= g < 0.45 for g in gaps), gaps

    # a Retry-After longer than teacher.max_backoff is capped at max_backoff
    server.reset(retry_after=30)
    p = make_pipeline(
        rows_of(["[[429:2]] capped"]),
        name="capped",
        output={"dir": "out_capped"},
        teacher=_teacher(server.base_url, max_backoff=0.1),
    )
    started = time.monotonic()
    _, records = run_pipeline(p)
    assert records["r00000"]["status"] == "ok"
    assert time.monotonic() - started < 5


def test_token_budget_bounds_validation_retries(server, make_pipeline):
    texts = ["[[malformed]] never valid", "[[schema:1]] valid on the second try", "[[length]] always cut"]
    p = make_pipeline(
        rows_of(texts), teacher=_teacher(server.base_url), validation={"max_attempts": 10, "max_tokens_per_row": 150}
    )
    manifest, records = run_pipeline(p)
    stats = server.stats()
    # 60 tokens per answer: after 3 answers (180 >= 150) the budget stops the retries, not max_attempts=10
    for rid, text in (("r00000", texts[0]), ("r00002", texts[2])):
        rec = records[rid]
        assert rec["status"] == "failed"
        assert "token budget exhausted" in rec["error"]
        assert stats["by_item"][text] == 3
        assert rec["tokens"] == 180 and rec["attempts"] == 3
    assert records["r00001"]["status"] == "ok" and stats["by_item"][texts[1]] == 2
    assert manifest.tokens == 180 + 180 + 120


def test_faults_by_request_number(server, make_pipeline):
    # the 1st, 2nd and 4th HTTP requests fail (500, 429, dropped connection); concurrency 1 keeps the order
    server.configure(by_request={"1": "500", "2": "429", "4": "drop"})
    texts = [f"plain row {i}" for i in range(5)]
    p = make_pipeline(rows_of(texts), teacher=_teacher(server.base_url, concurrency=1))
    manifest, records = run_pipeline(p)
    stats = server.stats()
    assert all(r["status"] == "ok" for r in records.values())
    assert stats["total"] == 5 + 3
    assert stats["faults"] == {"500": 1, "429": 1, "drop": 1}
    assert stats["by_item"][texts[0]] == 3  # requests 1, 2 fail, 3 answers
    assert manifest.teacher_calls == 5  # transport retries are inside one teacher call


def test_failures_are_cached_unless_retry_failed(server, make_pipeline):
    texts = ["fine row", "[[malformed]] invalid output", "[[500]] server down"]
    p = make_pipeline(rows_of(texts), teacher=_teacher(server.base_url))
    run_pipeline(p)
    first = server.stats()["by_item"]
    assert first == {texts[0]: 1, texts[1]: MAX_ATTEMPTS, texts[2]: TRIES}

    # rerun: answers (valid or not) come from the cache; transport failures were never answers: asked again
    server.reset()
    manifest, records = run_pipeline(p)
    assert server.stats()["by_item"] == {texts[2]: TRIES}
    assert manifest.cache_hits == 2
    assert [records[f"r{i:05d}"]["status"] for i in range(3)] == ["ok", "failed", "failed"]
    assert "not valid JSON" in records["r00001"]["error"]

    # --retry-failed asks the teacher again for the invalid one, never for the good one
    server.reset()
    run_pipeline(p, retry_failed=True)
    assert server.stats()["by_item"] == {texts[1]: MAX_ATTEMPTS, texts[2]: TRIES}


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_mixed_faults_under_concurrency(server, make_pipeline):
    """Many rows, random faults, real concurrency: nothing lost, nothing duplicated, bounds respected."""
    rng = random.Random(7)
    kinds = [
        "",
        "",
        "",
        "",
        "[[429:1]]",
        "[[500:2]]",
        "[[drop:1]]",
        "[[timeout:1]]",
        "[[malformed:1]]",
        "[[schema]]",
        "[[length:1]]",
        "[[500]]",
        "[[garbage:1]]",
    ]
    texts = [f"{rng.choice(kinds)} item {i} on markets".strip() for i in range(160)]
    server.configure(latency=0.01)
    p = make_pipeline(rows_of(texts), teacher=_teacher(server.base_url, concurrency=6), validation={"max_attempts": 2})
    manifest, records = run_pipeline(p)
    stats = server.stats()

    lines = read_annotations(out_dir_of(p))
    assert [r["id"] for r in lines] == [f"r{i:05d}" for i in range(len(texts))]  # each once, input order
    assert stats["max_in_flight"] <= 6
    for i, text in enumerate(texts):
        rec = records[f"r{i:05d}"]
        assert stats["by_item"][text] <= 2 * TRIES
        if "[[schema]]" in text:
            assert rec["status"] == "failed" and "schema violation" in rec["error"]
        elif "[[500]]" in text:
            assert rec["status"] == "failed" and "HTTP 500" in rec["error"]
        else:
            assert rec["status"] == "ok", rec
            assert rec["label"] == expected_label(text, LABELS)
    assert manifest.rows_ok + manifest.rows_failed == len(texts)


@pytest.mark.parametrize("mode", ["json_object", "none"])
def test_other_structured_output_modes(server, make_pipeline, mode):
    texts = ["a plain row", "[[schema:1]] bad first"]
    p = make_pipeline(rows_of(texts), teacher=_teacher(server.base_url, structured_output=mode))
    _, records = run_pipeline(p)
    if mode == "json_object":  # llama.cpp style: the schema travels in response_format.schema
        assert all(r["status"] == "ok" for r in records.values())
        assert records["r00000"]["label"] == expected_label(texts[0], LABELS)
    else:  # no schema sent: the server answers a label outside the set -> a recorded validation failure
        assert all(r["status"] == "failed" and "schema violation" in r["error"] for r in records.values())


def test_cli_run_with_faults_exits_zero_and_reports_failures(server, make_pipeline, run_cli):
    texts = ["ok row one", "[[500]] broken", "[[malformed]] junk", "[[429:1]] busy", "ok row two"]
    p = make_pipeline(rows_of(texts), teacher=_teacher(server.base_url))
    proc = run_cli("run", str(p), "--quiet", "--max-failed-fraction", "0.5")  # 2 of 5 failed: allowed here
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "2 row(s) failed" in out
    recs = read_annotations(out_dir_of(p))
    assert [r["status"] for r in recs] == ["ok", "failed", "failed", "ok", "ok"]


def test_fatal_status_stops_the_run_with_a_clear_message(server, make_pipeline, run_cli):
    p = make_pipeline(rows_of(["[[401]] wrong key"]), teacher=_teacher(server.base_url))
    proc = run_cli("run", str(p), "--quiet")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert "refused the request" in out and "401" in out
    assert server.stats()["total"] == 1  # a 401 is not retried
