"""A cached rerun is recorded as a rerun: run.json keeps the answers' provenance and a history of invocations,
and the dataset card reports how the answers were obtained, not what the last invocation did."""

from __future__ import annotations

import json
import sqlite3

import pytest

from conftest import LABELS, out_dir_of, read_annotations, rows_of

TEXTS = [f"Item {i}: the parliament, the markets and the cup final." for i in range(30)]
TOKENS_PER_CALL = 60  # the fault server's default usage: 50 prompt + 10 completion tokens


def run_json(run_cli, p, *args: str) -> dict:
    proc = run_cli("run", str(p), "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_rerun_keeps_the_answers_provenance_and_records_history(make_pipeline, run_cli, server):
    p = make_pipeline(rows_of(TEXTS), base_url=server.base_url)
    first = run_json(run_cli, p, "--limit", "10")
    resumed = run_json(run_cli, p)
    rerun = run_json(run_cli, p)
    n = len(TEXTS)

    assert (first["teacher_calls"], first["cache_hits"]) == (10, 0)
    assert (resumed["teacher_calls"], resumed["cache_hits"]) == (n - 10, 10)
    # this invocation's work: nothing
    assert (rerun["teacher_calls"], rerun["cache_hits"], rerun["tokens"]) == (0, n, 0)
    # the answers' provenance: every answer's tokens and calls, whichever invocation obtained them
    assert server.stats()["total"] == n
    assert rerun["answers"]["tokens"] == n * TOKENS_PER_CALL == first["tokens"] + resumed["tokens"]
    assert rerun["answers"]["attempts"] == n
    assert rerun["answers"] == resumed["answers"]  # a rerun changes nothing about the answers
    assert rerun["answers"]["first_answer_at"] == first["answers"]["first_answer_at"] <= first["finished_at"]
    assert first["finished_at"] <= rerun["answers"]["last_answer_at"] <= resumed["finished_at"]
    kinds = [h["kind"] for h in rerun["history"]]
    assert kinds == ["run", "resume", "rerun"]
    assert rerun["history"][0]["started_at"] == first["started_at"]
    assert [h["teacher_calls"] for h in rerun["history"]] == [10, n - 10, 0]
    assert [h["rows_total"] for h in rerun["history"]] == [10, n, n]

    # per row: when its answer was obtained survives the rerun, and matches the cache
    records = read_annotations(out_dir_of(p))
    assert all(r["tokens"] == TOKENS_PER_CALL and r["attempts"] == 1 for r in records)
    answered = sorted(r["answered_at"] for r in records)
    assert (answered[0], answered[-1]) == (rerun["answers"]["first_answer_at"], rerun["answers"]["last_answer_at"])
    conn = sqlite3.connect(str(out_dir_of(p) / "cache.sqlite"))
    (n_samples,) = conn.execute("SELECT COUNT(*) FROM samples WHERE created > 0").fetchone()
    conn.close()
    assert n_samples == n


def test_retry_failed_is_recorded_in_history(make_pipeline, run_cli, server):
    texts = ["[[malformed]] one", "plain two", "plain three"]
    p = make_pipeline(
        rows_of(texts), base_url=server.base_url, validation={"max_attempts": 2, "max_failed_fraction": 1.0}
    )
    first = run_json(run_cli, p)
    assert first["rows_failed"] == 1 and first["answers"]["tokens"] == (2 + 1 + 1) * TOKENS_PER_CALL
    again = run_json(run_cli, p, "--retry-failed")
    assert again["teacher_calls"] == 2 and again["cache_hits"] == 2
    assert [(h["kind"], h["retry_failed"]) for h in again["history"]] == [("run", False), ("resume", True)]
    # the failed row's answer was asked again: its provenance is the new attempt's
    assert again["answers"]["tokens"] == (2 + 1 + 1) * TOKENS_PER_CALL
    assert again["answers"]["last_answer_at"] >= first["answers"]["last_answer_at"]


def test_dataset_card_reports_the_answers_not_the_rerun(make_pipeline, run_cli, server, tmp_path):
    pytest.importorskip("datasets")
    p = make_pipeline(rows_of(TEXTS), base_url=server.base_url)
    first = run_json(run_cli, p)
    rerun = run_json(run_cli, p)
    assert rerun["tokens"] == 0
    proc = run_cli("export", str(out_dir_of(p)), "--out", str(tmp_path / "ds"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["answers"]["tokens"] == len(TEXTS) * TOKENS_PER_CALL
    assert [h["kind"] for h in summary["history"]] == ["run", "rerun"]
    card = (tmp_path / "ds" / "README.md").read_text(encoding="utf-8")
    assert f"| teacher tokens behind the answers | {len(TEXTS) * TOKENS_PER_CALL} |" in card
    assert f"| teacher calls behind the answers | {len(TEXTS)} |" in card
    assert first["answers"]["first_answer_at"] in card
    assert f"| `annotator run` invocations | 2 (run {first['started_at']}, rerun {rerun['started_at']}) |" in card
    assert "run finished" not in card  # the last invocation's times are not presented as the run's


def test_teacher_comparison_counts_the_answers_tokens_after_a_rerun(make_pipeline, run_cli, server, tmp_path):
    runs = []
    for name in ("a", "b"):
        p = make_pipeline(rows_of(TEXTS), base_url=server.base_url, name=name, output={"dir": f"out-{name}"})
        run_json(run_cli, p)
        assert run_json(run_cli, p)["tokens"] == 0  # a cached rerun
        runs.append(out_dir_of(p))
    humans = tmp_path / "humans.csv"
    rows = [f"r{i:05d},{a},{LABELS[i % 3]}" for i in range(len(TEXTS)) for a in ("h1", "h2", "h3")]
    humans.write_text("id,annotator,label\n" + "\n".join(rows) + "\n")
    proc = run_cli(
        "audit",
        "--humans",
        str(humans),
        "--teacher",
        str(runs[0]),
        "--teacher",
        str(runs[1]),
        "--out",
        str(tmp_path / "cmp"),
        "--bootstrap",
        "0",
        "--no-plots",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    teachers = json.loads(proc.stdout)["comparison"]["teachers"]
    assert [t["tokens_per_item"] for t in teachers] == [TOKENS_PER_CALL, TOKENS_PER_CALL]
