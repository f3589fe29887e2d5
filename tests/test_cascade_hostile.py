"""A hostile user against the teacher cascade: hand-edited or foreign calibration files, inputs that change under a
calibration or a run, reordered stages, full disks, a second process, bad human samples, and what the estimate
and the dataset card say about a cascade run. In process against the shared fault server (see test_cascade.py)."""

from __future__ import annotations

import asyncio
import csv
import errno
import json
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cascade import CHEAP, STRONG, MakeProject, cached_samples, cascade_pipeline, cli, corpus, write_humans

from conftest import LABELS, REPO, ServerHandle, out_dir_of, read_annotations, spawn_cli, write_rows

OUT = "out"


@pytest.fixture
def weak_server(server: ServerHandle) -> ServerHandle:
    """The fault server playing both teachers (``cheap-model`` weak: see test_cascade.py)."""
    server.configure(weak_models=["cheap-model"])
    return server


def calibrate(pipe: Path, humans: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["calibrate", str(pipe), "--humans", str(humans), "-q"], capsys)
    assert code == 0, err


def edit_yaml(path: Path, change) -> None:
    cfg = yaml.safe_load(path.read_text())
    change(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


# -- the calibration file ------------------------------------------------------------------------------------


def _edits() -> list[tuple[str, Any, str]]:
    """(what, how the JSON is changed, the message expected)."""

    def stage(k: int, **kv: Any):
        def change(c: dict[str, Any]) -> None:
            c["stages"][k].update(kv)

        return change

    def certify_nothing_yet_claim(c: dict[str, Any]) -> None:
        for s in c["stages"]:
            s["threshold"] = None
        c["certified"] = True

    def claim(c: dict[str, Any]) -> None:
        c["statement"] = c["statement"].replace("at least 90%", "at least 99%")

    def lower_target(c: dict[str, Any]) -> None:
        c["target"] = 0.5  # the pipeline says 0.9: stale, whatever the thresholds

    def drop_items(c: dict[str, Any]) -> None:
        c["items"] = c["items"][:5]

    return [
        (
            "a threshold above 1 (keeps nothing, claims a guarantee)",
            stage(0, threshold=1.5),
            "threshold 1.5 in the file",
        ),
        ("a threshold below 0 (keeps everything)", stage(0, threshold=-0.1), "threshold -0.1 in the file"),
        ("a threshold of 0", stage(1, threshold=0.0), "stage strong: threshold 0.0 in the file, 1.0"),
        ("NaN", stage(0, threshold=math.nan), "threshold nan in the file"),
        ("no thresholds but certified", certify_nothing_yet_claim, "threshold None in the file"),
        ("a stronger claim", claim, "its statement is not the one its thresholds certify"),
        ("other target", lower_target, "from its human items"),
        ("items dropped", drop_items, "in the file"),
        (
            "a weight that overflows",
            lambda c: c["items"][0].update(weight=1e308),
            "a design weight that is not a number in (0, 1e+12]",
        ),
    ]


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_hand_edited_calibration_is_refused_before_any_teacher_call(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    """Every edit of a threshold, the certified flag or the statement is caught: the thresholds are a function of
    the file's own human items, recomputed on read. Before the fix a threshold of -0.1 kept every row by the cheap
    stage under the claimed guarantee, and NaN crashed with a traceback after the run."""
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows)
    calibrate(pipe, write_humans(tmp_path / "h.csv", rows), capsys)
    path = tmp_path / OUT / "calibration.json"
    good = path.read_text()
    calls = weak_server.stats()["total"]
    for what, change, message in _edits():
        data = json.loads(good)
        change(data)
        path.write_text(json.dumps(data))  # json writes NaN as NaN, as a hand edit would
        code, _, err = cli(["run", str(pipe), "-q"], capsys)
        assert code == 2, what
        assert message in err and "annotator calibrate" in err, (what, err)
        assert "Traceback" not in err
    for what, text, message in [
        ("truncated", good[: len(good) // 2], "is not a calibration file"),
        ("a list", "[]", "JSON list, not an object"),
        ("older version", good.replace('"version": 2', '"version": 1'), "another version"),
    ]:
        path.write_text(text)
        code, _, err = cli(["run", str(pipe), "-q"], capsys)
        assert code == 2 and message in err, (what, err)
        code, _, err = cli(["validate", str(pipe), "--estimate"], capsys)  # the estimate reads it too
        assert code == 2 and message in err, (what, err)
    assert weak_server.stats()["total"] == calls
    path.write_text(good)
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 0, err


def test_a_calibration_nested_past_the_stack_is_one_line(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    """JSON nested deeper than Python's recursion limit was a RecursionError traceback in `run` and `calibrate`; a
    calibration path that is a device was read without end."""
    pipe = cascade_pipeline(make_pipeline, weak_server, corpus(1))
    path = tmp_path / OUT / "calibration.json"
    path.parent.mkdir()
    path.write_text("[" * 100_000 + "]" * 100_000)
    for args in (["run", str(pipe), "-q"], ["calibrate", str(pipe), "-q"]):
        code, _, err = cli(args, capsys)
        assert code == 2 and "Traceback" not in err and "RecursionError" not in err, err
    assert (
        "is not a calibration file written by `annotator calibrate` (maximum recursion depth"
        in cli(["run", str(pipe), "-q"], capsys)[2]
    )
    path.unlink()
    path.symlink_to("/dev/zero")  # read to the end, it filled the memory
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 2 and "is not a calibration file written by `annotator calibrate` (not a regular file)" in err, err
    code, _, err = cli(["calibrate", str(pipe), "-q"], capsys)
    assert code == 2 and "names a human sample: give --humans FILE" in err, err


@pytest.mark.parametrize("victim", ["humans", "input", "a directory"])
@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_calibration_never_overwrites_a_file_it_did_not_write(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys, victim: str
) -> None:
    """`cascade.calibration` naming the filled human sheet replaced it with the calibration (the people's labels were
    gone); naming the input would have replaced the corpus. Refused before any teacher call; a calibration file
    (this one's, or one of an older version) is overwritten as before."""
    rows = corpus(1)
    humans = write_humans(tmp_path / "h.csv", rows[:30])
    target = {"humans": humans, "input": tmp_path / "data" / "input.jsonl", "a directory": tmp_path / "d"}[victim]
    target.mkdir() if victim == "a directory" else None
    pipe = cascade_pipeline(make_pipeline, weak_server, rows, calibration=str(target))
    before = target.read_bytes() if target.is_file() else None
    code, _, err = cli(["calibrate", str(pipe), "--humans", str(humans), "-q"], capsys)
    expected = {
        "humans": "is the --humans file: writing there would destroy it",  # the output guard names which
        "input": "is the input file: writing there would destroy it",
    }.get(  # input it is
        victim, f"cascade.calibration: {target} exists and is not a calibration file"
    )
    assert code == 2 and expected in err, err
    assert (target.read_bytes() if target.is_file() else None) == before
    assert weak_server.stats()["total"] == 0
    own = tmp_path / "cal.json"
    pipe = cascade_pipeline(make_pipeline, weak_server, rows, calibration=str(own))
    calibrate(pipe, humans, capsys)
    own.write_text(own.read_text().replace('"version": 2', '"version": 1'))
    calibrate(pipe, humans, capsys)
    assert json.loads(own.read_text())["version"] == 2


def test_the_frontier_of_many_stages_is_bounded() -> None:
    """Stages with one confidence each (a teacher at temperature 0 votes unanimously) cannot be thinned: from 12
    stages on (2**12 > MAX_FRONTIER_POINTS combinations) the thinning loop never ended and calibrate hung."""
    from annotator.cascade.calibration import CalibrationFile, HumanItem, StageAnswer, StageCalibration
    from annotator.cascade.report import MAX_FRONTIER_POINTS, frontier

    k = 16
    stage = StageCalibration(
        name="s",
        model="m",
        fingerprint="",
        delta=0.1 / k,
        threshold=None,
        reached=20,
        kept=0,
        coverage=0.0,
        agreement=None,
        agreement_ci=None,
        steps=[],
        tokens_per_item=3.0,
        cost_per_item=None,
    )
    items = [
        HumanItem(id=str(i), human=LABELS[0], answers=[StageAnswer(label=LABELS[i % 2], confidence=1.0)] * k)
        for i in range(20)
    ]
    cal = CalibrationFile.model_construct(
        stages=[stage.model_copy(update={"name": f"s{j}"}) for j in range(k)], items=items
    )
    points = frontier(cal)
    assert len(points) == MAX_FRONTIER_POINTS and all(p["coverage"] in (0.0, 1.0) for p in points)


def test_a_calibration_of_other_rows_is_stale_and_rows_added_elsewhere_are_not(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    """The calibration remembers the human-sample rows as the input held them: an edited or removed sample row
    (or a calibration copied from a pipeline over another input) is refused; rows added outside the sample only
    warn, and the run asks about them alone."""
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows)
    calibrate(pipe, write_humans(tmp_path / "h.csv", rows[:60]), capsys)
    data = tmp_path / "data" / "input.jsonl"
    edited = [dict(r) for r in rows]
    edited[3]["text"] += " (edited)"
    write_rows(data, edited)
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 2 and "is stale" in err and "human-sample rows changed in the input" in err, err
    write_rows(data, rows[1:])
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 2 and "1 of its 60 human-sample rows are not in the input" in err, err
    # the calibration of a pipeline over another input with the same stages: refused
    write_rows(data, [{"id": f"x{i}", "text": f"x {i}"} for i in range(60)])
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 2 and "60 of its 60 human-sample rows are not in the input" in err, err
    assert weak_server.stats()["total"] == 60 * 3 * 2  # calibrate's calls only
    extra = {"id": "new-1", "text": "a new row about things"}
    write_rows(data, [*rows, extra])
    code, out, err = cli(["run", str(pipe), "--json"], capsys)
    assert code == 0, err
    assert "the input has 74 rows, 73 when the human sample was calibrated" in err
    assert len(read_annotations(tmp_path / OUT)) == json.loads(out)["rows_total"]
    code, _, err = cli(["run", str(pipe), "--limit", "10"], capsys)  # a trial on the first rows: not stale
    assert code == 0 and "the input has" not in err, err
    # nor does it shrink the calibration: with input.limit 10 in the file, calibrate used 10 of the 60 sample items
    # (50 "not in the input"), and the run without the limit trusted that calibration
    edit_yaml(pipe, lambda c: c["input"].update(limit=10))
    code, out, err = cli(["calibrate", str(pipe), "--humans", str(tmp_path / "h.csv"), "--json"], capsys)
    assert code == 0 and json.loads(out)["used"] == 60 and json.loads(out)["not_in_input"] == 0, err


@pytest.mark.parametrize(
    "change",
    [
        # few-shot examples are part of every prompt, so of the answers on the sample; they were left out of the
        # stages' fingerprint (the engine's cache key leaves them out because it hashes the rendered prompt)
        lambda c: c["task"].update(few_shot=[{"text": "a match report", "output": {"label": "sport"}}]),
        lambda c: c.update(prompt={"system": "You label news."}),
        # fewer tries or another policy for invalid answers change which rows end valid (and their vote shares)
        lambda c: c.update(validation={"max_attempts": 1}),
        lambda c: c.update(validation={"on_invalid": "reask"}),
    ],
)
@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_prompt_changed_after_calibrating_makes_it_stale(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys, change
) -> None:
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows[:30])
    calibrate(pipe, write_humans(tmp_path / "h.csv", rows[:30]), capsys)
    calls = weak_server.stats()["total"]
    edit_yaml(pipe, change)
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 2 and "is stale: stage(s) cheap, strong changed" in err, err
    assert weak_server.stats()["total"] == calls


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_reordering_or_inserting_stages_reuses_every_answer(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    """Stage directories are named after the stage, not its place: before the fix, inserting a stage before the
    strong one moved it from stages/2-strong to stages/3-strong and every answer of it was paid for again."""
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows)
    humans = write_humans(tmp_path / "h.csv", rows)
    calibrate(pipe, humans, capsys)
    assert weak_server.stats()["total"] == 73 * 3 * 2
    mid = {"name": "mid", "teacher": {**STRONG["teacher"], "model": "mid-model"}}
    cascade_pipeline(make_pipeline, weak_server, None, stages=[CHEAP, mid, STRONG])
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 2 and "it was made for stages ['cheap', 'strong']" in err
    calibrate(pipe, humans, capsys)
    assert weak_server.stats()["total"] == 73 * 3 * 3  # only the new stage was asked
    assert sorted(p.name for p in (tmp_path / OUT / "stages").iterdir()) == ["cheap", "mid", "strong"]
    cascade_pipeline(make_pipeline, weak_server, None, stages=[STRONG, mid, CHEAP])
    calibrate(pipe, humans, capsys)
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 0, err
    assert weak_server.stats()["total"] == 73 * 3 * 3  # reordered: nothing asked again


# -- bad settings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cascade", "message"),
    [
        # alpha = 0: no finite sample rejects "risk > 0"; calibrate used to run every stage on the sample, then say so
        ({"target": 1}, "cascade.target: 1: no finite human sample can show that a teacher never disagrees"),
        ({"target": float("nan")}, "cascade.target:"),
        # stage directories are named after stages: two that differ in case are one directory on macOS or Windows
        ({"stages": [CHEAP, {**STRONG, "name": "Cheap"}]}, "stage name(s) Cheap, cheap used twice (case aside)"),
        # bounded: each stage is tested at delta / K (and the report's frontier enumerates their thresholds); a human
        # queue with a billion annotators built a billion sheet columns
        ({"stages": [{**CHEAP, "name": f"s{i}"} for i in range(17)]}, "cascade.stages: List should have at most 16"),
        ({"human_queue": {"annotators": 10**9}}, "cascade.human_queue.annotators: Input should be less than or equal"),
    ],
)
def test_bad_cascade_settings_are_refused_before_any_work(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys, cascade: dict[str, Any], message: str
) -> None:
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows, **cascade)
    code, _, err = cli(["calibrate", str(pipe), "--humans", str(write_humans(tmp_path / "h.csv", rows))], capsys)
    assert code == 2 and message in err, err
    assert weak_server.stats()["total"] == 0


# -- bad human samples ---------------------------------------------------------------------------------------


def _sheet(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["item_id", "annotator", "label"], *rows])
    return path


