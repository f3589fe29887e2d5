"""Changing a pipeline without editing its YAML: ${VAR} expansion and --set overrides, driven through the CLI."""

from __future__ import annotations

import json

from conftest import out_dir_of, rows_of

TEXTS = ["The parliament voted.", "Rates rose again.", "The striker scored.", "A new vaccine trial."]


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_env_vars_expand_with_defaults_and_are_recorded(make_pipeline, run_cli, server):
    p = make_pipeline(
        rows_of(TEXTS),
        teacher={"base_url": "${ANNOTATOR_TEST_URL}", "concurrency": "${ANNOTATOR_TEST_CONC:-3}"},
        output={"dir": "out-${ANNOTATOR_TEST_RUN:-default}"},
    )
    proc = run_cli("run", str(p), "--json", ANNOTATOR_TEST_URL=server.base_url, ANNOTATOR_TEST_RUN="a")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert server.stats()["total"] == len(TEXTS)  # the URL came from the environment
    run_json = json.loads((p.parent / "out-a" / "run.json").read_text())
    assert run_json == {k: v for k, v in summary.items() if k not in ("annotations", "run_json", "elapsed_s")}
    assert run_json["config"]["teacher"]["base_url"] == server.base_url  # the effective config
    assert run_json["config"]["teacher"]["concurrency"] == 3  # default used, validated into an int
    assert run_json["env_vars"] == ["ANNOTATOR_TEST_URL", "ANNOTATOR_TEST_CONC", "ANNOTATOR_TEST_RUN"]


def test_missing_env_var_names_file_field_and_variable(make_pipeline, run_cli):
    p = make_pipeline(rows_of(TEXTS), teacher={"base_url": "http://${ANNOTATOR_TEST_HOST}:8000/v1"})
    err = one_error_line(run_cli("validate", str(p)))
    assert str(p) in err and "teacher.base_url" in err and "ANNOTATOR_TEST_HOST is not set" in err
    assert len(err.strip().splitlines()) == 1
    # $${ is a literal ${ (no expansion, no error)
    p2 = make_pipeline(rows_of(TEXTS), name="lit", prompt={"system": "Keep $${PLACEHOLDER} as is."})
    proc = run_cli("validate", str(p2))
    assert proc.returncode == 0, proc.stderr
    assert "Keep ${PLACEHOLDER} as is." in proc.stdout


def test_set_overrides_run_and_are_recorded(make_pipeline, run_cli, server):
    p = make_pipeline(rows_of(TEXTS))  # teacher.base_url points at a closed port
    proc = run_cli(
        "run",
        str(p),
        "--set",
        f"teacher.base_url={server.base_url}",
        "--set",
        "teacher.concurrency=2",
        "--set",
        "validation.max_tokens_per_row=500",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert server.stats()["total"] == len(TEXTS)
    run_json = json.loads((out_dir_of(p) / "run.json").read_text())
    assert run_json["overrides"] == [
        f"teacher.base_url={server.base_url}",
        "teacher.concurrency=2",
        "validation.max_tokens_per_row=500",
    ]
    assert run_json["config"]["teacher"]["base_url"] == server.base_url
    assert run_json["config"]["teacher"]["concurrency"] == 2  # YAML scalar: a number
    assert run_json["config"]["validation"]["max_tokens_per_row"] == 500  # a section absent from the file
    assert run_json["history"][-1]["overrides"] == run_json["overrides"]
    assert "base_url: http://127.0.0.1:9/v1" in p.read_text()  # the file is untouched


def test_bad_overrides_are_one_clear_error(make_pipeline, run_cli):
    p = make_pipeline(rows_of(TEXTS))
    err = one_error_line(run_cli("validate", str(p), "--set", "teacher.concurrency=lots"))
    assert "teacher.concurrency" in err and "(from --set teacher.concurrency=lots)" in err
    err = one_error_line(run_cli("validate", str(p), "--set", "teacher.base_urll=http://x"))
    assert "teacher.base_urll: unknown field" in err and "--set teacher.base_urll" in err
    err = one_error_line(run_cli("run", str(p), "--set", "teacher"))
    assert "expected KEY.PATH=VALUE" in err
    err = one_error_line(run_cli("validate", str(p), "--set", "name.first=x"))
    assert "name is a str, not a section" in err
    err = one_error_line(run_cli("validate", str(p), "--set", "task.labels.99=x"))
    assert "'99' is not an index" in err


def test_set_paths_are_relative_to_the_current_directory(make_pipeline, run_cli, tmp_path):
    p = make_pipeline(rows_of(TEXTS))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "two.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_of(TEXTS[:2], "x")))
    proc = run_cli(
        "validate",
        str(p),
        "--set",
        "input.path=two.jsonl",
        "--json",
        "--set",
        "task.labels=[positive, negative]",
        cwd=elsewhere,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["rows"] == 2 and summary["first_row"] == "x00000"
    assert summary["config"]["input"]["path"] == str(elsewhere / "two.jsonl")
    assert [lab["name"] for lab in summary["config"]["task"]["labels"]] == ["positive", "negative"]  # a YAML list
    assert "- positive" in summary["messages"][-1]["content"]


def test_validate_and_run_document_set_and_json(run_cli):
    for cmd in ("run", "validate"):
        out = run_cli(cmd, "--help").stdout
        assert "--set" in out and "--json" in out
