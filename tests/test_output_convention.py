"""One output convention: results to stdout, progress and logs to stderr, --json on every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import LABELS, REPO, out_dir_of, rows_of
from fault_server import expected_label

TEXTS = [f"Report {i}: the council met and the team won." for i in range(24)]


def test_run_and_validate_print_results_to_stdout(make_pipeline, run_cli, server):
    p = make_pipeline(rows_of(TEXTS), base_url=server.base_url)
    v = run_cli("validate", str(p))
    assert v.returncode == 0 and "24 input rows" in v.stdout and "Text: Report 0" in v.stdout
    r = run_cli("run", str(p))
    assert r.returncode == 0, r.stderr
    assert "teacher calls" in r.stdout and "annotations.jsonl" in r.stdout  # the summary is the result
    assert "teacher calls" not in r.stderr
    j = run_cli("run", str(p), "--json")
    summary = json.loads(j.stdout)  # stdout is exactly one JSON document
    assert summary["rows_total"] == 24 and summary["cache_hits"] == 24
    assert summary["annotations"] == str(out_dir_of(p) / "annotations.jsonl")
    # failures: the hint is a log line (stderr), the JSON stays parseable
    bad = make_pipeline(
        rows_of(["[[malformed]] x", "fine"]),
        base_url=server.base_url,
        name="bad",
        output={"dir": "bad-out"},
        validation={"max_attempts": 1},
    )
    j = run_cli("run", str(bad), "--json", "--max-failed-fraction", "1")  # 1 of 2 rows fails on purpose
    assert j.returncode == 0 and json.loads(j.stdout)["rows_failed"] == 1
    assert "failed" in j.stderr and "--retry-failed" in j.stderr


def test_validate_json_error_stays_on_stderr(make_pipeline, run_cli):
    p = make_pipeline(rows_of(TEXTS), task={"type": "label", "labels": LABELS, "bogus": 1})
    proc = run_cli("validate", str(p), "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "task.bogus: unknown field" in proc.stderr


def test_audit_and_export_json(make_pipeline, run_cli, server, tmp_path):
    pytest.importorskip("datasets")
    p = make_pipeline(rows_of(TEXTS), base_url=server.base_url)
    assert run_cli("run", str(p), "--quiet").returncode == 0
    run_dir = out_dir_of(p)
    humans = tmp_path / "humans.csv"
    lines = ["id,annotator,label"]
    for i, t in enumerate(TEXTS):
        truth = expected_label(t, LABELS)
        lines += [f"r{i:05d},a,{truth}", f"r{i:05d},b,{truth if i % 4 else LABELS[0]}"]
    humans.write_text("\n".join(lines) + "\n")

    audit = run_cli(
        "audit",
        "--humans",
        str(humans),
        "--teacher",
        str(run_dir),
        "--out",
        str(tmp_path / "audit"),
        "--bootstrap",
        "0",
        "--no-plots",
        "--json",
    )
    assert audit.returncode == 0, audit.stderr
    report = json.loads(audit.stdout)
    assert report == json.loads((tmp_path / "audit" / "report.json").read_text())
    text = run_cli(
        "audit",
        "--humans",
        str(humans),
        "--teacher",
        str(run_dir),
        "--out",
        str(tmp_path / "audit2"),
        "--bootstrap",
        "0",
        "--no-plots",
    )
    assert "Teacher-human agreement" in text.stdout and "report.md" in text.stdout

    export = run_cli("export", str(run_dir), "--out", str(tmp_path / "ds"), "--json")
    assert export.returncode == 0, export.stderr
    summary = json.loads(export.stdout)
    assert summary == json.loads((tmp_path / "ds" / "export.json").read_text())
    assert summary["counts"]["exported_items"] == len(TEXTS)
    text = run_cli("export", str(run_dir), "--out", str(tmp_path / "ds2"))
    assert "exported" in text.stdout and "dataset:" in text.stdout


def test_sample_and_deps_json(make_pipeline, run_cli, server, tmp_path):
    p = make_pipeline(rows_of(TEXTS), base_url=server.base_url)
    assert run_cli("run", str(p), "--quiet").returncode == 0
    run_dir = out_dir_of(p)
    plan = run_cli("sample", str(run_dir), "--n", "10", "--plan", "--json")
    assert plan.returncode == 0, plan.stderr
    assert set(json.loads(plan.stdout)) == {"plan"} and not (tmp_path / "sheets").exists()
    drawn = run_cli(
        "sample",
        str(run_dir),
        "--n",
        "10",
        "--annotators",
        "2",
        "--per-item",
        "2",
        "--seed",
        "1",
        "--out",
        str(tmp_path / "sheets"),
        "--json",
    )
    assert drawn.returncode == 0, drawn.stderr
    result = json.loads(drawn.stdout)
    assert result["design"] == json.loads((tmp_path / "sheets" / "sample.json").read_text())
    assert result["design"]["n"] == 10 and all(Path(f).exists() for f in result["files"].values())
    deps = run_cli("deps", str(p), "--json")
    assert deps.returncode == 0, deps.stderr
    assert json.loads(deps.stdout) == {
        "run": str(run_dir),
        "deps": [str(p), str(p.parent / "data" / "input.jsonl"), str(REPO / "annotator" / "prompts" / "label.jinja")],
    }


def test_every_command_offers_json(run_cli):
    for cmd in ("run", "validate", "audit", "export", "train-student", "sample", "deps"):
        assert "--json" in run_cli(cmd, "--help").stdout, cmd


def test_verbose_and_quiet_set_the_log_level_and_leave_results_alone(make_pipeline, run_cli, tmp_path):
    """``annotator -v`` adds DEBUG lines on stderr, ``-q`` silences warnings and notes; stdout is the same."""
    p = make_pipeline(rows_of(TEXTS))
    plain, verbose = run_cli("validate", str(p)), run_cli("-v", "validate", str(p))
    assert plain.returncode == verbose.returncode == 0, verbose.stderr
    assert "DEBUG" not in plain.stderr
    assert "DEBUG annotator.inputs: input" in verbose.stderr and "24 rows" in verbose.stderr
    assert verbose.stdout == plain.stdout

    humans, teacher = tmp_path / "humans.csv", tmp_path / "teacher.csv"
    humans.write_text(
        "item_id,annotator,label\n"
        + "".join(f"i{i},a,{LABELS[i % 2]}\ni{i},b,{LABELS[i % 3 % 2]}\ni{i},c,\n" for i in range(12))
    )
    teacher.write_text("item_id,label\n" + "".join(f"i{i},{LABELS[i % 2]}\n" for i in range(12)))
    args = ["audit", "--humans", str(humans), "--teacher", str(teacher), "--bootstrap", "0", "--no-plots"]
    default = run_cli(*args, "--out", str(tmp_path / "a1"))
    quiet = run_cli("-q", *args, "--out", str(tmp_path / "a2"))
    assert default.returncode == quiet.returncode == 0, quiet.stderr
    assert "no rating at all left out" in default.stderr and "warning:" in default.stderr  # a log line and a note
    assert quiet.stderr == ""
    assert quiet.stdout.replace("a2", "a1") == default.stdout
    bad = run_cli("-v", "-q", "validate", str(p))
    assert bad.returncode == 2 and "exclude each other" in bad.stderr


def test_quiet_run_keeps_its_notes_off_stderr(make_pipeline, run_cli, server):
    """``annotator -q run``: the failed-rows hints are notes, not errors (the run's console is made after -q is
    read, not when the command module is imported); stdout (the summary) is the same."""
    p = make_pipeline(
        rows_of(["[[malformed]] x", "fine"]),
        base_url=server.base_url,
        validation={"max_attempts": 1, "max_failed_fraction": 1.0},
    )
    default = run_cli("run", str(p))
    quiet = run_cli("-q", "run", str(p))
    assert default.returncode == quiet.returncode == 0, quiet.stderr
    assert "1 row(s) failed" in default.stderr and "--retry-failed" in default.stderr
    assert quiet.stderr == ""
    assert "teacher calls" in quiet.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["export", "{missing}", "--format", "Chat"],
        ["sample", "{missing}", "--strategy", "Random"],
        ["audit", "--humans", "{missing}", "--teacher", "{missing}", "--gate-metric", "Accuracy"],
        ["audit", "--humans", "{missing}", "--teacher", "{missing}", "--level", "Ordinal"],
    ],
)
def test_enum_options_ignore_case_like_every_other(run_cli, tmp_path, args):
    """--level always took 'Ordinal'; the other choices do too (the command then gets to its own checks)."""
    res = run_cli(*[a.format(missing=tmp_path / "nowhere") for a in args])
    assert res.returncode == 2 and "Invalid value" not in res.stderr and "nowhere" in res.stderr, res.stderr
