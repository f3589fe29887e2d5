"""Rule 6 (docs/safety.md): a student folder that is not a student is an error.

``predict`` checks what it loads against what ``train-student`` wrote (metrics.json, label names, tokenizer,
architecture, the checksums in checksums.json) and refuses in one line. Before: a student without tokenizer files
predicted with a 5-token vocabulary, a config naming another architecture gave random predictions (both exit 0),
and a truncated safetensors file was a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hostile import cli, one_line_error

from conftest import write_rows


@pytest.fixture
def student(student_dir: Path, tmp_path: Path) -> Path:
    """A copy of the real student of tests/test_predict.py (MiniLM, two training steps) to damage."""
    return Path(shutil.copytree(student_dir, tmp_path / "student"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "corpus.jsonl", [{"id": f"d{i}", "text": f"football match {i}"} for i in range(12)])


def _predict(capsys, student: Path, corpus: Path, *extra: str):
    return cli(capsys, "-q", "predict", student, corpus, "--out", corpus.with_name("preds.jsonl"), *extra)


def test_the_real_student_predicts(student, corpus, capsys):
    assert (student / "checksums.json").exists()
    r = _predict(capsys, student, corpus)
    assert r.code == 0, r.err
    assert len(corpus.with_name("preds.jsonl").read_text().splitlines()) == 12


@pytest.mark.parametrize("legacy", [False, True], ids=["with-checksums", "trained-before-checksums"])
def test_a_student_without_tokenizer_is_refused(student, corpus, capsys, legacy):
    if legacy:
        (student / "checksums.json").unlink(missing_ok=True)
    for f in (student / "model").iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            f.unlink()
    err = one_line_error(_predict(capsys, student, corpus))
    assert "has no tokenizer" in err or "is missing" in err
    assert not corpus.with_name("preds.jsonl").exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["with-checksums", "trained-before-checksums"])
def test_a_config_naming_another_architecture_is_refused(student, corpus, capsys, legacy):
    if legacy:
        (student / "checksums.json").unlink(missing_ok=True)
    config = student / "model" / "config.json"
    data = json.loads(config.read_text())
    data.update(
        architectures=["DistilBertForSequenceClassification"],
        model_type="distilbert",
        dim=384,
        n_layers=1,
        n_heads=12,
        hidden_dim=1536,
    )
    config.write_text(json.dumps(data))
    err = one_line_error(_predict(capsys, student, corpus))
    assert ("differs from what train-student wrote" in err) if not legacy else ("weights do not fit" in err)


@pytest.mark.parametrize("legacy", [False, True], ids=["with-checksums", "trained-before-checksums"])
def test_a_truncated_weights_file_is_refused(student, corpus, capsys, legacy):
    if legacy:
        (student / "checksums.json").unlink(missing_ok=True)
    weights = student / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    err = one_line_error(_predict(capsys, student, corpus))
    assert ("bytes instead of" in err) if not legacy else ("cannot load the student model" in err)


@pytest.mark.parametrize(
    "change",
    [
        {"multi_label": "no"},
        {"label_names": ["a", "a", "b"]},
        {"train_config": {"max_length": 10**9}},
        {"label_names": "politics"},
    ],
)
def test_hostile_metrics_are_refused(student, corpus, capsys, change):
    metrics = student / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), **change}))
    err = one_line_error(_predict(capsys, student, corpus))
    assert str(metrics) in err


def test_a_limited_predict_never_looks_complete(student, corpus, capsys):
    assert _predict(capsys, student, corpus, "--limit", "4").code == 0
    preds = corpus.with_name("preds.jsonl")
    assert len(preds.read_text().splitlines()) == 4 and preds.stat().st_mtime == 0  # make reruns it
    assert _predict(capsys, student, corpus).code == 0  # the full run resumes after the 4 rows
    assert len(preds.read_text().splitlines()) == 12 and preds.stat().st_mtime > 0
