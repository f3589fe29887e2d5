"""A student folder is what ``train-student`` wrote, or ``predict`` refuses it in one line.

``train-student`` records the model folder it saved in ``checksums.json`` (beside ``metrics.json``): every file's
size and SHA-256, the architecture and the model type. Before loading, ``predict`` checks

* ``metrics.json``: ``label_names`` (a non-empty list of distinct strings), ``multi_label`` (a boolean) and
  ``train_config.max_length`` (a whole number in 1..100,000);
* ``model/config.json``: a sequence classifier whose ``id2label`` are those label names;
* the tokenizer: ``tokenizer_config.json`` and a vocabulary file are there;
* ``checksums.json``: every listed file is present with its size and SHA-256 (a truncated weights file, an edited
  config, a swapped tokenizer are refused; a folder trained before checksums were recorded is checked without
  them, with a warning);

and after loading, that every weight of the architecture was in the weights file (a config naming another
architecture would otherwise load with randomly initialised layers and predict noise).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from annotator.errors import AnnotatorError
from annotator.rundir import atomic_write_text

log = logging.getLogger(__name__)

CHECKSUMS_FILE = "checksums.json"
VOCAB_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
MAX_LENGTH_BOUND = 100_000


class NotAStudent(AnnotatorError):
    """A folder given as a student is not one ``train-student`` wrote (or it was changed since)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _model_config(model_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotAStudent(f"{model_dir / 'config.json'} is not readable JSON ({exc}); retrain the student") from None
    if not isinstance(data, dict):
        raise NotAStudent(f"{model_dir / 'config.json'} is not a model configuration; retrain the student")
    return data


def write_checksums(student_dir: Path, model_dir: Path) -> None:
    """Record ``model_dir`` as saved (``train-student``, after the model folder is complete)."""
    config = _model_config(model_dir)
    files = {
        p.relative_to(model_dir).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    }
    data = {
        "written_by": "annotator train-student",
        "model_dir": model_dir.name,
        "architectures": config.get("architectures"),
        "model_type": config.get("model_type"),
        "files": files,
    }
    atomic_write_text(student_dir / CHECKSUMS_FILE, json.dumps(data, indent=2) + "\n")


def check_metrics(path: Path, data: Any) -> tuple[list[str], bool, int]:
    """``(label_names, multi_label, max_length)`` of a student's metrics.json content, each checked."""
    if not isinstance(data, dict):
        raise NotAStudent(f"{path} is not a student's metrics (a JSON object); retrain the student")
    names, multi = data.get("label_names"), data.get("multi_label")
    if not (
        isinstance(names, list)
        and names
        and all(isinstance(n, str) and n for n in names)
        and len(set(names)) == len(names)
    ):
        raise NotAStudent(f"{path}: label_names must be a non-empty list of distinct label names, got {names!r}")
    if not isinstance(multi, bool):
        raise NotAStudent(f"{path}: multi_label must be true or false, got {multi!r}")
    train_config = data.get("train_config") or {}
    max_length = train_config.get("max_length", 128) if isinstance(train_config, dict) else None
    if not (isinstance(max_length, int) and not isinstance(max_length, bool) and 0 < max_length <= MAX_LENGTH_BOUND):
        raise NotAStudent(
            f"{path}: train_config.max_length must be a whole number in 1..{MAX_LENGTH_BOUND:,}, got {max_length!r}"
        )
    return names, multi, max_length


def check_model_dir(student_dir: Path, model_dir: Path, label_names: list[str]) -> None:
    """The model folder's config, tokenizer and checksums (see the module docstring); one line when wrong."""
    config = _model_config(model_dir)
    archs = config.get("architectures")
    if not (isinstance(archs, list) and len(archs) == 1 and str(archs[0]).endswith("ForSequenceClassification")):
        raise NotAStudent(
            f"{model_dir / 'config.json'}: architectures {archs!r} is not one sequence classifier; retrain the student"
        )
    id2label = config.get("id2label")
    model_labels = [str(id2label.get(str(i))) for i in range(len(id2label))] if isinstance(id2label, dict) else None
    if model_labels != label_names:
        raise NotAStudent(
            f"{model_dir / 'config.json'}: the model's labels {model_labels} differ from metrics.json's "
            f"label_names {label_names}; retrain the student"
        )
    if not (model_dir / "tokenizer_config.json").is_file() or not any((model_dir / f).is_file() for f in VOCAB_FILES):
        raise NotAStudent(
            f"{model_dir} has no tokenizer (tokenizer_config.json and one of {', '.join(VOCAB_FILES)}); "
            "copy the whole folder train-student wrote, or retrain the student"
        )
    _check_files(student_dir, model_dir)


def _check_files(student_dir: Path, model_dir: Path) -> None:
    path = student_dir / CHECKSUMS_FILE
    if not path.exists():
        log.warning(
            "%s: no %s (trained by an older annotator): the model files cannot be verified", student_dir, CHECKSUMS_FILE
        )
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        listed = {str(k): (int(v["bytes"]), str(v["sha256"])) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NotAStudent(f"{path} is damaged ({type(exc).__name__}: {exc}); retrain the student") from None
    for name, (size, digest) in listed.items():
        f = model_dir / name
        if not f.is_file():
            raise NotAStudent(f"{f} is missing (train-student wrote it); copy the whole student folder or retrain")
        now = f.stat().st_size
        why = (
            f"{now:,} bytes instead of {size:,}"
            if now != size
            else f"its SHA-256 differs from {path.name}"
            if _sha256(f) != digest
            else None
        )
        if why:
            raise NotAStudent(
                f"{f} differs from what train-student wrote ({why}): truncated or changed since; copy "
                "the student folder again or retrain it"
            )


def check_loaded(model_dir: Path, loading_info: dict[str, Any]) -> None:
    """Every weight of the architecture came from the weights file (none initialised at random)."""
    missing = list(loading_info.get("missing_keys") or []) + list(loading_info.get("mismatched_keys") or [])
    if missing:
        shown = ", ".join(str(m) for m in missing[:3])
        raise NotAStudent(
            f"{model_dir}: the weights do not fit the architecture in config.json ({len(missing)} "
            f"missing or mismatched, e.g. {shown}); it would predict at random: retrain the student"
        )
