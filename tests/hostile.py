"""Helpers of the hostile-input tests (tests/test_hostile_*.py): the CLI in this process, tiny fixtures on disk."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``annotator ARGS`` in this process: exit code, stdout and stderr (a traceback escapes as the exception)."""
    from annotator.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return Result(code if isinstance(code, int) else (0 if code is None else 1), out, err)


def one_line_error(r: Result, code: int = 2) -> str:
    """Assert a refusal: exit ``code``, one ``error:`` line, no traceback; return stderr."""
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err and "error:" in r.err, r.err
    return r.err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_student(folder: Path, labels: tuple[str, ...] = ("politics", "economy", "sport")) -> Path:
    """A student folder's files as train-student leaves them, without weights: enough for everything `predict`
    checks before it loads the model (the refusals under test happen before that)."""
    model = folder / "model"
    model.mkdir(parents=True)
    (folder / "metrics.json").write_text(
        json.dumps({"label_names": list(labels), "multi_label": False, "train_config": {"max_length": 24}})
    )
    (model / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["BertForSequenceClassification"],
                "model_type": "bert",
                "id2label": {str(i): lab for i, lab in enumerate(labels)},
            }
        )
    )
    (model / "tokenizer_config.json").write_text("{}")
    (model / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    return folder
