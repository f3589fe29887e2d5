"""Rule 1 (docs/safety.md): no command destroys a file it did not write.

An output is never an input nor another output of the same command, and an existing file is replaced, truncated or
repaired only under this tool's marker (a claim beside predict's files, deps' header line, a command's manifest in
its folder). Every case below destroyed or overwrote the user's file before the guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hostile import cli, digest, fake_student, one_line_error
from test_export import make_label_run

from conftest import pipeline_config, rows_of, write_rows


def _jsonl(path: Path, rows: list[dict], trailing_newline: bool = True) -> Path:
    text = "\n".join(json.dumps(r) for r in rows) + ("\n" if trailing_newline else "")
    path.write_text(text, encoding="utf-8")
    return path


def test_predict_out_at_its_input_keeps_every_row(tmp_path, capsys):
    student = fake_student(tmp_path / "student")
    inp = _jsonl(
        tmp_path / "corpus.jsonl", [{"id": f"d{i}", "text": f"text {i}"} for i in range(5)], trailing_newline=False
    )
    before = digest(inp)
    err = one_line_error(cli(capsys, "predict", student, inp, "--out", inp))
    assert "is the INPUT file" in err
    assert digest(inp) == before  # the last row used to be cut as a "torn line"


def test_predict_route_out_at_a_users_file_is_left_untouched(tmp_path, capsys):
    student = fake_student(tmp_path / "student")
    inp = _jsonl(tmp_path / "corpus.jsonl", [{"id": f"d{i}", "text": f"text {i}"} for i in range(5)])
    users = _jsonl(tmp_path / "mine.jsonl", [{"row": 7, "id": "x", "text": "my data"}] * 3)
    users_csv = tmp_path / "mine.csv"
    users_csv.write_text("id,text\n1,a\n2,b")  # no trailing newline: looked like a torn line
    for target in (users, users_csv):
        before = digest(target)
        err = one_line_error(
            cli(
                capsys,
                "predict",
                student,
                inp,
                "--out",
                tmp_path / "p.jsonl",
                "--route-below",
                "0.5",
                "--route-out",
                target,
            )
        )
        assert (
            "was not written by `annotator predict`" in err
            if target.suffix == ".jsonl"
            else "predict writes JSONL" in err
        )
        assert digest(target) == before
    # the same goes for --out itself: a JSONL the tool did not write is never repaired or appended to
    before = digest(users)
    assert "not written by" in one_line_error(cli(capsys, "predict", student, inp, "--out", users))
    assert digest(users) == before


def test_predict_two_outputs_may_not_be_one_file(tmp_path, capsys):
    student = fake_student(tmp_path / "student")
    inp = _jsonl(tmp_path / "corpus.jsonl", [{"id": "d0", "text": "t"}])
    out = tmp_path / "p.jsonl"
    err = one_line_error(
        cli(
            capsys,
            "predict",
            student,
            inp,
            "--out",
            out,
            "--route-below",
            "0.5",
            "--route-out",
            tmp_path / "." / "p.jsonl",
        )
    )
    assert "--out and --route-out are the same file" in err
    assert not out.exists()


def _pipeline(tmp_path: Path, **over) -> Path:
    cfg = pipeline_config("http://127.0.0.1:9/v1", **over)
    write_rows(tmp_path / "data" / "input.jsonl", rows_of(["a text", "another text"]))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_deps_out_never_overwrites_a_dependency_or_a_users_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = _pipeline(tmp_path)
    before = digest(pipe)
    assert "is the dependency" in one_line_error(cli(capsys, "deps", pipe, "--out", pipe))
    assert digest(pipe) == before
    notes = tmp_path / "notes.mk"
    notes.write_text("all:\n\techo mine\n")
    assert "not written by `annotator deps`" in one_line_error(cli(capsys, "deps", pipe, "--out", notes))
    assert notes.read_text() == "all:\n\techo mine\n"
    fragment = tmp_path / "p.mk"
    assert cli(capsys, "deps", pipe, "--out", fragment).code == 0
    assert cli(capsys, "deps", pipe, "--out", fragment).code == 0  # its own fragment is replaced


def test_run_never_writes_over_its_input_or_a_users_annotations(tmp_path, capsys):
    pipe = _pipeline(tmp_path, output={"dir": "data"}, input={"path": "data/annotations.jsonl"})
    write_rows(tmp_path / "data" / "annotations.jsonl", rows_of(["a text", "another text"]))
    before = digest(tmp_path / "data" / "annotations.jsonl")
    err = one_line_error(cli(capsys, "run", pipe))
    assert "is the input file" in err
    assert digest(tmp_path / "data" / "annotations.jsonl") == before

    mine = tmp_path / "mine"
    mine.mkdir()
    _jsonl(mine / "annotations.jsonl", [{"my": "work"}])
    pipe = _pipeline(tmp_path, output={"dir": "mine"})
    err = one_line_error(cli(capsys, "run", pipe))
    assert "annotations.jsonl exists and was not written by `annotator run`" in err
    assert (mine / "annotations.jsonl").read_text() == '{"my": "work"}\n'
    assert not (mine / "cache.sqlite").exists()


def test_sample_audit_and_train_student_keep_a_users_files(tmp_path, capsys):
    run = make_label_run(tmp_path / "run", n=30)
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("sample.json", "label_studio_config.xml", "report.md", "metrics.json"):
        (folder / name).write_text(f"my {name}\n")
    err = one_line_error(cli(capsys, "sample", run, "--n", "6", "--out", folder))
    assert "label_studio_config.xml" in err and "not written by `annotator sample`" in err

    humans = tmp_path / "humans.csv"
    humans.write_text(
        "item_id,annotator,label\n" + "".join(f"n{i:03d},{a},politics\n" for i in range(12) for a in ("a1", "a2", "a3"))
    )
    err = one_line_error(
        cli(capsys, "audit", "--humans", humans, "--teacher", run, "--out", folder, "--bootstrap", "0", "--no-plots")
    )
    assert "report.md" in err and "not written by `annotator audit`" in err
    assert "is the --humans file" in one_line_error(
        cli(capsys, "audit", "--humans", humans, "--teacher", run, "--out", humans)
    )

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "dataset_dict.json").write_text("{}")
    assert "is the DATASET folder" in one_line_error(cli(capsys, "train-student", dataset, "--out", dataset))
    err = one_line_error(cli(capsys, "train-student", dataset, "--out", folder))
    assert "metrics.json" in err and "not written by `annotator train-student`" in err
    for name in ("sample.json", "label_studio_config.xml", "report.md", "metrics.json"):
        assert (folder / name).read_text() == f"my {name}\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["sample.json", "label_studio_config.xml", "report.md", "metrics.json"]
    )


def test_export_outputs_are_distinct_from_each_other_and_the_run(tmp_path, capsys):
    run = make_label_run(tmp_path / "run", n=30)
    same = tmp_path / "same"
    err = one_line_error(cli(capsys, "export", run, "--out", same, "--route-below", "0.5", "--route-out", same))
    assert "--out and --route-out are the same file" in err
    assert not same.exists()
    before = digest(run / "annotations.jsonl")
    assert "is the run directory" in one_line_error(cli(capsys, "export", run, "--out", run))
    assert digest(run / "annotations.jsonl") == before


@pytest.mark.parametrize("command", ["sample", "export"])
def test_sheets_are_replaced_only_in_a_folder_the_tool_wrote(tmp_path, capsys, command):
    run = make_label_run(tmp_path / "run", n=30)
    out = tmp_path / "sheets"
    args = (
        ["sample", run, "--n", "6", "--out", out]
        if command == "sample"
        else ["export", run, "--out", tmp_path / "ds", "--route-below", "0.5", "--route-out", out]
    )
    assert cli(capsys, *args).code == 0
    design = json.loads((out / "sample.json").read_text())
    assert design["annotators"]
    if command == "export":
        (tmp_path / "ds" / "export.json").unlink()  # so the second export may not reuse its folder...
        args[3] = tmp_path / "ds2"
    assert cli(capsys, *args).code == 0  # ...but the sheet folder it wrote is its own


def test_calibrate_never_writes_its_thresholds_over_a_users_file(make_pipeline, server, tmp_path, capsys):
    from test_cascade import cascade_pipeline, corpus, write_humans

    rows = corpus(1)
    for target in ("data/input.jsonl", "notes.json"):
        pipe = cascade_pipeline(make_pipeline, server, rows, calibration=target)
        humans = write_humans(tmp_path / "humans.csv", rows)
        mine = tmp_path / target
        if target == "notes.json":
            mine.write_text('{"my": "notes"}')
        before = digest(mine)
        err = one_line_error(cli(capsys, "calibrate", pipe, "--humans", humans, "-q"))
        assert (
            "is the input file"
            if target.startswith("data")
            else "is not a calibration file written by `annotator calibrate`"
        ) in err
        assert digest(mine) == before and server.stats()["total"] == 0  # refused before any teacher call
