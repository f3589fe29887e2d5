"""Teacher cascades end to end: `annotator calibrate` on a human sample, `annotator run` of the cascade, export,
`validate --estimate`, make's prerequisites, and the bad inputs, in process against the shared fault server.

The fault server plays both teachers: ``cheap-model`` is in its ``weak_models`` (it answers a different label per
sample on ``[[unsure]]`` rows and the same wrong label on ``[[wrong]]`` rows), ``strong-model`` is not;
``[[hard]]`` rows get a different label per sample from both. Humans give the server's expected label.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from annotator.cli import main

from conftest import LABELS, ServerHandle, read_annotations
from fault_server import expected_label

CHEAP = {"name": "cheap", "teacher": {"model": "cheap-model", "samples": 3,
                                       "price": {"input": 0.1, "output": 0.4}}}
STRONG = {"name": "strong", "teacher": {"model": "strong-model", "samples": 3,
                                         "price": {"input": 1.0, "output": 4.0}}}


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
    teacher = {"backend": "openai", "base_url": server.base_url, "concurrency": 8, "timeout": 2.0, "max_retries": 2,
               "max_backoff": 0.05, "max_tokens": 32}
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
            w.writerow([r["id"], "ann_1", expected_label(r["text"], LABELS), *([inclusion[r["id"]]] if inclusion else [])])
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
        make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys) -> None:
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
    assert by_id["c1-050"]["stage"] == "strong" and by_id["c1-050"]["stages"] == {"cheap": pytest.approx(1 / 3),
                                                                                   "strong": 1.0}
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
        make_pipeline, cascade_server: ServerHandle, tmp_path: Path, capsys) -> None:
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