def test_bad_human_samples_are_one_line_before_any_teacher_call(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows)
    cases = [
        # a typo in a label would have counted as a disagreement with every teacher: refused, like the audit does
        (
            [[r["id"], "a", "Politics" if i < 5 else LABELS[0]] for i, r in enumerate(rows)],
            "labels outside the task's labels (politics, economy, sport, science_technology, health, arts_culture): "
            "'Politics' (5x)",
        ),
        # every item tied: it used to say "none of its 0 items ... is it a sample of another corpus?"
        (
            [[r["id"], a, lab] for r in rows[:10] for a, lab in (("a", LABELS[0]), ("b", LABELS[1]))],
            "the humans tie on every one of its 10 items",
        ),
    ]
    for sheet, message in cases:
        code, _, err = cli(["calibrate", str(pipe), "--humans", str(_sheet(tmp_path / "h.csv", sheet))], capsys)
        assert code == 2 and message in err, err
    # inclusion probabilities of 1e-308: weights of 1e308 overflowed to NaN, a traceback after every teacher call
    tiny = write_humans(tmp_path / "t.csv", rows, {r["id"]: 1e-308 if i % 2 else 0.5 for i, r in enumerate(rows)})
    code, _, err = cli(["calibrate", str(pipe), "--humans", str(tiny)], capsys)
    assert code == 2 and "item 'c0-001' has inclusion_prob 1e-308 (36 item(s) under 1e-12" in err, err
    assert weak_server.stats()["total"] == 0


