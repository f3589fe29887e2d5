"""Rule 4 (docs/safety.md): paid answers are never stranded.

A Batch API output file is read line by line: every valid answer is kept, every unreadable line or unanswered request
becomes a failed try with the reason (a failed row once its tries are spent), and two different answers to one
custom_id are a conflict reported, not a silent first-wins. A malformed file used to be a JSONDecodeError on every
rerun (each re-attached to the same batch), so the answers paid for were never collected."""

from __future__ import annotations

from hostile import cli

from conftest import out_dir_of, read_annotations, rows_of

BATCH = {"mode": "batch", "batch_poll_interval": 0.05}


def test_a_truncated_output_file_keeps_every_valid_answer(server, make_pipeline, capsys):
    server.configure(batch_mangle_next="truncated")
    texts = [f"paid item {i}" for i in range(8)]
    pipe = make_pipeline(rows_of(texts), server.base_url, teacher=BATCH, validation={"max_attempts": 1}, name="trunc")
    r = cli(capsys, "run", pipe, "--max-failed-fraction", "0.5")
    assert r.code == 0, r.err
    assert "could not be read" in r.err and "not JSON" in r.err
    records = {rec["text"]: rec for rec in read_annotations(out_dir_of(pipe))}
    failed = [t for t, rec in records.items() if rec["status"] == "failed"]
    assert len(failed) == 1 and "no readable answer" in records[failed[0]]["error"]
    assert sum(rec["status"] == "ok" for rec in records.values()) == 7  # every line that was whole is kept
    assert cli(capsys, "run", pipe, "--max-failed-fraction", "0.5").code == 0  # no batch left to re-attach to
    assert server.stats()["batch"]["batches_created"] == 1


def test_a_truncated_answer_is_asked_again_while_tries_are_left(server, make_pipeline, capsys):
    server.configure(batch_mangle_next="truncated")
    pipe = make_pipeline(rows_of([f"retry item {i}" for i in range(6)]), server.base_url, teacher=BATCH, name="retry")
    assert cli(capsys, "run", pipe).code == 0
    assert all(rec["status"] == "ok" for rec in read_annotations(out_dir_of(pipe)))
    batch = server.stats()["batch"]
    assert batch["batches_created"] == 2 and batch["batch_requests"] == 7  # only the lost answer asked again


def test_two_answers_for_one_custom_id_are_a_reported_conflict(server, make_pipeline, capsys):
    server.configure(batch_mangle_next="duplicate")
    texts = [f"twice item {i}" for i in range(5)]
    pipe = make_pipeline(
        rows_of(texts),
        server.base_url,
        teacher={**BATCH, "price": {"input": 1.0, "output": 1.0}},
        validation={"max_attempts": 1},
        name="dup",
    )
    r = cli(capsys, "run", pipe, "--max-failed-fraction", "0.5")
    assert r.code == 0, r.err
    assert "differently: a conflict" in r.err
    records = read_annotations(out_dir_of(pipe))
    conflicted = [rec for rec in records if rec["status"] == "failed"]
    assert len(conflicted) == 1 and "different answers" in conflicted[0]["error"]
    assert conflicted[0]["cost"] == 2 * (50 + 10) / 1e6  # both answers were paid for, and are counted
    ok = [rec for rec in records if rec["status"] == "ok"]
    assert len(ok) == 4 and all(rec["cost"] == (50 + 10) / 1e6 for rec in ok)  # a repeated line is one answer
