"""`annotator predict`: a real (tiny) student labels a corpus; kill -9 and resume; routing; user errors.

The real student (``student_dir``, tests/engines.py: MiniLM after two training steps, once per session) serves the
labelling tests (slow); the user errors and the resume logic need only a student folder's files and a labeler, so
they run without a model (``student_files``, a stand-in labeler)."""

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

from hostile import fake_student

from annotator.guard import claim

from conftest import kill_group, spawn_cli, write_rows
from label_runs import LABELS

WORDS = ["election parliament minister", "inflation market bank", "football match goal", "weather"]


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
    n = 240  # the kill comes after ~10 rows: the rest takes far longer than the 50 ms between checks
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
    proc = spawn_cli(
        "predict",
        str(student_dir),
        str(inp),
        "--out",
        str(out),
        "--quiet",
        "--batch-size",
        "8",
        "--route-below",
        "0.4",
        "--route-out",
        str(route),
    )
    try:
        deadline = time.monotonic() + 300
        while (not out.exists() or out.stat().st_size < 1500) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "predict finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        kill_group(proc)
    partial = out.read_text(encoding="utf-8").splitlines()
    assert 0 < len(partial) < n
    with out.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "d0')
    proc = predict_cli(
        run_cli, student_dir, inp, out, "--batch-size", "8", "--route-below", "0.4", "--route-out", str(route)
    )
    assert f"resumed after {len(partial):,}" in proc.stderr
    resumed = read_jsonl(out)
    assert [r["id"] for r in resumed] == [r["id"] for r in got]  # each row once, in order
    assert [r.get("label") for r in resumed] == [r.get("label") for r in got]
    assert [r["row"] for r in read_jsonl(route)] == expect

    # a finished file: nothing left to do
    proc = predict_cli(run_cli, student_dir, inp, out)
    assert "0 rows labelled" in proc.stderr and read_jsonl(out) == resumed


@pytest.fixture
def student_files(tmp_path: Path) -> Path:
    """A student folder as train-student writes it, without the weights: what predict checks before loading them."""
    return fake_student(tmp_path / "student", tuple(LABELS))  # tests/hostile.py: one fake for every test


def test_predict_user_errors(student_files, tmp_path, run_cli):
    """Every mistake is one line before any model is loaded (the student folder here has no weights)."""
    student_dir = student_files
    inp = corpus(tmp_path / "in.jsonl", 20)

    def fails(*args: str) -> str:
        proc = run_cli("predict", *args, "--quiet")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and "error:" in proc.stderr
        return proc.stderr

    assert "is not a student" in fails(str(tmp_path), str(inp), "--out", str(tmp_path / "o.jsonl"))
    assert "not found" in fails(str(tmp_path / "nope"), str(inp), "--out", str(tmp_path / "o.jsonl"))
    assert "JSONL" in fails(str(student_dir), str(inp), "--out", str(tmp_path / "o.csv"))
    assert "missing column 'body'" in fails(
        str(student_dir), str(inp), "--out", str(tmp_path / "o.jsonl"), "--text-column", "body"
    )
    other = tmp_path / "other.jsonl"  # predictions files of `annotator predict` (claimed), for other inputs/students
    other.write_text(json.dumps({"id": "zzz", "label": "sport"}) + "\n")
    claim(other, "predict", "predictions")
    assert "written for another input" in fails(str(student_dir), str(inp), "--out", str(other))
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(json.dumps({"id": "d00000", "label": "weather"}) + "\n")
    claim(foreign, "predict", "predictions")
    assert "another student" in fails(str(student_dir), str(inp), "--out", str(foreign))
    assert "go together" in fails(
        str(student_dir), str(inp), "--out", str(tmp_path / "o.jsonl"), "--route-below", "0.5"
    )


