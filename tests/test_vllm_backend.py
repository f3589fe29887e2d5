"""vLLM offline backend. The batching logic is tested everywhere; generation needs vllm + a GPU + a model
(set ANNOTATOR_VLLM_MODEL to a local model path or cached HF name), otherwise those tests skip."""

import asyncio
import importlib.util
import os
from pathlib import Path

import pytest

from annotator.backends.micro_batcher import MicroBatcher
from annotator.errors import AnnotatorError, BackendError


def test_concurrent_requests_are_batched_in_order():
    calls: list[list[int]] = []

    def run_batch(items: list[int]) -> list[int]:
        calls.append(items)
        return [x * 10 for x in items]

    async def main():
        b = MicroBatcher(run_batch, batch_size=4)
        return await asyncio.gather(*(b.submit(i) for i in range(10))), b.batches

    results, sizes = asyncio.run(main())
    assert results == [i * 10 for i in range(10)]
    assert sizes == [4, 4, 2] and [x for c in calls for x in c] == list(range(10))


def test_failed_batch_fails_only_its_requests():
    def run_batch(items):
        if 3 in items:
            raise RuntimeError("CUDA out of memory")
        return items

    async def main():
        b = MicroBatcher(run_batch, batch_size=2)
        return await asyncio.gather(*(b.submit(i) for i in range(6)), return_exceptions=True)

    res = asyncio.run(main())
    assert res[0:2] == [0, 1] and res[4:6] == [4, 5]
    assert all(isinstance(r, BackendError) and "out of memory" in str(r) for r in res[2:4])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_clear_error_without_vllm():
    from annotator.backends import build_backend
    from annotator.config import TeacherConfig

    with pytest.raises(AnnotatorError, match=r"annotator\[vllm\]"):
        build_backend(TeacherConfig(backend="vllm", model="any"))


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed")
@pytest.mark.skipif(not os.environ.get("ANNOTATOR_VLLM_MODEL"), reason="set ANNOTATOR_VLLM_MODEL to run vLLM")
def test_vllm_label_run(tmp_path):
    import polars as pl
    import yaml

    from annotator.config import load_config
    from annotator.engine import Pipeline
    from annotator.records import iter_annotations

    repo = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / "pipelines" / "news_topics.yaml").read_text(encoding="utf-8"))
    sub = tmp_path / "in.csv"
    pl.read_csv(repo / "pipelines" / "data" / "news_sample.csv").head(16).write_csv(sub)
    cfg["input"]["path"] = str(sub)
    cfg["output"]["dir"] = str(tmp_path / "out")
    cfg["teacher"] = {"backend": "vllm", "model": os.environ["ANNOTATOR_VLLM_MODEL"], "max_tokens": 32,
                      "vllm_engine_args": {"gpu_memory_utilization": 0.5, "max_model_len": 2048}}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    manifest = asyncio.run(Pipeline(load_config(p)).run())
    records = list(iter_annotations(tmp_path / "out"))
    assert len(records) == 16 and manifest.rows_ok == 16  # structured outputs: every answer parses
    labels = {lab["name"] for lab in cfg["task"]["labels"]}
    assert all(r.label in labels for r in records)
    assert asyncio.run(Pipeline(load_config(p)).run()).teacher_calls == 0
