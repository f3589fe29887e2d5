"""Ids: strings everywhere, one rule for every command (annotator.records.normalize_id), checked over the whole
input before the first teacher call; a run directory that repeats an id is refused by audit and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import LABELS, out_dir_of, read_annotations, rows_of, write_rows


def _clean_error(proc, *needles: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    flat = " ".join(out.split())
    for needle in needles:
        assert needle in flat, f"{needle!r} not in:\n{out}"


def test_the_id_rule():
    from annotator.records import normalize_id

    assert [normalize_id(v) for v in (7, 7.0, " 7", "7 ", "a b", 2.5, True)] == [
        "7",
        "7",
        "7",
        "7",
        "a b",
        "2.5",
        "true",
    ]
    assert [normalize_id(v) for v in (None, "", "  ", float("nan"))] == [None] * 4


def test_a_late_duplicate_id_stops_the_run_before_any_teacher_call(server, make_pipeline, run_cli):
    rows = rows_of([f"dup check row {i}" for i in range(150)])
    rows[120]["id"] = rows[7]["id"]
    p = make_pipeline(rows, server.base_url)
    _clean_error(run_cli("run", str(p), "--quiet"), "duplicate id 'r00007'", "rows 8 and 121")
    assert server.stats()["total"] == 0


@pytest.mark.parametrize("bad_id", [None, "", "   "])
def test_validate_catches_empty_and_missing_ids(bad_id, server, make_pipeline, run_cli):
    rows = rows_of(["first", "second", "third"])
    rows[2]["id"] = bad_id
    p = make_pipeline(rows, server.base_url)
    _clean_error(run_cli("validate", str(p)), "row 3 has no id")
    _clean_error(run_cli("run", str(p), "--quiet"), "row 3 has no id")
    assert server.stats()["total"] == 0


def test_ids_differing_only_by_spaces_are_the_same_id_in_run(server, make_pipeline, run_cli):
    p = make_pipeline([{"id": "7", "text": "seven"}, {"id": " 7", "text": "seven again"}], server.base_url)
    _clean_error(run_cli("validate", str(p)), "duplicate id '7' (rows 1 and 2)")
    _clean_error(run_cli("run", str(p), "--quiet"), "duplicate id '7' (rows 1 and 2)")


def test_int_ids_then_a_string_id_are_read_as_strings(server, make_pipeline):
    from conftest import run_pipeline

    rows = [{"id": i, "text": f"numbered row {i}"} for i in range(1000)] + [{"id": "x-1000", "text": "named row"}]
    p = make_pipeline(rows, server.base_url, teacher={"concurrency": 32})
    manifest, recs = run_pipeline(p)
    assert manifest.rows_ok == 1001
    assert list(recs)[:3] == ["0", "1", "2"] and list(recs)[-1] == "x-1000"


def test_audit_matches_ids_by_the_same_rule(server, make_pipeline, run_cli, tmp_path):
    texts = [f"audit row {i}" for i in range(6)]
    p = make_pipeline([{"id": i, "text": t} for i, t in enumerate(texts)], server.base_url)
    assert run_cli("run", str(p), "--quiet").returncode == 0
    recs = read_annotations(out_dir_of(p))
    assert [r["id"] for r in recs] == [str(i) for i in range(6)]
    # a hand-made human file with padded ids (" 3") and float ids (3.0 after a spreadsheet) still matches
    humans = tmp_path / "humans.csv"
    humans.write_text("id,ann1,ann2\n" + "".join(f" {r['id']} ,{r['label']},{r['label']}\n" for r in recs))
    proc = run_cli("audit", "--humans", str(humans), "--teacher", str(out_dir_of(p)), "--bootstrap", "0", "--no-plots")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out_dir_of(p) / "audit" / "report.json").read_text())
    assert report["coverage"]["evaluated_items"] == 6


def _duplicate_a_record(run_dir: Path) -> None:
    ann = run_dir / "annotations.jsonl"
    lines = ann.read_text().splitlines(keepends=True)
    ann.write_text("".join(lines + [lines[1]]))


@pytest.mark.parametrize("command", ["audit", "export"])
def test_a_run_dir_that_repeats_an_id_is_refused(command, server, make_pipeline, run_cli, tmp_path):
    texts = [f"repeat row {i}" for i in range(6)]
    p = make_pipeline(rows_of(texts), server.base_url)
    assert run_cli("run", str(p), "--quiet").returncode == 0
    run_dir = out_dir_of(p)
    _duplicate_a_record(run_dir)
    if command == "audit":
        humans = write_rows(tmp_path / "h.csv", [{"id": f"r{i:05d}", "a": LABELS[0], "b": LABELS[0]} for i in range(6)])
        proc = run_cli("audit", "--humans", str(humans), "--teacher", str(run_dir), "--bootstrap", "0", "--no-plots")
    else:
        proc = run_cli("export", str(run_dir))
    _clean_error(proc, "id 'r00001' occurs twice (lines 2 and 7)")
