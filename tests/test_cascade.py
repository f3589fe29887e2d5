"""Teacher cascades end to end: `annotator calibrate` on a human sample, `annotator run` of the cascade, export,
`validate --estimate`, make's prerequisites, and the bad inputs, in process against the shared fault server.

The fault server plays both teachers: ``cheap-model`` is in its ``weak_models`` (it answers a different label per
sample on ``[[unsure]]`` rows and the same wrong label on ``[[wrong]]`` rows), ``strong-model`` is not;
``[[hard]]`` rows get a different label per sample from both. Humans give the server's expected label.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from annotator.cli import main

from conftest import LABELS, REPO, ServerHandle, read_annotations, spawn_cli, subprocess_env, write_rows
from fault_server import expected_label

CHEAP = {"name": "cheap", "teacher": {"model": "cheap-model", "samples": 3, "price": {"input": 0.1, "output": 0.4}}}
STRONG = {"name": "strong", "teacher": {"model": "strong-model", "samples": 3, "price": {"input": 1.0, "output": 4.0}}}


def corpus(copies: int = 2) -> list[dict[str, str]]:
    """Per copy: 40 plain rows, 1 [[wrong]], 25 [[unsure]], 7 [[hard]] (73 rows)."""
    rows = []
    for c in range(copies):
        kinds = ["plain"] * 40 + ["wrong"] * 1 + ["unsure"] * 25 + ["hard"] * 7
        for i, kind in enumerate(kinds):
            marker = "" if kind == "plain" else f" [[{kind}]]"
            rows.append({"id": f"c{c}-{i:03d}", "text": f"item {c}-{i} about things{marker}"})
    return rows


def cascade_pipeline(make_pipeline, server: ServerHandle, rows: list[dict[str, str]] | None, **cascade: Any) -> Path:
    teacher = {
        "backend": "openai",
        "base_url": server.base_url,
        "concurrency": 8,
        "timeout": 2.0,
        "max_retries": 2,
        "max_backoff": 0.05,
        "max_tokens": 32,
    }
    stages = [{**st, "teacher": {**teacher, **st["teacher"]}} for st in cascade.pop("stages", [CHEAP, STRONG])]
    path = make_pipeline(rows, name="cascade", cascade={"stages": stages, "target": 0.9, "delta": 0.2, **cascade})
    cfg = yaml.safe_load(path.read_text())
    del cfg["teacher"]  # a cascade names its teachers in its stages
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_humans(path: Path, rows: list[dict[str, str]], inclusion: dict[str, float] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "annotator", "label", *(["inclusion_prob"] if inclusion else [])])
        for r in rows:
            w.writerow(
                [r["id"], "ann_1", expected_label(r["text"], LABELS), *([inclusion[r["id"]]] if inclusion else [])]
            )
    return path


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return (0 if exc.value.code is None else int(exc.value.code)), " ".join(out.split()), " ".join(err.split())


@pytest.fixture
def cascade_server(server: ServerHandle) -> ServerHandle:
    server.configure(weak_models=["cheap-model"])
    return server


def test_calibrate_chooses_hand_computed_thresholds_and_run_keeps_routes_and_queues(
    make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    rows = corpus(2)
    pipe = cascade_pipeline(make_pipeline, cascade_server, rows)
    humans = write_humans(tmp_path / "humans.csv", rows[:73])  # the first copy is the human sample
    code, out, err = cli(["calibrate", str(pipe), "--humans", str(humans), "-q"], capsys)
    assert code == 0, err
    cal = json.loads((tmp_path / "out" / "calibration.json").read_text())
    cheap, strong = cal["stages"]
    # cheap at 1.0: 41 kept (40 plain + 1 wrong), 1 disagrees: P(Bin(41, 0.1) <= 1) = 0.9^41 + 4.1 * 0.9^40 = 0.074
    # <= 0.1 (delta 0.2 / 2 stages); at 1/3 all 73 with 33 wrong: the walk stops
    assert cheap["threshold"] == 1.0 and cheap["kept"] == 41 and cheap["delta"] == pytest.approx(0.1)
    assert cheap["steps"][0]["p_value"] == pytest.approx(0.9**41 + 4.1 * 0.9**40)
    assert [s["rejected"] for s in cheap["steps"]] == [True, False]
    # strong on the 32 left: 25 unsure rows unanimous and right: 0.9^25 = 0.072 <= 0.1; the 7 hard ones stop it
    assert strong["reached"] == 32 and strong["threshold"] == 1.0 and strong["kept"] == 25
    assert strong["steps"][0]["p_value"] == pytest.approx(0.9**25)
    assert cal["certified"] and cal["coverage"] == pytest.approx(66 / 73)
    assert "With probability at least 80%" in cal["statement"] and "90%" in cal["statement"]
    # every stage answered every sample row: 73 rows x 3 samples x 2 stages
    assert cascade_server.stats()["total"] == 438
    assert (tmp_path / "out" / "cascade" / "report.md").exists()
    assert (tmp_path / "out" / "cascade" / "frontier.png").stat().st_size > 1000

    code, out, err = cli(["run", str(pipe), "-q", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    stages = {s["name"]: s for s in summary["cascade"]["stages"]}
    assert stages["cheap"]["rows_asked"] == 146 and stages["cheap"]["rows_kept"] == 82
    assert stages["strong"]["rows_asked"] == 64 and stages["strong"]["rows_kept"] == 50
    assert summary["cascade"]["rows_to_humans"] == 14
    # the sample rows were answered during calibrate: only the second copy's rows are new calls
    assert cascade_server.stats()["total"] == 438 + 73 * 3 + 32 * 3
    recs = read_annotations(tmp_path / "out")
    assert len(recs) == 132 and summary["rows_total"] == 132
    by_id = {r["id"]: r for r in recs}
    assert by_id["c1-000"]["stage"] == "cheap" and by_id["c1-000"]["confidence"] == 1.0
    assert by_id["c1-050"]["stage"] == "strong" and by_id["c1-050"]["stages"] == {
        "cheap": pytest.approx(1 / 3),
        "strong": 1.0,
    }
    assert by_id["c1-050"]["label"] == expected_label(rows[73 + 50]["text"], LABELS)
    # usage sums over the stages that saw the row
    assert by_id["c1-050"]["cost"] == pytest.approx(3 * (50 * 0.1 + 10 * 0.4 + 50 * 1.0 + 10 * 4.0) / 1e6)
    assert not any("[[hard]]" in r["text"] for r in recs)
    queue = (tmp_path / "out" / "human_queue" / "sheet_long.csv").read_text()
    assert queue.count("[[hard]]") == 14 and "label" in queue.splitlines()[0]
    assert (tmp_path / "out" / "human_queue" / "label_studio_tasks.json").exists()
    report = json.loads((tmp_path / "out" / "cascade" / "report.json").read_text())
    assert report["cost"]["basis"] == "run" and 0 < report["cost"]["ratio"] < 1

    # a rerun asks nothing again
    before = cascade_server.stats()["total"]
    code, out, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 0, err
    assert cascade_server.stats()["total"] == before


def test_uncertifiable_sample_escalates_everything_and_says_how_many_items(
    make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, cascade_server, rows, target=0.97, delta=0.1)
    humans = write_humans(tmp_path / "humans.csv", rows[:40])
    code, out, err = cli(["calibrate", str(pipe), "--humans", str(humans), "-q"], capsys)
    assert code == 3
    assert "Not certified" in err and "human items in all" in err
    cal = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert not cal["certified"] and cal["items_needed"] > 40
    assert [s["threshold"] for s in cal["stages"]] == [None, None]
    calls = cascade_server.stats()["total"]
    code, out, err = cli(["run", str(pipe), "-q", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["cascade"]["rows_to_humans"] == 73 and summary["rows_total"] == 0
    assert cascade_server.stats()["total"] == calls  # no stage is asked: none could keep anything


@pytest.fixture
def calibrated(make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys) -> Path:
    """A calibrated cascade pipeline over two copies of the corpus (the first copy is the human sample)."""
    rows = corpus(2)
    pipe = cascade_pipeline(make_pipeline, cascade_server, rows)
    humans = write_humans(tmp_path / "humans.csv", rows[:73])
    code, _, err = cli(["calibrate", str(pipe), "--humans", str(humans), "-q"], capsys)
    assert code == 0, err
    return pipe


def test_export_carries_stage_and_the_card_states_the_guarantee(calibrated: Path, tmp_path: Path, capsys) -> None:
    code, _, err = cli(["run", str(calibrated), "-q"], capsys)
    assert code == 0, err
    code, _, err = cli(["-q", "export", str(tmp_path / "out")], capsys)
    assert code == 0, err
    import datasets

    dsd = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    rows = [r for split in dsd for r in dsd[split]]
    assert len(rows) == 146 - 14  # the 14 hard rows went to humans, not into the dataset
    assert {r["stage"] for r in rows} == {"cheap", "strong"}
    assert all(r["confidence"] == 1.0 for r in rows)
    assert not any("[[hard]]" in r["text"] for r in rows)
    card = (tmp_path / "out" / "dataset" / "README.md").read_text()
    assert "## Cascade" in card and "With probability at least 80%" in card and "Assumption:" in card
    assert "not** in this dataset" in card and "human_queue" in card
    export = json.loads((tmp_path / "out" / "dataset" / "export.json").read_text())
    assert export["cascade"]["rows_to_humans"] == 14
    # an audit of the run with a human file that holds queued rows leaves those out, with a warning
    code, out, err = cli(
        [
            "audit",
            "--humans",
            str(tmp_path / "humans.csv"),
            "--teacher",
            str(tmp_path / "out"),
            "--json",
            "--bootstrap",
            "0",
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0, err
    audit = json.loads(out)
    assert audit["coverage"]["evaluated_items"] == 73 - 7 and audit["coverage"]["teacher_failed_on_human_items"] == 0
    assert "7 human-labelled item(s) excluded: the cascade left them to humans" in err


def test_validate_estimate_uses_the_calibrations_coverage(
    make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, cascade_server, rows)
    code, out, err = cli(["validate", str(pipe), "--estimate", "--json"], capsys)
    assert code == 0, err
    before = json.loads(out)["estimate"]
    assert "no calibration yet" in before["basis"] and [s["share_asked"] for s in before["stages"]] == [1.0, 1.0]
    humans = write_humans(tmp_path / "humans.csv", rows)
    assert cli(["calibrate", str(pipe), "--humans", str(humans), "-q"], capsys)[0] == 0
    code, out, err = cli(["validate", str(pipe), "--estimate", "--json"], capsys)
    after = json.loads(out)["estimate"]
    cheap, strong = after["stages"]
    assert cheap["share_asked"] == 1.0 and strong["share_asked"] == pytest.approx(32 / 73)
    assert strong["calls"] == pytest.approx(32 * 3)
    assert after["cost_max_usd"] == pytest.approx(cheap["cost_max_usd"] + strong["cost_max_usd"])
    assert after["ratio"] < before["ratio"]  # the cascade is estimated cheaper once coverage is known
    assert after["strongest_alone_cost_max_usd"] == pytest.approx(before["stages"][1]["cost_max_usd"])


def test_design_weights_are_honoured(make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys) -> None:
    """The same items, once as a simple random sample and once with inclusion probabilities that made the unsure
    rows 4x likelier to be drawn: the weighted calibration counts them a quarter each."""
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, cascade_server, rows)
    pi = {r["id"]: (0.8 if "[[unsure]]" in r["text"] else 0.2) for r in rows}
    humans = write_humans(tmp_path / "humans.csv", rows, inclusion=pi)
    code, _, err = cli(["calibrate", str(pipe), "--humans", str(humans), "-q"], capsys)
    assert code == 0, err
    cal = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert cal["weighted"] and cal["items"][0]["weight"] == pytest.approx(5.0)
    # coverage of the strong stage (the 25 unsure rows at weight 1.25 of 48 rows at 5): 31.25 / 271.25
    assert cal["stages"][1]["coverage"] == pytest.approx(25 * 1.25 / (25 * 1.25 + 48 * 5))
    report = (tmp_path / "out" / "cascade" / "report.md").read_text()
    assert "design weights 1/pi from 1.25 to 5" in report


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": 0.95}, "target 0.9 and delta 0.2"),
        ({"stages": [CHEAP, {**STRONG, "teacher": {**STRONG["teacher"], "samples": 5}}]}, "stage(s) strong changed"),
    ],
)
def test_a_stale_calibration_is_refused(
    make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys, change: dict[str, Any], message: str
) -> None:
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, cascade_server, rows)
    assert (
        cli(["calibrate", str(pipe), "--humans", str(write_humans(tmp_path / "h.csv", rows[:60])), "-q"], capsys)[0]
        == 0
    )
    cascade_pipeline(make_pipeline, cascade_server, None, **change)  # the same file, edited
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 2
    assert "is stale" in err and message in err and "annotator calibrate" in err


def test_run_without_calibration_says_how_to_get_one(make_pipeline, cascade_server: ServerHandle, capsys) -> None:
    pipe = cascade_pipeline(make_pipeline, cascade_server, corpus(1))
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 2 and "no calibration at" in err and "--draw 300" in err
    assert cascade_server.stats()["total"] == 0
    code, out, _ = cli(["deps", str(pipe), "--json"], capsys)  # make's prerequisite
    assert code == 0 and json.loads(out)["calibration"] == str(pipe.parent / "out" / "calibration.json")


def test_draw_writes_blank_random_sheets_without_a_teacher_call(
    make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    pipe = cascade_pipeline(make_pipeline, cascade_server, corpus(1))
    code, out, err = cli(["calibrate", str(pipe), "--draw", "30", "--out", str(tmp_path / "h"), "--seed", "4"], capsys)
    assert code == 0, err
    sheet = list(csv.DictReader((tmp_path / "h" / "sheet_long.csv").open()))
    assert len(sheet) == 90 and len({r["item_id"] for r in sheet}) == 30  # 3 annotators per item
    assert {r["label"] for r in sheet} == {""} and {r["inclusion_prob"] for r in sheet} == {str(30 / 73)}
    assert json.loads((tmp_path / "h" / "label_studio_tasks.json").read_text())[0]["data"]["text"]
    assert cascade_server.stats()["total"] == 0
    assert f"--humans {tmp_path / 'h' / 'sheet_long.csv'}" in out
    # more than the input holds: every row, and it says so (it said "sheets for 500 random input rows")
    code, out, err = cli(["calibrate", str(pipe), "--draw", "500", "--out", str(tmp_path / "all"), "--json"], capsys)
    assert code == 0 and json.loads(out)["rows"] == 73, err
    assert "--draw 500: the input" in err and "has only 73 rows" in err
    code, _, err = cli(
        ["calibrate", str(pipe), "--draw", "5", "--out", str(tmp_path / "x"), "--annotators", str(10**9)], capsys
    )
    assert code == 2 and "--annotators must be between 1 and 1000" in err, err
    code, _, err = cli(["calibrate", str(pipe), "--draw", "5", "--out", str(tmp_path / "y"), "--seed", "-1"], capsys)
    assert code == 2 and "--seed" in err and "Traceback" not in err, err  # numpy's ValueError traceback


@pytest.mark.parametrize(
    ("cascade", "message"),
    [
        ({"target": 1.5}, "cascade.target: Input should be less than or equal to 1"),
        ({"target": 0}, "cascade.target: Input should be greater than 0"),
        ({"delta": 0.7}, "cascade.delta: Input should be less than or equal to 0.5"),
        ({"delta": 0}, "cascade.delta: Input should be greater than 0"),
        ({"stages": [CHEAP]}, "cascade.stages: 1 stage(s): a cascade needs at least 2"),
        (
            {"stages": [CHEAP, {**STRONG, "teacher": {**STRONG["teacher"], "samples": 1}}]},
            "cascade.stages.1.teacher.samples: 1 (stage 'strong'): a stage's confidence is the vote share of its "
            "samples",
        ),
        ({"stages": [CHEAP, {**CHEAP}]}, "stage name(s) cheap used twice"),
        (
            {"stages": [CHEAP, {**STRONG, "teacher": {**STRONG["teacher"], "n_ctx": 4}}]},
            "cascade.stages.1.teacher.n_ctx: not a setting of backend openai (it belongs to backend",
        ),
    ],
)
def test_bad_cascade_settings_are_one_clear_line(
    make_pipeline, cascade_server: ServerHandle, capsys, cascade: dict[str, Any], message: str
) -> None:
    pipe = cascade_pipeline(make_pipeline, cascade_server, corpus(1), **cascade)
    code, _, err = cli(["validate", str(pipe)], capsys)
    assert code == 2 and message in err, err


def test_top_level_teacher_with_a_cascade_is_refused(make_pipeline, cascade_server: ServerHandle, capsys) -> None:
    pipe = cascade_pipeline(make_pipeline, cascade_server, corpus(1))
    cfg = yaml.safe_load(pipe.read_text())
    cfg["teacher"] = {"backend": "openai", "model": "x"}
    pipe.write_text(yaml.safe_dump(cfg))
    code, _, err = cli(["validate", str(pipe)], capsys)
    assert code == 2 and "teacher: a cascade names its teachers in cascade.stages" in err


def test_a_human_sample_of_another_corpus_is_refused(
    make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    pipe = cascade_pipeline(make_pipeline, cascade_server, corpus(1))
    other = [{"id": f"x{i}", "text": f"other {i}"} for i in range(10)]
    code, _, err = cli(["calibrate", str(pipe), "--humans", str(write_humans(tmp_path / "h.csv", other))], capsys)
    assert code == 2 and "none of its 10 items with a majority label is in the input" in err
    assert cascade_server.stats()["total"] == 0


def test_a_stage_teacher_that_is_down_stops_with_the_stage_named_and_nothing_lost(
    calibrated: Path, cascade_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    """The strong teacher's server fails every call once stage 1 is done: exit 5 naming the stage; the rerun asks
    only what was never answered."""
    cfg = yaml.safe_load(calibrated.read_text())
    cfg["cascade"]["stages"][1]["teacher"]["base_url"] = "http://127.0.0.1:9/v1"  # nothing listens there
    cfg["validation"] = {"max_consecutive_transport_failures": 3}  # not in the stages' fingerprint
    down = tmp_path / "down.yaml"
    down.write_text(yaml.safe_dump(cfg))
    calls = cascade_server.stats()["total"]
    code, _, err = cli(["run", str(down), "-q"], capsys)
    assert code == 5
    assert "stage 2/2 strong: stopped" in err and "teacher calls in a row failed" in err
    assert cascade_server.stats()["total"] == calls + 73 * 3  # stage 1 asked the second copy's rows once
    assert not (tmp_path / "out" / "annotations.jsonl").exists()
    code, out, err = cli(["run", str(calibrated), "-q", "--json"], capsys)
    assert code == 0, err
    assert cascade_server.stats()["total"] == calls + 73 * 3 + 32 * 3  # then only the new escalated rows, once
    assert json.loads(out)["cascade"]["rows_to_humans"] == 14


def cached_samples(run_dir: Path) -> int:
    conn = sqlite3.connect(str(run_dir / "cache.sqlite"))
    try:
        return int(conn.execute("SELECT COUNT(*) FROM samples WHERE ok = 1").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_kill_9_in_the_second_stage_resumes_without_asking_any_answer_twice(
    make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    rows = corpus(2)
    pipe = cascade_pipeline(make_pipeline, cascade_server, rows)
    cfg = yaml.safe_load(pipe.read_text())
    for st in cfg["cascade"]["stages"]:
        st["teacher"]["concurrency"] = 4
    pipe.write_text(yaml.safe_dump(cfg))
    assert (
        cli(["calibrate", str(pipe), "--humans", str(write_humans(tmp_path / "h.csv", rows[:73])), "-q"], capsys)[0]
        == 0
    )
    stage2 = tmp_path / "out" / "stages" / "strong"
    from_calibration = cached_samples(stage2)
    assert from_calibration == 73 * 3
    start = cascade_server.stats()["total"]
    stage1_new = 73 * 3  # the copy outside the sample, 3 samples each
    let_through = 20  # answers of stage 2 before the server holds the rest, in flight, until the kill
    cascade_server.configure(hold_after=start + stage1_new + let_through)
    proc = spawn_cli("run", str(pipe), "--quiet", PYTHONPATH=str(REPO))
    try:
        cascade_server.wait_for(
            lambda s: s["total"] > start + stage1_new + let_through or proc.poll() is not None, timeout=90
        )
        deadline = time.monotonic() + 30  # each answer let through is committed the moment it arrives
        while cached_samples(stage2) - from_calibration < let_through and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before stage 2 could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved_by_run = cached_samples(stage2) - from_calibration
    assert saved_by_run == let_through  # killed midway through stage 2's 32 new rows, its answers saved
    cascade_server.configure(hold_after=0)
    before = cascade_server.stats()["total"]
    code, out, err = cli(["run", str(pipe), "-q", "--json"], capsys)
    assert code == 0, err
    # stage 1 asks nothing again; stage 2 asks exactly the samples that were not saved when it was killed
    assert cascade_server.stats()["total"] - before == 32 * 3 - saved_by_run
    recs = read_annotations(tmp_path / "out")
    assert len(recs) == len({r["id"] for r in recs}) == 146 - 14
    assert json.loads(out)["cascade"]["rows_to_humans"] == 14


class MakeProject:
    """A project directory with the repo's Makefile and pipelines/casc.yaml, a cascade over ``corpus(1)`` against
    the fault server; ``pipelines/data/cal.csv`` is its filled human sample (every row)."""

    def __init__(self, root: Path, server: ServerHandle):
        self.root = root
        (root / "pipelines" / "data").mkdir(parents=True)
        shutil.copy(REPO / "Makefile", root / "Makefile")
        shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
        (root / "stamp").touch()
        rows = corpus(1)
        write_rows(root / "pipelines" / "data" / "casc.jsonl", rows)
        write_humans(root / "pipelines" / "data" / "cal.csv", rows)
        teacher = {"backend": "openai", "base_url": server.base_url, "max_tokens": 32, "timeout": 2.0}
        self.cfg = {
            "name": "casc",
            "input": {"path": "data/casc.jsonl"},
            "task": {"type": "label", "labels": LABELS},
            "output": {"dir": "../runs/casc"},
            "cascade": {
                "target": 0.9,
                "delta": 0.2,
                "stages": [{"name": st["name"], "teacher": {**teacher, **st["teacher"]}} for st in (CHEAP, STRONG)],
            },
        }
        self.pipeline = root / "pipelines" / "casc.yaml"
        self.write()
        self.env = subprocess_env(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    def write(self) -> None:
        self.pipeline.write_text(yaml.safe_dump(self.cfg, sort_keys=False), encoding="utf-8")

    def make(self, *args: str) -> subprocess.CompletedProcess[str]:
        venv = Path(sys.executable).parent.parent
        return subprocess.run(
            ["make", "--no-print-directory", f"VENV={venv}", f"STAMP={self.root / 'stamp'}", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=600,
            env=self.env,
        )


@pytest.mark.slow  # real make and annotator processes
@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_runs_a_cascade_with_its_calibration_as_a_real_prerequisite(
    cascade_server: ServerHandle, tmp_path: Path
) -> None:
    """`make run P=x` of a cascade: refused with the command to calibrate; `make calibrate` writes the thresholds;
    the run follows them; a new human sample re-calibrates and re-runs."""
    from test_makefile import bump

    project = MakeProject(tmp_path / "proj", cascade_server)
    root, make = project.root, project.make
    refused = make("run", "P=casc")
    assert refused.returncode != 0
    assert "casc is a cascade: calibrate it on a filled human sample first: make calibrate P=casc" in refused.stderr
    assert cascade_server.stats()["total"] == 0
    assert make("calibrate", "P=casc", "CAL_HUMANS=pipelines/data/cal.csv").returncode == 0
    assert (root / "runs" / "casc" / "calibration.json").exists()
    done = make("run", "P=casc", "CAL_HUMANS=pipelines/data/cal.csv")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "annotator calibrate" not in done.stdout and "annotator run" in done.stdout
    assert len(read_annotations(root / "runs" / "casc")) == 66
    assert make("-q", "run", "P=casc", "CAL_HUMANS=pipelines/data/cal.csv").returncode == 0  # up to date
    bump(root / "pipelines" / "data" / "cal.csv")  # a new human sample: calibrate again, then run again
    plan = make("-n", "run", "P=casc", "CAL_HUMANS=pipelines/data/cal.csv").stdout
    assert "annotator calibrate" in plan and "annotator run" in plan


def test_a_stage_in_batch_api_mode_is_asked_only_about_its_rows(
    make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    rows = corpus(2)
    batch_strong = {**STRONG, "teacher": {**STRONG["teacher"], "mode": "batch", "batch_poll_interval": 0.05}}
    pipe = cascade_pipeline(make_pipeline, cascade_server, rows, stages=[CHEAP, batch_strong])
    assert (
        cli(["calibrate", str(pipe), "--humans", str(write_humans(tmp_path / "h.csv", rows[:73])), "-q"], capsys)[0]
        == 0
    )
    assert cascade_server.stats()["batch"]["batch_requests"] == 73 * 3  # the strong stage on every sample row
    code, out, err = cli(["run", str(pipe), "-q", "--json"], capsys)
    assert code == 0, err
    stages = {s["name"]: s for s in json.loads(out)["cascade"]["stages"]}
    assert (stages["cheap"]["rows_kept"], stages["strong"]["rows_asked"], stages["strong"]["rows_kept"]) == (82, 64, 50)
    stats = cascade_server.stats()
    assert stats["batch"]["batch_requests"] == 73 * 3 + 32 * 3  # then only the 32 new escalated rows
    assert stats["total"] == 146 * 3  # online calls: the cheap stage only