# -- writes: full disk, a second process, a changing input ---------------------------------------------------


def disk_full_in(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """From now on the fsync of any file directly in ``folder`` fails with ENOSPC: a full disk at that write,
    whichever helper makes it (every final output is fsynced before its rename)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).parent == folder:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")


@needs_proc
@pytest.mark.parametrize("folder", [".", "cascade"])
def test_a_full_disk_while_calibrating_is_one_line(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys, monkeypatch, folder: str
) -> None:
    """calibration.json, then the report (was a traceback)."""
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows[:20])
    humans = write_humans(tmp_path / "h.csv", rows[:20])
    with monkeypatch.context() as m:
        disk_full_in(m, (tmp_path / OUT / folder).resolve())
        code, _, err = cli(["calibrate", str(pipe), "--humans", str(humans), "-q"], capsys)
    assert code == 2 and "no space left writing" in err and "Traceback" not in err, err
    calls = weak_server.stats()["total"]
    code, _, err = cli(["calibrate", str(pipe), "--humans", str(humans), "-q"], capsys)
    assert code in (0, 3), err
    assert weak_server.stats()["total"] == calls  # every answer was kept


@needs_proc
def test_a_full_disk_while_drawing_sheets_is_one_line(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys, monkeypatch
) -> None:
    """`calibrate --draw` on a full disk was an OSError traceback."""
    pipe = cascade_pipeline(make_pipeline, weak_server, corpus(1))
    out = tmp_path / "humans"
    out.mkdir()
    with monkeypatch.context() as m:
        disk_full_in(m, out.resolve())
        code, _, err = cli(["calibrate", str(pipe), "--draw", "10", "--out", str(out)], capsys)
    assert code == 2 and "no space left writing" in err and "Traceback" not in err, err
    assert not list(out.glob("*.tmp"))
    code, _, err = cli(["calibrate", str(pipe), "--draw", "10", "--out", str(out)], capsys)
    assert code == 0 and (out / "sheet_long.csv").is_file(), err


@needs_proc
@pytest.mark.parametrize("folder", ["human_queue", "cascade", "."])
@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_full_disk_while_running_is_one_line_and_the_rerun_asks_nothing(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys, monkeypatch, folder: str
) -> None:
    """The human queue, the report and annotations.jsonl + run.json: each write that fails is one line (the queue
    and the report were tracebacks), and the rerun completes from the cache."""
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows)
    calibrate(pipe, write_humans(tmp_path / "h.csv", rows[:40]), capsys)
    with monkeypatch.context() as m:
        disk_full_in(m, (tmp_path / OUT / folder).resolve())
        code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 2 and "no space left writing" in err and "Traceback" not in err, err
    calls = weak_server.stats()["total"]
    code, out, err = cli(["run", str(pipe), "-q", "--json"], capsys)
    assert code == 0, err
    assert weak_server.stats()["total"] == calls
    queue = tmp_path / OUT / "human_queue" / "sheet_wide.csv"
    assert len(queue.read_text().splitlines()) == 1 + json.loads(out)["cascade"]["rows_to_humans"]


@needs_proc
def test_calibrate_and_run_write_their_files_while_holding_the_lock(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys, monkeypatch
) -> None:
    """A second `calibrate` or `run` on the same pipeline is refused (exit 6) until the first has written every
    file: before the fix calibrate released the lock before writing calibration.json and the report, and run
    before writing the report, so two processes could interleave them. Each final file is checked as it is
    fsynced (before its rename), whichever helper writes it."""
    from annotator.errors import RunDirBusy
    from annotator.rundir import RunDirLock

    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows[:20])
    out = (tmp_path / OUT).resolve()
    seen: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.parent in (out, out / "cascade") and path.name.startswith(("calibration", "report")):
            try:
                with RunDirLock(out):
                    seen.append(f"unlocked {path.name}")
            except RunDirBusy:
                seen.append(f"locked {path.name}")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, _, err = cli(
        ["calibrate", str(pipe), "--humans", str(write_humans(tmp_path / "h.csv", rows[:20])), "-q"], capsys
    )
    assert code in (0, 3), err
    code, _, err = cli(["run", str(pipe), "-q"], capsys)
    assert code == 0, err
    assert seen and all(s.startswith("locked ") for s in seen), seen
    assert {"locked calibration.json.tmp", "locked report.json.tmp", "locked report.md.tmp"} <= set(seen)
    assert seen.count("locked report.json.tmp") == 2  # calibrate's report, then run's


def test_an_input_changed_between_stages_stops_the_run_with_one_line(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    """Stages pass rows on by input position: an input rewritten while stage 1 ran would have paired stage 2's
    answers with other rows' earlier confidences, silently."""
    from annotator.cascade.runner import CascadeRun
    from annotator.config import load_config
    from annotator.errors import InputDataError

    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows)
    calibrate(pipe, write_humans(tmp_path / "h.csv", rows), capsys)  # both stages keep rows

    def shuffle_before_stage_2(label: str, _pipeline: Any) -> None:
        if label.startswith("stage 2/"):
            write_rows(tmp_path / "data" / "input.jsonl", rows[::-1])

    runner = CascadeRun(load_config(pipe), hook=shuffle_before_stage_2)
    with pytest.raises(InputDataError, match="changed during the run"):
        asyncio.run(runner.run())


