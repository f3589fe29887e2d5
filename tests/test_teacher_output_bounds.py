"""Bounds on what a teacher can do to a run, against the real fault server on 127.0.0.1: a trickling server
cannot outlast ``teacher.timeout``, a runaway answer is not stored in full, two disagreeing JSON answers are not
read as one, and self-consistency confidence counts the samples that were requested, invalid ones included."""

from __future__ import annotations

import time

import pytest

from annotator.records import RAW_KEEP_CHARS

from conftest import LABELS, out_dir_of, rows_of, run_pipeline
from fault_server import expected_label


def _teacher(base_url: str, **kw):
    return {"base_url": base_url, "timeout": 1.0, "max_retries": 1, "max_backoff": 0.05, **kw}


def test_timeout_bounds_the_whole_request_not_each_read(server, make_pipeline):
    # ~300 bytes at one byte per 0.25 s: every read is quick, the whole answer would take over a minute
    server.configure(trickle_interval=0.25)
    text = "[[trickle]] a slow loris server"
    p = make_pipeline(rows_of([text, "a plain row"]), teacher=_teacher(server.base_url))
    started = time.monotonic()
    _, records = run_pipeline(p)
    elapsed = time.monotonic() - started
    rec = records["r00000"]
    assert rec["status"] == "failed" and "timed out" in rec["error"] and "teacher.timeout=1s" in rec["error"], rec
    assert server.calls(text) == 2  # the timeout is retryable: max_retries=1 -> 2 requests of 1 s each
    assert records["r00001"]["status"] == "ok"
    assert elapsed < 10, f"a 1 s timeout let a trickling answer run {elapsed:.1f}s"


def test_raw_text_of_a_runaway_answer_is_capped(server, make_pipeline):
    size = 5_000_000
    server.configure(huge_chars=size)
    p = make_pipeline(
        rows_of(["[[huge]] a runaway answer"]), teacher=_teacher(server.base_url), validation={"max_attempts": 2}
    )
    _, records = run_pipeline(p)
    rec = records["r00000"]
    assert rec["status"] == "failed" and "not valid JSON" in rec["error"]
    assert rec["raw"].startswith("A" * 100)
    assert f"truncated: {size:,} characters in total, first {RAW_KEEP_CHARS:,} kept" in rec["raw"]
    assert len(rec["raw"]) < RAW_KEEP_CHARS + 200
    out = out_dir_of(p)
    stored = {f.name: f.stat().st_size for f in out.iterdir() if f.is_file()}
    # two 5 MB answers went through; what is kept on disk is a small fraction of one
    assert stored["annotations.jsonl"] < 4 * RAW_KEEP_CHARS, stored
    assert sum(n for name, n in stored.items() if name.startswith("cache.sqlite")) < size / 5, stored


def test_two_disagreeing_json_answers_are_ambiguous(server, make_pipeline):
    p = make_pipeline(
        rows_of(["[[twojson]] which one", "[[twojson:1]] fine on the second try"]),
        teacher=_teacher(server.base_url),
        validation={"max_attempts": 2},
    )
    _, records = run_pipeline(p)
    rec = records["r00000"]
    assert rec["status"] == "failed" and "ambiguous output: 2 different JSON answers" in rec["error"], rec
    assert records["r00001"]["status"] == "ok"


def test_confidence_is_the_share_of_samples_requested(server, make_pipeline, tmp_path):
    """samples: 3 and only one valid sample: confidence 1/3 (not 1.0), the two invalid samples and their errors
    are in the record, and `export --min-confidence 0.9` leaves the row out."""
    texts = ["[[schema:2]] one valid sample of three"] + [f"plain story {i} about the vote" for i in range(9)]
    p = make_pipeline(rows_of(texts), teacher=_teacher(server.base_url, samples=3), validation={"max_attempts": 1})
    _, records = run_pipeline(p)
    rec = records["r00000"]
    assert rec["status"] == "ok" and rec["label"] == expected_label(texts[0], LABELS)
    assert rec["confidence"] == pytest.approx(1 / 3)
    assert rec["samples"] == 1 and rec["invalid_samples"] == 2
    assert len(rec["sample_errors"]) == 2 and all("schema violation" in e for e in rec["sample_errors"])
    for i in range(1, len(texts)):
        r = records[f"r{i:05d}"]
        assert (r["confidence"], r["samples"], r["invalid_samples"], r["sample_errors"]) == (1.0, 3, 0, [])

    datasets = pytest.importorskip("datasets")
    from annotator.export import ExportOptions, export_run

    out = tmp_path / "dataset"
    summary = export_run(out_dir_of(p), ExportOptions(out=out, split="0.5,0.5", min_confidence=0.9))
    assert summary.counts.below_threshold_excluded == 1
    dsd = datasets.load_from_disk(str(out))
    exported = [row["id"] for split in dsd.values() for row in split]
    assert "r00000" not in exported and len(exported) == 9
