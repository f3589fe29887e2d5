"""Validation retries (annotator/retry.py): ``validation.on_invalid`` resample vs reask, against the fault server's
re-ask faults (tests/fault_server.py ``[[tellschema]]``/``[[telljson]]``: invalid until the request states the
validation error), their bounds, token and cost accounting and caching; the cache key; a real-model re-ask."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest
import yaml

from annotator.cache import cache_key, sample_key
from annotator.errors import ConfigError

from conftest import LABELS, rows_of, run_pipeline
from fault_server import expected_label

TOKENS_PER_CALL = 60  # the fault server reports 50 prompt + 10 completion tokens per answer
PRICE = {"input": 1.0, "output": 2.0}  # USD per 1M tokens: 50 * 1e-6 + 10 * 2e-6 per answer
COST_PER_CALL = 50 * 1e-6 + 10 * 2e-6
TELL = ["[[tellschema]] the budget vote", "[[telljson]] a cup final", "a plain row about vaccines"]
ERRORS = {TELL[0]: "schema violation: label", TELL[1]: "invalid output: output is not valid JSON"}


def _pipeline(make_pipeline, server, texts, on_invalid, name="p", **validation):
    return make_pipeline(
        rows_of(texts),
        name=name,
        output={"dir": f"out_{name}"},
        teacher={"base_url": server.base_url, "price": PRICE},
        validation={"max_attempts": 3, "on_invalid": on_invalid, **validation},
    )


def test_reask_states_the_error_and_the_row_succeeds(server, make_pipeline):
    manifest, records = run_pipeline(_pipeline(make_pipeline, server, TELL, "reask"))
    stats = server.stats()
    for i, text in enumerate(TELL):
        rec = records[f"r{i:05d}"]
        assert rec["status"] == "ok", rec
        assert rec["label"] == expected_label(text, LABELS)
    for text, error in ERRORS.items():
        first, second = stats["messages_by_item"][text]
        assert stats["by_item"][text] == 2
        # the re-ask is the prompt, the invalid answer, then the error
        assert second[:-2] == first
        assert second[-2]["role"] == "assistant" and second[-1]["role"] == "user"
        assert second[-1]["content"].startswith(f"Your answer was invalid: {error}")
        assert "Answer again" in second[-1]["content"]
    assert "definitely_not_a_label" in stats["messages_by_item"][TELL[0]][1][-2]["content"]
    # both attempts are paid for and counted: tokens, attempts, cost
    for rid in ("r00000", "r00001"):
        rec = records[rid]
        assert rec["attempts"] == 2 and rec["tokens"] == 2 * TOKENS_PER_CALL and rec["prompt_tokens"] == 100
        assert rec["cost"] == pytest.approx(2 * COST_PER_CALL)
        assert rec["invalid_samples"] == 0  # the sample ended valid; its earlier tries are in attempts
    assert records["r00002"]["attempts"] == 1 and stats["by_item"][TELL[2]] == 1
    assert manifest.teacher_calls == 5 and manifest.tokens == 5 * TOKENS_PER_CALL
    assert manifest.cost_usd == pytest.approx(5 * COST_PER_CALL)


def test_resample_asks_the_same_prompt_again(server, make_pipeline):
    _, records = run_pipeline(_pipeline(make_pipeline, server, TELL[:2], "resample"))
    stats = server.stats()
    for i, text in enumerate(TELL[:2]):
        rec = records[f"r{i:05d}"]
        sent = stats["messages_by_item"][text]
        assert len(sent) == 3 and all(m == sent[0] for m in sent)  # never told: fails after max_attempts
        assert rec["status"] == "failed" and rec["attempts"] == 3 and rec["tokens"] == 3 * TOKENS_PER_CALL
        assert rec["error"].startswith(ERRORS[text])


def test_reask_is_bounded_by_max_attempts_and_the_token_budget(server, make_pipeline):
    deaf = "[[deaf]] never valid, whatever it is told"
    _, records = run_pipeline(_pipeline(make_pipeline, server, [deaf], "reask"))
    rec = records["r00000"]
    assert rec["status"] == "failed" and rec["attempts"] == 3 and rec["tokens"] == 3 * TOKENS_PER_CALL
    assert "schema violation" in rec["error"] and "definitely_not_a_label" in rec["raw"]
    # each re-ask keeps the conversation: the third request holds both invalid answers and both errors
    first, second, third = server.stats()["messages_by_item"][deaf]
    assert second[:-2] == first and third[:-2] == second
    assert [m["role"] for m in third[len(first) :]] == ["assistant", "user", "assistant", "user"]

    # the row's token budget stops re-asks before max_attempts: 60 tokens per answer, 100 allowed
    server.reset()
    _, records = run_pipeline(
        _pipeline(make_pipeline, server, [deaf], "reask", name="budget", max_tokens_per_row=100, max_attempts=10)
    )
    rec = records["r00000"]
    assert rec["status"] == "failed" and "token budget exhausted (120 >= 100 tokens)" in rec["error"]
    assert rec["attempts"] == 2 and server.stats()["by_item"][deaf] == 2


def test_an_invalid_attempt_is_logged_with_its_row(server, make_pipeline, caplog):
    """`annotator -v`: with rows asked concurrently, each invalid-attempt line names its row."""
    texts = ["a plain row", "[[deaf]] never valid"]
    with caplog.at_level(logging.DEBUG, logger="annotator.retry"):
        run_pipeline(_pipeline(make_pipeline, server, texts, "reask", max_attempts=2))
    lines = [r.getMessage() for r in caplog.records if r.name == "annotator.retry"]
    assert [line.split(" label:")[0] for line in lines] == [
        f"row r00001: attempt {n}/2 invalid (schema violation:" for n in (1, 2)
    ], lines


def test_reask_answers_are_cached_like_any_other(server, make_pipeline):
    """A rerun pays for nothing already answered; an invalid outcome is never served as valid; the key does
    not depend on validation.on_invalid (switching keeps the cache)."""
    p = _pipeline(make_pipeline, server, TELL, "reask")
    run_pipeline(p)
    server.reset()
    manifest, records = run_pipeline(p)
    assert server.stats()["total"] == 0 and manifest.cache_hits == 3
    assert all(r["status"] == "ok" for r in records.values())

    resample = _pipeline(make_pipeline, server, TELL[:2], "resample", name="switch")
    _, records = run_pipeline(resample)
    assert all(r["status"] == "failed" for r in records.values())
    reask = _pipeline(make_pipeline, server, TELL[:2], "reask", name="switch")
    server.reset()
    manifest, records = run_pipeline(reask)
    assert server.stats()["total"] == 0 and manifest.cache_hits == 2  # the failures stay failures
    assert all(r["status"] == "failed" for r in records.values())
    manifest, records = run_pipeline(reask, retry_failed=True)  # asked again, now re-asking
    assert all(r["status"] == "ok" for r in records.values())
    assert server.stats()["by_item"] == {TELL[0]: 2, TELL[1]: 2}
    # what the failed tries cost before still counts (usage and cost are carried forward; tokens/attempts are
    # this round's, as for --retry-failed under resample)
    for r in records.values():
        assert r["attempts"] == 2 and r["prompt_tokens"] == (3 + 2) * 50
        assert r["cost"] == pytest.approx((3 + 2) * COST_PER_CALL)


def test_reask_with_the_batch_api_is_a_config_error(server, make_pipeline):
    p = make_pipeline(
        rows_of(["a row"]), teacher={"base_url": server.base_url, "mode": "batch"}, validation={"on_invalid": "reask"}
    )
    with pytest.raises(ConfigError, match="on_invalid: reask is not available with teacher.mode: batch"):
        run_pipeline(p)
    assert server.stats()["total"] == 0


def test_validate_refuses_what_a_batch_cannot_do(server, make_pipeline, run_cli):
    """`validate` says what `run` would refuse (re-asks, Ray with the Batch API): one line, exit 2."""
    p = make_pipeline(rows_of(["a row"]), teacher={"base_url": server.base_url, "mode": "batch"})
    res = run_cli("validate", str(p), "--set", "validation.on_invalid=reask")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "validation.on_invalid: reask is not available with teacher.mode: batch" in res.stderr
    assert "(from --set validation.on_invalid=reask)" in " ".join(res.stderr.split())
    res = run_cli("validate", str(p), "--set", "teacher.ray.workers=2")
    assert res.returncode == 2 and "teacher.ray: the Batch API does not run on Ray" in " ".join(res.stderr.split())
    assert run_cli("validate", str(p)).returncode == 0
    assert server.stats()["total"] == 0


def test_sample_key_is_the_old_payload_hash_and_logs_its_fields(caplog):
    fields = {
        "messages": [{"role": "user", "content": "Text: x"}],
        "model": "openai:host:m",
        "mode": "json_schema",
        "schema": {"type": "object"},
        "temperature": 0.0,
        "max_tokens": 32,
        "seed": 3,
        "sample": 1,
        "task": "f" * 64,
    }
    with caplog.at_level(logging.DEBUG, logger="annotator.cache"):
        key = sample_key(**fields)
    # the payload the engine hashed before sample_key existed: caches written then still hit
    assert key == cache_key(fields)
    assert key != sample_key(**{**fields, "seed": 4})
    line = caplog.records[-1].getMessage()
    assert line.startswith(f"sample key {key[:16]}") and "model=openai:host:m" in line and "seed=3" in line


# -- a real model ----------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_reask_runs_on_the_local_model(tmp_path, local_teacher):
    """SmolLM2 (llama.cpp in-process): answers cut at max_tokens are re-asked in a conversation the real chat
    template accepts; every attempt is recorded, and a re-ask's prompt is longer than the first."""
    from annotator.records import iter_annotations

    runs = {}
    for mode in ("resample", "reask"):
        cfg = yaml.safe_load((REPO / "pipelines" / "news_topics.yaml").read_text(encoding="utf-8"))
        sub = tmp_path / "in.csv"
        pl.read_csv(REPO / "pipelines" / "data" / "news_sample.csv").head(2).write_csv(sub)
        cfg["input"]["path"] = str(sub)
        cfg["output"]["dir"] = str(tmp_path / mode)
        cfg["teacher"].update(samples=1, max_tokens=3)  # every answer is cut: each row uses every attempt
        cfg["validation"] = {"max_attempts": 2, "on_invalid": mode}
        path = tmp_path / f"{mode}.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        manifest = local_teacher.run(path)
        runs[mode] = (manifest, list(iter_annotations(tmp_path / mode)))
    (m_resample, resampled), (m_reask, reasked) = runs["resample"], runs["reask"]
    assert m_reask.teacher_calls == m_resample.teacher_calls == 4
    for a, b in zip(resampled, reasked):
        assert a.status == b.status == "failed" and "output truncated" in (b.error or "")
        assert a.attempts == b.attempts == 2 and b.completion_tokens > 0
        assert b.prompt_tokens > a.prompt_tokens  # the re-ask carried the invalid answer and the error
