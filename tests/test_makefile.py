"""`make` as the pipeline runner: real file targets, incremental rebuilds, no fresh-looking target after a failure.

Each test drives the real ``make`` in a temporary copy of the project's Makefile with one small pipeline (an
``openai`` teacher against the local fault server), using this test run's virtual environment.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, ServerHandle, pipeline_config, rows_of, subprocess_env, write_rows

pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed"),
    pytest.mark.slow,
]  # real make, annotator processes and a student

LABELS = ["politics", "sport"]
TEXTS = [f"{'Parliament votes' if i % 2 else 'The striker scores'} on item {i}." for i in range(16)]
CHAIN = ("annotations.jsonl", "audit/report.json", "dataset/dataset_dict.json", "student/metrics.json")


@pytest.fixture
def project(tmp_path: Path, server: ServerHandle) -> Path:
    """A copy of the Makefile plus pipelines/tiny.yaml, its input, its own template and a human-label file."""
    root = tmp_path / "proj"
    (root / "pipelines" / "data").mkdir(parents=True)
    (root / "prompts").mkdir()
    shutil.copy(REPO / "Makefile", root / "Makefile")
    template = next((REPO / "annotator").rglob("label.jinja"), None) or REPO / "prompts" / "label.jinja"
    shutil.copy(template, root / "prompts" / "tiny.jinja")
    write_rows(root / "pipelines" / "data" / "tiny.jsonl", rows_of(TEXTS))
    cfg = pipeline_config(server.base_url, name="tiny")
    cfg["input"]["path"] = "data/tiny.jsonl"
    cfg["task"]["labels"] = LABELS
    cfg["prompt"] = {"template": "../prompts/tiny.jinja"}
    cfg["output"]["dir"] = "../runs/tiny"
    (root / "pipelines" / "tiny.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    rng = random.Random(0)
    lines = ["item_id,annotator,label"]
    for row in rows_of(TEXTS):
        truth = "politics" if "Parliament" in row["text"] else "sport"
        for a in ("ann1", "ann2", "ann3"):
            lines.append(f"{row['id']},{a},{truth if rng.random() < 0.85 else rng.choice(LABELS)}")
    (root / "pipelines" / "data" / "humans.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "stamp").touch()  # newer than pyproject.toml: the venv counts as set up
    return root


def make(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    venv = Path(sys.executable).parent.parent
    cmd = [
        "make",
        "--no-print-directory",
        f"VENV={venv}",
        f"STAMP={root / 'stamp'}",
        "HUMANS=pipelines/data/humans.csv",
        "STUDENT_ARGS=--max-steps 1 --batch-size 4 --no-progress",
        *args,
    ]
    env = subprocess_env(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def mtimes(root: Path) -> dict[str, int]:
    return {name: (root / "runs" / "tiny" / name).stat().st_mtime_ns for name in CHAIN}


def bump(path: Path) -> None:
    """Make ``path`` newer than everything built so far, without waiting: every other file of the project moves
    2 seconds into the past (their order kept), then ``path`` is touched."""
    root = next(p for p in path.parents if (p / "Makefile").exists())
    for other in root.rglob("*"):
        if other.is_file() and other != path:
            st = other.stat()
            os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns - 2_000_000_000))
    path.touch()


def is_up_to_date(root: Path, goal: str) -> bool:
    return make(root, "-q", goal, "P=tiny", check=False).returncode == 0


def test_chain_builds_once_then_redoes_exactly_what_a_change_made_stale(project: Path) -> None:
    make(project, "student", "P=tiny")
    built = mtimes(project)
    assert is_up_to_date(project, "student")

    second = make(project, "student", "P=tiny")  # nothing changed: nothing runs
    assert "annotator" not in second.stdout and mtimes(project) == built

    bump(project / "pipelines" / "data" / "humans.csv")  # new human labels: audit and below, not the run
    plan = make(project, "-n", "student", "P=tiny").stdout
    assert "annotator run" not in plan
    assert all(cmd in plan for cmd in ("annotator audit", "annotator export", "annotator train-student"))

    bump(project / "prompts" / "tiny.jinja")  # a template edit: the whole chain
    assert not is_up_to_date(project, "student")
    make(project, "student", "P=tiny")
    after = mtimes(project)
    assert all(after[name] > built[name] for name in CHAIN), (built, after)
    assert is_up_to_date(project, "student")

    corpus = "INPUT=pipelines/data/tiny.jsonl"  # the student labels a corpus; then predict is up to date too
    make(project, "predict", "P=tiny", corpus)
    predictions = project / "runs" / "tiny" / "predictions" / "tiny.jsonl"
    assert len(predictions.read_text(encoding="utf-8").splitlines()) == len(TEXTS)
    assert make(project, "-q", "predict", "P=tiny", corpus, check=False).returncode == 0


def test_file_goal_and_run_target_are_the_same_rule(project: Path) -> None:
    make(project, "runs/tiny/annotations.jsonl")
    assert (project / "runs" / "tiny" / "annotations.jsonl").exists()
    assert is_up_to_date(project, "run")


def test_failed_step_leaves_no_fresh_target(project: Path) -> None:
    failed = make(project, "audit", "P=tiny", "AUDIT_ARGS=--min-agreement 0.9999", check=False)
    assert failed.returncode != 0
    assert (project / "runs" / "tiny" / "annotations.jsonl").exists()
    assert not (project / "runs" / "tiny" / "audit" / "report.json").exists()
    assert not is_up_to_date(project, "audit")


def test_help_lists_pipelines_and_bad_names_are_one_clear_line(project: Path) -> None:
    assert "Pipelines found: tiny" in make(project, "help").stdout
    wrong = make(project, "run", "P=nope", check=False)
    assert wrong.returncode != 0 and "set P to one of: tiny" in wrong.stderr
    (project / "pipelines" / "tiny.yaml").write_text("name: tiny\ninput: [\n", encoding="utf-8")
    broken = make(project, "run", "P=tiny", check=False)
    assert broken.returncode != 0 and "not valid YAML" in broken.stdout + broken.stderr
    assert "Traceback" not in broken.stdout + broken.stderr


@pytest.mark.slow
def test_distill_target(project: Path, tmp_path: Path) -> None:
    """`make distill P=x` runs `annotator distill` on the pipeline (DISTILL_ARGS pass through), then is up to date."""
    import json

    from tests.tiny_model import tiny_base_model

    tiny = tiny_base_model(tmp_path / "tiny")
    opts = (
        f"DISTILL_ARGS=--model {tiny} --seed-size 6 --validation-size 2 --batch-size 2 --budget 10 "
        "--patience 0 --epochs 1 --max-length 16 -q"
    )
    plan = " ".join(make(project, "-n", "distill", "P=tiny", "GOLD=", opts).stdout.split())
    assert "annotator distill pipelines/tiny.yaml --out runs/tiny/distill --model" in plan
    make(project, "distill", "P=tiny", "GOLD=", opts)
    report = json.loads((project / "runs" / "tiny" / "distill" / "report.json").read_text(encoding="utf-8"))
    assert report["planned_calls"] == 10 and report["corpus_rows"] == len(TEXTS)
    assert make(project, "-q", "distill", "P=tiny", "GOLD=", opts, check=False).returncode == 0
