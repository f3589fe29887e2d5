"""Rule 5 (docs/safety.md): Make targets are not a shell, and a partial result is never a fresh target.

``annotator deps`` emits only paths of letters, digits and ``_ - . / + , @`` (a ``;`` in a prerequisite list starts a
recipe: ``data/x;touch pwned.csv`` used to run ``touch pwned.csv``); the Makefile ignores pipeline files with other
names and refuses such HUMANS/GOLD/INPUT values; an output made under ``--limit`` has the modification time 0, so
``make run`` afterwards runs the whole pipeline instead of taking the 5-row trial for the result."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hostile import cli, one_line_error
from test_makefile import is_up_to_date, make, project  # noqa: F401 - the fixture, shared

from conftest import REPO, pipeline_config, rows_of, write_rows

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


@pytest.mark.parametrize("where", ["input", "output", "template", "pipeline"])
def test_deps_refuses_a_path_make_or_a_shell_would_not_take_literally(tmp_path, capsys, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    odd = "x;touch pwned"
    cfg = pipeline_config(name="odd")
    cfg["input"]["path"] = f"data/{odd}.jsonl" if where == "input" else "data/in.jsonl"
    cfg["output"]["dir"] = f"runs/{odd}" if where == "output" else "runs/ok"
    if where == "template":
        cfg["prompt"] = {"template": f"{odd}.jinja"}
        shutil.copy(REPO / "annotator" / "prompts" / "label.jinja", tmp_path / f"{odd}.jinja")
    write_rows(tmp_path / cfg["input"]["path"], rows_of(["a", "b"]))
    pipe = tmp_path / (f"{odd}.yaml" if where == "pipeline" else "odd.yaml")
    pipe.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    err = one_line_error(cli(capsys, "deps", pipe, "--name", "odd"))
    assert "make cannot use the path" in err and odd in err
    assert "a Make variable prefix is" in one_line_error(cli(capsys, "deps", pipe, "--name", "a=b;c"))


def test_the_makefile_ignores_pipeline_files_named_like_commands(project: Path):  # noqa: F811
    bad = project / "pipelines" / "x;touch pwned.yaml"
    shutil.copy(project / "pipelines" / "tiny.yaml", bad)
    proc = make(project, "-n", "runs/tiny/annotations.jsonl", check=False)  # reads every pipeline's fragment
    assert not (project / "pwned.yaml").exists() and not (project / "pwned").exists(), proc.stdout + proc.stderr
    assert "Pipelines found: tiny" in make(project, "help").stdout
    refused = make(project, "help", "HUMANS=h.csv;touch pwned", check=False)
    assert refused.returncode != 0 and "HUMANS=" in refused.stderr and not (project / "pwned").exists()


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_limited_run_never_satisfies_make_run(project: Path):  # noqa: F811
    make(project, "run", "P=tiny", "RUN_ARGS=--limit 5")
    annotations = project / "runs" / "tiny" / "annotations.jsonl"
    assert len(annotations.read_text().splitlines()) == 5
    assert annotations.stat().st_mtime == 0
    assert not is_up_to_date(project, "run")  # the 5-row trial is not the pipeline's result
    make(project, "run", "P=tiny")
    assert len(annotations.read_text().splitlines()) == 16 and annotations.stat().st_mtime > 0
    assert is_up_to_date(project, "run")
