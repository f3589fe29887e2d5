"""Rule 2 (docs/safety.md): every number from a server or a config is checked and bounded.

Rate-limit and Retry-After waits are capped at ``teacher.max_backoff`` with a warning naming the header; usage counts
must be whole numbers in 0..1e9 (else the call failed, the run goes on and nothing is charged); prices, budgets and
times in a pipeline are finite and within bounds (refused at load)."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest
import yaml
from hostile import cli, one_line_error

from conftest import ServerHandle, out_dir_of, read_annotations, rows_of


@pytest.mark.parametrize("reset", ["1e9", "inf", "99999999h"])
def test_a_reset_header_of_decades_is_capped_and_named(server: ServerHandle, make_pipeline, caplog, reset):
    from annotator.config import load_config
    from annotator.engine import Pipeline

    server.configure(
        headers={
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": reset,
            "x-ratelimit-remaining-tokens": "nan",
            "x-ratelimit-reset-tokens": "-1",
        }
    )
    cfg = load_config(
        make_pipeline(
            rows_of(["one", "two", "three"]), server.base_url, teacher={"concurrency": 1, "max_backoff": 0.05}
        )
    )
    with caplog.at_level(logging.WARNING, logger="annotator"):
        manifest = asyncio.run(asyncio.wait_for(Pipeline(cfg).run(), timeout=60))  # held for decades before
    assert manifest.rows_ok == 3
    warnings = [r.getMessage() for r in caplog.records if "x-ratelimit-reset-requests" in r.getMessage()]
    assert len(warnings) == 1 and "teacher.max_backoff=0.05s" in warnings[0], warnings


@pytest.mark.parametrize("header", ["retry-after-ms", "retry-after"])
@pytest.mark.parametrize("value", ["nan", "inf", "1e12", "-5"])
def test_retry_after_is_finite_and_bounded(header, value):
    from annotator.retry import RetryAfterOrBackoff

    exc = SimpleNamespace(response=SimpleNamespace(headers={header: value}))
    state = SimpleNamespace(outcome=SimpleNamespace(exception=lambda: exc), attempt_number=1)
    wait = RetryAfterOrBackoff(30.0)(state)  # type: ignore[arg-type]
    assert 0.0 <= wait <= 30.0


@pytest.mark.parametrize(
    "usage", [{"prompt_tokens": 1e30}, {"prompt_tokens": -1000}, {"completion_tokens": 2.5}, {"cached_tokens": -3}]
)
def test_usage_that_is_not_a_token_count_fails_the_call_and_charges_nothing(server, make_pipeline, capsys, usage):
    server.configure(**usage)
    pipe = make_pipeline(
        rows_of(["one", "two"]), server.base_url, teacher={"price": {"input": 1.0, "output": 2.0}, "max_cost": 0.5}
    )
    r = cli(capsys, "run", pipe)
    one_line_error(r, code=4)  # every row failed: outputs written, exit 4, no traceback (SQLite overflow before)
    field = next(iter(usage))
    records = read_annotations(out_dir_of(pipe))
    assert all(
        rec["status"] == "failed" and f"{field}=" in rec["error"] and "not a token count" in rec["error"]
        for rec in records
    ), records
    manifest = json.loads((out_dir_of(pipe) / "run.json").read_text())
    assert manifest["cost_total_usd"] == 0.0 and manifest["tokens"] == 0  # never negative, never a loosened budget


@pytest.mark.parametrize(
    "setting, value",
    [
        ("teacher.price.input", ".inf"),
        ("teacher.price.output", ".nan"),
        ("teacher.price.cached_input", "-1"),
        ("teacher.max_cost", ".inf"),
        ("teacher.timeout", ".inf"),
        ("teacher.max_backoff", "1e300"),
        ("teacher.batch_poll_interval", ".inf"),
        ("teacher.rpm", "1" + "0" * 400),
        ("teacher.max_tokens", "1e300"),
    ],
)
def test_prices_budgets_and_times_in_a_pipeline_are_finite(tmp_path, make_pipeline, capsys, setting, value):
    pipe = make_pipeline(rows_of(["one"]), teacher={"price": {"input": 1.0, "output": 2.0}})
    err = one_line_error(cli(capsys, "validate", pipe, "--set", f"{setting}={value}"))
    assert setting in err, err


def test_the_estimate_stays_a_number(make_pipeline, capsys):
    pipe = make_pipeline(rows_of(["one", "two"]), teacher={"price": {"input": 1e6, "output": 1e6}, "max_tokens": 10**7})
    r = cli(capsys, "validate", pipe, "--estimate", "--json")
    assert r.code == 0, r.err
    est = json.loads(r.out)["estimate"]
    assert est["cost_max_usd"] > 0 and est["cost_max_usd"] < float("inf")
    assert yaml.safe_load(pipe.read_text())["teacher"]["price"]["input"] == 1e6


def test_numbers_in_an_annotations_file_are_checked(tmp_path, capsys):
    from test_export import make_label_run

    run = make_label_run(tmp_path / "run", n=30)
    lines = (run / "annotations.jsonl").read_text().splitlines()
    for field, value in (("confidence", "NaN"), ("confidence", "5"), ("tokens", "-5"), ("cost", "Infinity")):
        rec = json.loads(lines[3])
        hostile = json.dumps(rec)[:-1] + f', "{field}": {value}}}'
        (run / "annotations.jsonl").write_text("\n".join([*lines[:3], hostile, *lines[4:]]) + "\n")
        for args in (["export", run, "--out", tmp_path / "ds"], ["sample", run, "--n", "5", "--out", tmp_path / "s"]):
            err = one_line_error(cli(capsys, *args))  # a traceback or NaN confidences taken at face value before
            assert "annotations.jsonl:4" in err and field in err, err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train-student", "nowhere", "--lr", "nan"], "--lr"),
        (["train-student", "nowhere", "--epochs", "inf", "--patience", "0"], "--epochs"),
        (["sample", "RUN", "--plan", "--expected-alpha", "7"], "--expected-alpha"),
        (["audit", "--humans", "H", "--teacher", "RUN", "--min-agreement", "nan"], "--min-agreement"),
        (["audit", "--humans", "H", "--teacher", "RUN", "--bootstrap", "1000000000"], "--bootstrap"),
    ],
)
def test_numbers_on_the_command_line_are_bounded(tmp_path, capsys, args, expected):
    from test_export import make_label_run

    run = make_label_run(tmp_path / "run", n=30)
    humans = tmp_path / "h.csv"
    humans.write_text("item_id,annotator,label\nn000,a,politics\nn000,b,politics\n")
    args = [str(run) if a == "RUN" else str(humans) if a == "H" else a for a in args]
    assert expected in one_line_error(cli(capsys, *args))
