"""A tiny randomly initialised encoder (1 layer, width 32, MiniLM's tokenizer) saved as a base model folder, so tests
exercise the real train-student code path (tokenizer, torch loop, calibration, saving) in milliseconds per step."""

from __future__ import annotations

from pathlib import Path


def tiny_base_model(out: Path) -> Path:
    """Write the tiny encoder to ``out`` once (``--model out`` accepts it like any local model folder)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from annotator.student.models import packaged_minilm_dir

    torch.manual_seed(0)
    cfg = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128
    )
    BertModel(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(packaged_minilm_dir()).save_pretrained(out)
    return out
