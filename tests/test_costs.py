"""Cost accounting, estimates and budgets (teacher.price / teacher.max_cost), through the real CLI against the
fault server (which reports fixed usage, so every cost is known exactly)."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from conftest import out_dir_of, read_annotations, rows_of

PRICE = {"input": 2.5, "cached_input": 1.25, "output": 10.0}


def _call_cost(prompt: int, cached: int, completion: int) -> float:
    return ((prompt - cached) * PRICE["input"] + cached * PRICE["cached_input"] + completion * PRICE["output"]) / 1e6


def _manifest(yaml_path) -> dict:
    return json.loads((out_dir_of(yaml_path) / "run.json").read_text())


def _stored_spend(yaml_path) -> tuple[float, int]:
    conn = sqlite3.connect(out_dir_of(yaml_path) / "cache.sqlite")
    try:
        total, n = conn.execute("SELECT SUM(cost), COUNT(*) FROM sample_usage").fetchone()
    finally:
        conn.close()
    return float(total or 0.0), int(n)


def test_cost_per_row_and_totals(run_cli, make_pipeline, server):
    server.reset(prompt_tokens=1000, cached_tokens=400, completion_tokens=10)
    texts = [f"cost item {i}" for i in range(12)] + ["fails once [[schema:1]]"]
    yaml_path = make_pipeline(rows_of(texts), server.base_url, teacher={"price": PRICE})
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 0, res.stderr
    per_call = _call_cost(1000, 400, 10)
    records = {r["id"]: r for r in read_annotations(out_dir_of(yaml_path))}
    for rec in records.values():
        calls = rec["attempts"]
        assert (rec["prompt_tokens"], rec["cached_tokens"], rec["completion_tokens"]) == (
            1000 * calls,
            400 * calls,
            10 * calls,
        )
        assert rec["cost"] == pytest.approx(per_call * calls)
    assert records["r00012"]["attempts"] == 2  # the invalid first answer was paid for too
    m = _manifest(yaml_path)
    assert m["teacher_calls"] == 14 == server.stats()["total"]
    assert m["cost_usd"] == pytest.approx(14 * per_call)
    assert m["cost_total_usd"] == pytest.approx(14 * per_call)
    assert (m["prompt_tokens"], m["cached_tokens"], m["completion_tokens"]) == (14_000, 5_600, 140)
    assert m["answers"]["cost_usd"] == pytest.approx(14 * per_call)
    assert "cost" in res.stdout and f"{14 * per_call:,.4f}" in res.stdout

    # a rerun answers from the cache: nothing spent now, the directory's total unchanged, row costs kept
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 0, res.stderr
    m = _manifest(yaml_path)
    assert m["teacher_calls"] == 0 and m["cost_usd"] == 0.0
    assert m["cost_total_usd"] == pytest.approx(14 * per_call)
    assert m["answers"]["cost_usd"] == pytest.approx(14 * per_call)  # what the annotations cost, whoever paid
    assert read_annotations(out_dir_of(yaml_path))[0]["cost"] == pytest.approx(per_call)


def test_without_price_costs_are_absent(run_cli, make_pipeline, server):
    yaml_path = make_pipeline(rows_of(["a", "b"]), server.base_url)
    assert run_cli("run", str(yaml_path), "--quiet").returncode == 0
    assert all(r["cost"] is None and r["prompt_tokens"] == 50 for r in read_annotations(out_dir_of(yaml_path)))
    assert _manifest(yaml_path)["cost_usd"] is None


def test_max_cost_stops_cleanly_and_a_larger_budget_resumes(run_cli, make_pipeline, server):
    server.reset(prompt_tokens=100, completion_tokens=10, latency=0.02)
    per_call = _call_cost(100, 0, 10)  # $0.00035
    n = 30
    yaml_path = make_pipeline(
        rows_of([f"budget item {i}" for i in range(n)]),
        server.base_url,
        teacher={"price": PRICE, "max_cost": 0.0035, "concurrency": 4},
    )
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 8, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "budget reached" in ln]
    assert len(lines) == 1 and "teacher.max_cost" in lines[0], res.stderr
    spent, stored = _stored_spend(yaml_path)
    calls = server.stats()["total"]
    assert 0 < calls < n
    assert stored == calls  # every call that was started finished and was saved
    assert spent == pytest.approx(calls * per_call)
    assert spent <= 0.0035
    assert not (out_dir_of(yaml_path) / "annotations.jsonl").exists()

    raised = yaml_path.read_text().replace("max_cost: 0.0035", "max_cost: 1.0")
    yaml_path.write_text(raised)
    res = run_cli("run", str(yaml_path), "--quiet")
    assert res.returncode == 0, res.stderr
    stats = server.stats()
    assert stats["total"] == n and set(stats["by_item"].values()) == {1}  # nobody paid twice
    m = _manifest(yaml_path)
    assert m["rows_ok"] == n
    assert m["cost_usd"] == pytest.approx((n - calls) * per_call)
    assert m["cost_total_usd"] == pytest.approx(n * per_call)


def test_max_cost_needs_a_price(run_cli, make_pipeline, server):
    yaml_path = make_pipeline(rows_of(["a"]), server.base_url, teacher={"max_cost": 1.0})
    res = run_cli("run", str(yaml_path))
    assert res.returncode == 2
    assert "teacher: Value error, max_cost needs teacher.price" in res.stderr.replace("\n", " ")
    assert "Traceback" not in res.stderr


def _money(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, text
    return float(m.group(1).replace(",", ""))


def test_validate_estimate_bounds_the_real_cost_without_calling_the_teacher(run_cli, make_pipeline, server):
    # usage like a real provider's: prompt tokens near the chars/4 estimate, short answers
    server.reset(prompt_tokens=60, completion_tokens=12)
    n = 25
    yaml_path = make_pipeline(
        rows_of([f"estimate item number {i} with a few words" for i in range(n)] + [""]),
        server.base_url,
        teacher={"price": PRICE, "samples": 2, "sample_temperature": 0.7},
    )
    res = run_cli("validate", str(yaml_path), "--estimate")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert server.stats()["total"] == 0
    assert f"{n:,} rows x 2 sample(s) = {2 * n:,} calls (1 rows not sendable)" in out
    prompt_tokens = _money(r"prompt tokens\s+│?\s*([\d,]+)", out)
    assert 2 * n * 40 < prompt_tokens < 2 * n * 120
    assert _money(r"completion tokens\s+│?\s*<= ([\d,]+)", out) == 2 * n * 32
    cost_max = _money(r"<= \$([\d.,]+)", out)

    assert run_cli("run", str(yaml_path), "--quiet").returncode == 0
    assert _manifest(yaml_path)["cost_usd"] <= cost_max

    # with answers in the output directory the estimate adds the typical completion length
    res = run_cli("validate", str(yaml_path), "--estimate")
    assert "typical: 12.0 per call over 50 earlier calls" in res.stdout
    typical = _money(r"~ \$([\d.,]+)", res.stdout)
    assert typical < cost_max


def test_audit_and_dataset_card_report_the_cost(run_cli, make_pipeline, server, tmp_path):
    server.reset(prompt_tokens=1000, cached_tokens=400, completion_tokens=10)
    n = 40
    yaml_path = make_pipeline(rows_of([f"card item {i}" for i in range(n)]), server.base_url, teacher={"price": PRICE})
    assert run_cli("run", str(yaml_path), "--quiet").returncode == 0
    run_dir = out_dir_of(yaml_path)
    per_call = _call_cost(1000, 400, 10)

    res = run_cli("export", str(run_dir))
    assert res.returncode == 0, res.stderr
    card = (run_dir / "dataset" / "README.md").read_text()
    assert f"| teacher cost | ${n * per_call:,.4f} in all, ${per_call:.6f} per item" in card

    humans = tmp_path / "humans.csv"
    lines = ["item_id,annotator,label"]
    for rec in read_annotations(run_dir):
        lines += [f"{rec['id']},ann_a,{rec['label']}", f"{rec['id']},ann_b,{rec['label']}"]
    humans.write_text("\n".join(lines) + "\n")
    res = run_cli(
        "audit",
        "--humans",
        str(humans),
        "--teacher",
        str(run_dir),
        "--out",
        str(tmp_path / "audit"),
        "--bootstrap",
        "0",
    )
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report["inputs"]["teacher_cost_per_item_usd"] == pytest.approx(per_call)
    assert f"${per_call:.6f} per item" in (tmp_path / "audit" / "report.md").read_text()
