"""Bad inputs: each is one clear error (exit 2, no traceback, no teacher call) or a recorded per-row failure,
never a traceback or a silently lost row."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import out_dir_of, read_annotations, rows_of


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"data/{name}"


def _fails_cleanly(proc, *needles: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert "error:" in out, out
    flat = " ".join(out.split())  # rich wraps long lines
    for needle in needles:
        assert needle in flat, f"{needle!r} not in:\n{out}"
    return out


# -- whole-file problems: one clear error before any teacher call ----------------------------------------------
FILE_CASES = {
    "missing-text-column": ("input.csv", b"id,body\n1,hello\n", {}, ["missing column 'text'", "found: id, body"]),
    "missing-id-column": ("input.csv", b"id,text\n1,hello\n", {"id_column": "uid"}, ["missing column 'uid'"]),
    "empty-file": ("input.csv", b"", {}, ["input file is empty"]),
    "header-only": ("input.csv", b"id,text\n", {}, ["has no rows"]),
    "blank-jsonl": ("input.jsonl", b"\n\n", {}, ["cannot read"]),
    "latin1-csv": ("input.csv", "id,text\n1,ok\n2,caf\u00e9 cr\u00e8me\n".encode("latin-1"), {}, ["not valid UTF-8"]),
    "latin1-jsonl": ("input.jsonl", '{"id": 1, "text": "caf\u00e9"}\n'.encode("latin-1"), {}, ["not valid UTF-8"]),
    "broken-jsonl-line": ("input.jsonl", b'{"id": 1, "text": "a"}\n{"id": 2, "text": oops}\n', {}, ["cannot read"]),
    "ragged-csv": ("input.csv", b"id,text\n1,hello\n2,a,b,c\n", {}, ["cannot read", "more fields"]),
    "unknown-extension": ("input.txt", b"id,text\n1,hello\n", {}, ["cannot tell the format"]),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_input_file_is_one_clear_error(case, server, make_pipeline, run_cli, tmp_path):
    name, data, input_over, needles = FILE_CASES[case]
    rel = _write(tmp_path, name, data)
    p = make_pipeline(None, server.base_url, input_file=rel, input=input_over)
    _fails_cleanly(run_cli("run", str(p), "--quiet"), *needles)
    assert server.stats()["total"] == 0
    assert not (out_dir_of(p) / "annotations.jsonl").exists()


def test_missing_input_file(server, make_pipeline, run_cli):
    p = make_pipeline(None, server.base_url, input_file="data/nope.csv")
    _fails_cleanly(run_cli("run", str(p), "--quiet"), "input file not found", "nope.csv")
    assert server.stats()["total"] == 0


# -- ids -----------------------------------------------------------------------------------------------------
def test_duplicate_ids_stop_the_run_and_a_fixed_file_resumes(server, make_pipeline, run_cli):
    rows = rows_of([f"unique text {i}" for i in range(12)])
    rows[9]["id"] = rows[3]["id"]
    p = make_pipeline(rows, server.base_url)
    _fails_cleanly(run_cli("run", str(p), "--quiet"), "duplicate id 'r00003'", "rows 4 and 10")
    assert not (out_dir_of(p) / "annotations.jsonl").exists()  # no half output

    # fix the id: the rerun completes, every row once, and nothing answered before is asked again
    asked_before = server.stats()["by_item"]
    rows[9]["id"] = "r00009"
    make_pipeline(rows, server.base_url)
    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = read_annotations(out_dir_of(p))
    assert [r["id"] for r in recs] == [f"r{i:05d}" for i in range(12)]
    assert all(r["status"] == "ok" for r in recs)
    assert all(n == 1 for n in server.stats()["by_item"].values())
    assert set(asked_before) <= {r["text"] for r in recs}


@pytest.mark.parametrize("bad_id", [None, ""])
def test_missing_id_is_a_clear_error(bad_id, server, make_pipeline, run_cli):
    rows = rows_of(["first", "second", "third"])
    rows[1]["id"] = bad_id
    p = make_pipeline(rows, server.base_url)
    _fails_cleanly(run_cli("run", str(p), "--quiet"), "row 2 has no id")


# -- per-row problems: recorded failures, the rest of the run goes on ---------------------------------------------
def test_empty_and_huge_texts_are_per_row_failures(server, make_pipeline, run_cli):
    huge = "word " * 400_000  # 2 MB
    rows = [
        {"id": "ok1", "text": "a normal news item"},
        {"id": "empty", "text": ""},
        {"id": "blank", "text": "   \n\t "},
        {"id": "null", "text": None},
        {"id": "huge", "text": huge},
        {"id": "ok2", "text": "another news item"},
    ]
    p = make_pipeline(rows, server.base_url, input={"max_chars": 100_000}, validation={"max_failed_fraction": 1.0})
    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    recs = {r["id"]: r for r in read_annotations(out_dir_of(p))}
    assert list(recs) == ["ok1", "empty", "blank", "null", "huge", "ok2"]
    assert recs["ok1"]["status"] == recs["ok2"]["status"] == "ok"
    for rid in ("empty", "blank", "null"):
        assert recs[rid]["status"] == "failed" and recs[rid]["error"] == "empty text"
    assert recs["huge"]["status"] == "failed"
    assert "text too long (2000000 > input.max_chars=100000" in recs["huge"]["error"]
    assert recs["huge"]["text"] == huge  # the record still carries its row
    stats = server.stats()
    assert stats["total"] == 2  # only the two good rows reached the teacher


def test_prompt_over_the_servers_context_is_a_per_row_failure(server, make_pipeline):
    from conftest import run_pipeline

    server.configure(max_prompt_chars=50_000)
    rows = [{"id": "small", "text": "short text"}, {"id": "big", "text": "lorem ipsum " * 20_000}]
    p = make_pipeline(rows, server.base_url)
    _, recs = run_pipeline(p)
    assert recs["small"]["status"] == "ok"
    assert recs["big"]["status"] == "failed"
    assert "HTTP 400" in recs["big"]["error"] and "maximum context length" in recs["big"]["error"]
    assert server.stats()["total"] == 2  # a 400 is not retried


def test_non_string_values_are_read_as_text(server, make_pipeline):
    from conftest import run_pipeline

    rows = [{"id": 1, "text": "plain"}, {"id": "x2", "text": 12345}, {"id": 3, "text": {"nested": True}}]
    p = make_pipeline(rows, server.base_url)
    _, recs = run_pipeline(p)
    assert list(recs) == ["1", "x2", "3"]
    assert recs["x2"]["text"] == "12345"
    assert all(r["status"] == "ok" for r in recs.values())


# -- templates -----------------------------------------------------------------------------------------------
def _template(tmp_path: Path, source: str) -> str:
    (tmp_path / "prompt.jinja").write_text(source, encoding="utf-8")
    return "prompt.jinja"


def test_template_with_unknown_variable_fails_before_any_call(server, make_pipeline, run_cli, tmp_path):
    tpl = _template(tmp_path, "Classify: {{ text }} into {{ labelz }}")
    p = make_pipeline(rows_of(["a", "b"]), server.base_url, prompt={"template": tpl})
    _fails_cleanly(run_cli("run", str(p), "--quiet"), "'labelz' is undefined", "available variables:")
    assert server.stats()["total"] == 0


def test_template_syntax_error(server, make_pipeline, run_cli, tmp_path):
    tpl = _template(tmp_path, "Classify: {{ text }\n")
    p = make_pipeline(rows_of(["a"]), server.base_url, prompt={"template": tpl})
    _fails_cleanly(run_cli("run", str(p), "--quiet"), "syntax error on line 1")
    assert server.stats()["total"] == 0


def test_template_failing_on_some_rows_records_those_rows(server, make_pipeline, run_cli, tmp_path):
    """The first row renders (so the up-front check passes); a later row lacks the nested field."""
    tpl = _template(tmp_path, "Section {{ row.meta.section }}. Text: {{ text }}\n\nAnswer with JSON only: {}")
    rows = [
        {"id": "a", "text": "first", "meta": {"section": "news"}},
        {"id": "b", "text": "second", "meta": None},
        {"id": "c", "text": "third", "meta": {"section": "sport"}},
    ]
    p = make_pipeline(rows, server.base_url, prompt={"template": tpl}, validation={"max_failed_fraction": 0.5})
    proc = run_cli("run", str(p), "--quiet")
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode == 0, out
    recs = {r["id"]: r for r in read_annotations(out_dir_of(p))}
    assert list(recs) == ["a", "b", "c"]
    assert recs["a"]["status"] == recs["c"]["status"] == "ok"
    assert recs["b"]["status"] == "failed" and "section" in recs["b"]["error"]
    assert server.stats()["total"] == 2