def test_resume_checks_the_rows_cuts_a_torn_tail_and_trims_the_route_file(student_files, tmp_path):
    """predict_file with a stand-in labeler: a crash leaves OUT with a torn last line and the route file ahead of
    OUT; the rerun keeps every whole line, labels each missing row once, in order, and routes the same rows."""
    from annotator.inputs import InputConfig
    from annotator.student.predict import (
        PREDICTIONS_ROLE,
        ROUTE_ROLE,
        PredictOptions,
        load_student_info,
        predict_file,
    )

    info = load_student_info(student_files)
    inp = corpus(tmp_path / "in.csv", 300)
    labelled: list[str] = []

    def labeler(batches):
        for batch in batches:
            labelled.extend(r.id for r in batch)
            yield [
                {"error": "empty text"}
                if not r.text
                else {"label": LABELS[r.index % 3], "confidence": 0.3 + 0.1 * (r.index % 5), "probs": {}}
                for r in batch
            ]

    def run(out: Path, route: Path):
        opts = PredictOptions(out=out, route_below=0.5, route_out=route, batch_size=16)
        return predict_file(info, InputConfig(path=inp), opts, labeler)

    ref = run(tmp_path / "ref.jsonl", tmp_path / "ref_route.jsonl")
    assert (ref.rows, ref.predicted, ref.resumed_after, ref.failed) == (300, 300, 0, 4)
    full, full_route = read_jsonl(tmp_path / "ref.jsonl"), read_jsonl(tmp_path / "ref_route.jsonl")
    assert [r["row"] for r in full_route] == [i for i, r in enumerate(full) if "error" in r or r["confidence"] < 0.5]

    out, route = tmp_path / "out.jsonl", tmp_path / "route.jsonl"
    lines = (tmp_path / "ref.jsonl").read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:100]) + lines[100][:9])  # a torn line, as a kill leaves it
    route.write_text((tmp_path / "ref_route.jsonl").read_text())  # routed further than OUT got
    claim(out, "predict", PREDICTIONS_ROLE)  # the claims the killed run wrote before its first line
    claim(route, "predict", ROUTE_ROLE)
    labelled.clear()
    summary = run(out, route)
    assert summary.resumed_after == 100 and summary.predicted == 200
    assert labelled == [f"d{i:05d}" for i in range(100, 300)]  # each missing row once, none again
    assert read_jsonl(out) == full and read_jsonl(route) == full_route


def test_ray_predictions_are_cut_back_into_the_callers_batches(tmp_path):
    """The Ray labeler's pieces that need no cluster: the ordered stream regrouped per batch (a short stream is an
    error), the model files shipped by name, one actor per GPU or all CPUs but one."""
    from annotator.inputs import InputRow
    from annotator.student.ray_predict import _model_files, _placement, _regroup

    rows = [InputRow(index=i, id=f"r{i}", text=f"t{i}", columns={}) for i in range(5)]
    stream = iter([{"pred": json.dumps({"label": f"l{i}"})} for i in range(5)])
    assert [[p["label"] for p in b] for b in _regroup([rows[:2], rows[2:]], stream)] == [
        ["l0", "l1"],
        ["l2", "l3", "l4"],
    ]
    with pytest.raises(RuntimeError, match="Ray returned 1 predictions for a batch of 2 rows"):
        list(_regroup([rows[:2]], iter([{"pred": "{}"}])))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0\1")
    assert _model_files(tmp_path) == {"config.json": b"{}", "model.safetensors": b"\0\1"}

    class Cluster:
        def __init__(self, resources):
            self.resources = resources

        def cluster_resources(self):
            return self.resources

    assert _placement(Cluster({"CPU": 4.0, "GPU": 2.0}), None) == (2, {"num_gpus": 1}, "cuda")
    assert _placement(Cluster({"CPU": 4.0}), None) == (3, {"num_cpus": 1}, "cpu")
    assert _placement(Cluster({"CPU": 1.0}), 2) == (2, {"num_cpus": 1}, "cpu")