def calibrated_pipeline(make_pipeline, server: ServerHandle, tmp_path: Path, capsys) -> Path:
    """Two copies of the corpus, the first one the human sample (tmp_path/humans.csv), calibrated."""
    rows = corpus(2)
    pipe = cascade_pipeline(make_pipeline, server, rows)
    calibrate(pipe, write_humans(tmp_path / "humans.csv", rows[:73]), capsys)
    return pipe


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_missing_or_foreign_queue_sheet_is_written_again(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    calibrated = calibrated_pipeline(make_pipeline, weak_server, tmp_path, capsys)
    assert cli(["run", str(calibrated), "-q"], capsys)[0] == 0
    wide = tmp_path / OUT / "human_queue" / "sheet_wide.csv"
    full = wide.read_text()
    wide.unlink()
    assert cli(["run", str(calibrated), "-q"], capsys)[0] == 0
    assert wide.read_text() == full and full.count("[[hard]]") == 14
    # a run killed between the renames of a new queue's files leaves a sheet of another queue beside the new
    # design file: the sheets themselves are checked, not the design file (which used to be trusted)
    wide.write_text("".join(full.splitlines(keepends=True)[:4]))
    assert cli(["run", str(calibrated), "-q"], capsys)[0] == 0
    assert wide.read_text() == full


def test_the_filled_human_queue_is_not_taken_for_a_calibration_sample(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    """The queue holds the rows no stage kept (the hardest) and no inclusion probabilities: calibrating on it once
    people filled it was accepted as a simple random sample, voiding the guarantee in silence."""
    calibrated = calibrated_pipeline(make_pipeline, weak_server, tmp_path, capsys)
    assert cli(["run", str(calibrated), "-q"], capsys)[0] == 0
    sheet = tmp_path / OUT / "human_queue" / "sheet_long.csv"
    filled = list(csv.DictReader(sheet.open(newline="", encoding="utf-8")))
    with sheet.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(filled[0]))
        writer.writeheader()
        writer.writerows({**r, "label": LABELS[0]} for r in filled)
    calls = weak_server.stats()["total"]
    code, _, err = cli(["calibrate", str(calibrated), "--humans", str(sheet)], capsys)
    assert code == 2 and "says it is not a random draw of the input" in err and "--draw 300" in err, err
    assert weak_server.stats()["total"] == calls
    # a sample drawn for calibration, filled the same way, is taken
    assert cli(["calibrate", str(calibrated), "--draw", "20", "--out", str(tmp_path / "drawn"), "-q"], capsys)[0] == 0
    drawn = tmp_path / "drawn" / "sheet_long.csv"
    rows = list(csv.DictReader(drawn.open(newline="", encoding="utf-8")))
    with drawn.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": LABELS[0]} for r in rows)
    assert cli(["calibrate", str(calibrated), "--humans", str(drawn), "-q"], capsys)[0] in (0, 3)


# -- what is said about a cascade run ------------------------------------------------------------------------


def test_estimate_of_a_cascade_run_calls_queued_items_left_to_humans_not_failed(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    calibrated = calibrated_pipeline(make_pipeline, weak_server, tmp_path, capsys)
    assert cli(["run", str(calibrated), "-q"], capsys)[0] == 0
    code, out, err = cli(
        [
            "estimate",
            "--humans",
            str(tmp_path / "humans.csv"),
            "--teacher",
            str(tmp_path / OUT),
            "--out",
            str(tmp_path / "est"),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    notes = " ".join(json.loads(out)["teachers"][0]["notes"])
    assert "a cascade run:" in notes and "14 row" in notes and "outside the population" in notes
    assert "7 " in notes and "failed on" not in notes  # the 7 queued human items: left to humans, not failed


def test_export_of_a_cascade_that_kept_nothing_says_why(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys
) -> None:
    """Not certified: every row goes to humans and the run keeps none; export said only "annotations.jsonl has no
    rows"."""
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows, target=0.97, delta=0.1)
    assert (
        cli(["calibrate", str(pipe), "--humans", str(write_humans(tmp_path / "h.csv", rows[:40])), "-q"], capsys)[0]
        == 3
    )
    assert cli(["run", str(pipe), "-q"], capsys)[0] == 0
    code, _, err = cli(["-q", "export", str(tmp_path / OUT)], capsys)
    assert code == 2
    assert "the cascade kept no row, so there is nothing to export: its 73 rows are in its human queue" in err
    assert err.count("Not certified") == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_make_calibrate_first_then_an_edited_pipeline_recalibrates_on_its_own_sample(
    weak_server: ServerHandle, tmp_path: Path
) -> None:
    """Before the fix, `make calibrate P=x` as the first command of a fresh project said "x has no cascade
    section" (the check ran before the deps fragment existed), and any edit of the pipeline file (concurrency,
    say) or of the input made `make run P=x` demand CAL_HUMANS with "calibrate it first" although it was
    calibrated. Now the calibration is redone on its own sample, asking no teacher anything."""
    from test_makefile import bump

    project = MakeProject(tmp_path / "proj", weak_server)
    make = project.make
    first = make("calibrate", "P=casc", "CAL_HUMANS=pipelines/data/cal.csv")
    assert first.returncode == 0, first.stdout + first.stderr
    assert make("run", "P=casc").returncode == 0
    calls = weak_server.stats()["total"]
    project.cfg["cascade"]["stages"][0]["teacher"]["concurrency"] = 4  # not a change of the answers
    project.write()
    bump(project.pipeline)
    again = make("run", "P=casc")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "annotator calibrate pipelines/casc.yaml" in again.stdout and "annotator run" in again.stdout
    assert weak_server.stats()["total"] == calls
    assert make("-q", "run", "P=casc").returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_ctrl_c_or_kill_9_during_calibrate_and_the_rerun_asks_only_the_rest(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys, sig: signal.Signals
) -> None:
    """Typer turned Ctrl-C into a silent exit 130: no word of what was kept. After kill -9 (no word possible) the
    rerun takes the dead process's lock and asks only what no stage had saved."""
    rows = corpus(1)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows)
    edit_yaml(pipe, lambda c: [st["teacher"].update(concurrency=2) for st in c["cascade"]["stages"]])
    humans = write_humans(tmp_path / "h.csv", rows)
    weak_server.configure(latency=0.05)
    proc = spawn_cli("calibrate", str(pipe), "--humans", str(humans), PYTHONPATH=str(REPO))
    try:
        weak_server.wait_for(lambda s: s["total"] >= 30 or proc.poll() is not None, timeout=90)
        assert proc.poll() is None, "calibrate ended before it could be interrupted"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "interrupted: every answer obtained so far is saved" in " ".join(out.split())
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / OUT / "calibration.json").exists()
    saved = sum(cached_samples(d) for d in (tmp_path / OUT / "stages").iterdir())
    assert 0 < saved < 73 * 3 * 2
    weak_server.configure(latency=0.0)
    before = weak_server.stats()["total"]
    calibrate(pipe, humans, capsys)
    assert weak_server.stats()["total"] - before == 73 * 3 * 2 - saved


def test_the_certified_sentence_never_rounds_a_rate_up() -> None:
    """`{:.0%}` printed delta 0.025 as "at least 98%" and target 0.995 as "at least 100%": more than certified."""
    from annotator.cascade.calibration import _exact_pct

    assert [_exact_pct(x) for x in (1 - 0.025, 0.995, 0.925, 0.9, 1 - 0.1, 0.12345678)] == [
        "97.5%",
        "99.5%",
        "92.5%",
        "90%",
        "90%",
        "12.3456%",
    ]
    # at the edges: target 1 - 1e-12 and delta 1e-300 (1 - delta is 1.0 as a float) printed "at least 100%"
    assert _exact_pct(1 - 1e-12) == "99.9999%" and _exact_pct(1e-9) == "0%"
    assert _exact_pct(1e-300, complement=True) == "99.9999%" and _exact_pct(0.1, complement=True) == "90%"


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_key_in_a_stage_base_url_reaches_no_cascade_file(
    make_pipeline, weak_server: ServerHandle, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Rule 3 (docs/safety.md) for the cascade: calibrate, run and export write run.json, calibration.json, the report,
    the stage directories, the human queue and the card; none may hold a key given in a stage's ``base_url``."""
    secret = "gwq-Casc4de8Key2Zz9"
    monkeypatch.setenv("GW_KEY", secret)
    rows = corpus(2)
    pipe = cascade_pipeline(make_pipeline, weak_server, rows)
    edit_yaml(
        pipe,
        lambda cfg: [
            st["teacher"].update(base_url=st["teacher"]["base_url"] + "?api-key=${GW_KEY}")
            for st in cfg["cascade"]["stages"]
        ],
    )
    humans = write_humans(tmp_path / "humans.csv", rows[:73])
    outputs = []
    for args in (["calibrate", str(pipe), "--humans", str(humans)], ["run", str(pipe), "--json"]):
        code, out, err = cli(args, capsys)
        assert code == 0, (args, err)
        outputs += [out, err]
    code, out, err = cli(["export", str(out_dir_of(pipe)), "--json"], capsys)
    assert code == 0, err
    leaks = [
        str(f) for f in tmp_path.rglob("*") if f.is_file() and f.suffix != ".yaml" and secret.encode() in f.read_bytes()
    ]
    assert leaks == [] and not any(secret in o for o in outputs + [out, err])
    assert weak_server.stats()["total"] > 0
