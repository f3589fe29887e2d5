"""Rule 7 (docs/safety.md): readers of human files fail in one line.

Every field of a Label Studio export is checked for its shape before it is used (a string where an object or a list
belongs used to be an AttributeError or TypeError traceback, ``choices: "sport"`` was read as "5 choices selected",
a non-numeric ``inclusion_prob`` a polars traceback); the same goes for the other human files any command reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile import cli, one_line_error
from test_export import make_label_run

from conftest import TESTS_DIR

BASE = json.loads((TESTS_DIR / "data" / "human_loop_label_studio.json").read_text())


def _set(path: list, value):
    def mutate(tasks):
        node = tasks
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


CASES = {
    "data is a string": (_set([0, "data"], "n003"), "data is a string"),
    "annotation is a string": (_set([0, "annotations", 0], "sport"), "annotation 1 is a string"),
    "annotations is an object": (_set([0, "annotations"], {"a": 1}), "annotations is an object"),
    "inclusion_prob not a number": (_set([0, "data", "inclusion_prob"], "high"), "inclusion_prob is 'high'"),
    "inclusion_prob a boolean": (_set([0, "data", "inclusion_prob"], True), "inclusion_prob is True"),
    "choices is a string": (
        _set([0, "annotations", 0, "result", 0, "value", "choices"], "sport"),
        "value.choices is a string",
    ),
    "choice is an object": (
        _set([0, "annotations", 0, "result", 0, "value", "choices"], [{"x": 1}]),
        "the chosen label is an object",
    ),
    "result is a string": (_set([0, "annotations", 0, "result"], "sport"), "result is a string"),
    "completed_by is a list": (_set([0, "annotations", 0, "completed_by"], [1, 2]), "completed_by is a list"),
    "item_id is an object": (_set([0, "data", "item_id"], {"id": 3}), "has no data.item_id"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_label_studio_export_of_the_wrong_shape_is_one_line(tmp_path: Path, capsys, case):
    mutate, expected = CASES[case]
    tasks = json.loads(json.dumps(BASE))
    mutate(tasks)
    humans = tmp_path / "export.json"
    humans.write_text(json.dumps(tasks))
    teacher = tmp_path / "t.csv"
    teacher.write_text("id,label\nn003,sport\nn007,economy\nn011,sport\nn015,health\n")
    err = one_line_error(
        cli(
            capsys,
            "audit",
            "--humans",
            humans,
            "--teacher",
            teacher,
            "--out",
            tmp_path / "o",
            "--bootstrap",
            "0",
            "--no-plots",
        )
    )
    assert expected in " ".join(err.split()) and "task 1" in err, err


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\x01\x02\xff\xfe binary",
        b"item_id,annotator,label\n",
        b'{"not": "a list"}',
        b"[1, 2, 3]",
        b"item_id;label\nn003;sport\n",
    ],
)
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_any_file_given_as_human_labels_is_read_or_refused_in_one_line(tmp_path: Path, capsys, content, suffix):
    humans = tmp_path / f"h{suffix}"
    humans.write_bytes(content)
    teacher = tmp_path / "t.csv"
    teacher.write_text("id,label\nn003,sport\n")
    run = make_label_run(tmp_path / "run", n=12)
    for args in (
        ["audit", "--humans", humans, "--teacher", teacher, "--out", tmp_path / "o", "--no-plots"],
        ["sample", run, "--plan", "--pilot", humans],
        ["export", run, "--gold", humans],
    ):
        r = cli(capsys, *args)
        assert r.code == 2 and "Traceback" not in r.err and r.err.count("error:") == 1, (args, r.err)


@pytest.mark.parametrize("change", [{"labels": "politics"}, {"multi_label": "maybe"}, {"rows_total": "many"}])
def test_a_run_json_that_is_not_a_manifest_is_one_line_in_every_reader(tmp_path: Path, capsys, change):
    run = make_label_run(tmp_path / "run", n=30)
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, **change}))
    humans = tmp_path / "h.csv"
    humans.write_text("item_id,label\n" + "".join(f"n{i:03d},politics\n" for i in range(0, 30, 2)))
    for args in (
        ["export", run, "--out", tmp_path / "ds"],
        ["sample", run, "--n", "5", "--plan"],
        ["audit", "--humans", humans, "--teacher", run, "--out", tmp_path / "a", "--no-plots"],
        ["estimate", "--humans", humans, "--teacher", run, "--out", tmp_path / "e", "--no-plots"],
    ):
        err = one_line_error(cli(capsys, *args))  # tracebacks (sample, audit, estimate) before: read_manifest
        assert "run.json is not a run manifest" in err and next(iter(change)) in err, (args, err)
