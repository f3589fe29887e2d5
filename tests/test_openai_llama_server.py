"""The openai backend against a real OpenAI-compatible server on 127.0.0.1: llama.cpp's own server (from the
``xllamacpp`` wheel, started by tests/llama_http_server.py) serving the same SmolLM2 GGUF as the local backend,
in all three ``structured_output`` modes. The server (``llama_server``, tests/engines.py) is shared by the session."""

import asyncio
from pathlib import Path

import polars as pl
import pytest
import yaml

from annotator.backends.model_files import default_gguf_path
from annotator.config import load_config
from annotator.engine import Pipeline
from annotator.records import iter_annotations

pytestmark = pytest.mark.slow
LABELS = {"politics", "economy", "sport", "science_technology", "health", "arts_culture"}


def pipeline_file(tmp_path, base_url, mode, n=4, samples=1):
    repo = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / "pipelines" / "news_topics.yaml").read_text(encoding="utf-8"))
    sub = tmp_path / "in.csv"
    pl.read_csv(repo / "pipelines" / "data" / "news_sample.csv").head(n).write_csv(sub)
    cfg["input"]["path"] = str(sub)
    cfg["output"]["dir"] = str(tmp_path / f"out-{mode}")
    cfg["teacher"] = {
        "backend": "openai",
        "base_url": base_url,
        "model": "smollm2",
        "structured_output": mode,
        "concurrency": 2,
        "max_tokens": 48,
        "timeout": 60,
        "samples": samples,
    }
    p = tmp_path / f"{mode}.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


@pytest.mark.parametrize("mode", ["json_schema", "json_object"])
def test_schema_modes_against_llama_server(tmp_path, llama_server, mode):
    # json_schema: the OpenAI form {"type": "json_schema", "json_schema": {"schema": ...}}; json_object: llama.cpp's
    # {"type": "json_object", "schema": ...}. Both are enforced by the server's grammar: every sample of every row
    # (3 per row, at temperature 0.7, two at a time) ends as JSON with a label from the set. (The server's grammar
    # allows free whitespace, so an answer may run into max_tokens and be retried; it is never off-schema.)
    cfg = load_config(pipeline_file(tmp_path, llama_server, mode, samples=3))
    manifest = asyncio.run(Pipeline(cfg).run())
    records = list(iter_annotations(cfg.output.dir))
    assert [r.status for r in records] == ["ok"] * 4, [r.error for r in records]
    assert all(r.label in LABELS and sum(r.votes.values()) == 3 and r.samples == 3 for r in records)
    assert manifest.teacher_calls >= 12 and all(r.attempts >= 3 for r in records)
    assert all(r.model == f"openai:{llama_server}:smollm2" for r in records)
    again = asyncio.run(Pipeline(load_config(pipeline_file(tmp_path, llama_server, mode, samples=3))).run())
    assert again.teacher_calls == 0


def test_unconstrained_mode_parses_or_fails_with_reason(tmp_path, llama_server):
    cfg = load_config(pipeline_file(tmp_path, llama_server, "none"))
    asyncio.run(Pipeline(cfg).run())
    records = list(iter_annotations(cfg.output.dir))
    assert len(records) == 4
    for r in records:  # a 135M model without a grammar may ramble: then it is a failed row with its raw text
        assert (r.status == "ok" and r.label in LABELS) or (r.status == "failed" and r.error and r.raw is not None)


def test_the_cache_keeps_each_backends_answers_apart(tmp_path, llama_server, local_teacher):
    # The same GGUF in-process (local) and behind llama-server (openai) is two teachers to the cache: the key holds
    # the backend's model id (gguf:<file>:<size> vs openai:<base_url>:<model>) and structured-output mode (compact
    # LLGuidance vs the server's grammar), whose answers may differ. One output directory keeps both sets.
    served = pipeline_file(tmp_path, llama_server, "json_schema", n=2)
    doc = yaml.safe_load(served.read_text(encoding="utf-8"))
    doc["teacher"] = {"backend": "local", "max_tokens": 48}
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump(doc), encoding="utf-8")

    first = local_teacher.run(local)
    assert first.teacher_calls >= 2 and first.cache_hits == 0
    assert first.model == f"gguf:{default_gguf_path().name}:{default_gguf_path().stat().st_size}"
    other = asyncio.run(Pipeline(load_config(served)).run())
    assert other.teacher_calls >= 2 and other.cache_hits == 0  # nothing served from the local backend's answers
    assert other.model == f"openai:{llama_server}:smollm2"
    again = local_teacher.run(local)
    assert again.teacher_calls == 0 and again.cache_hits == 2  # the local answers are still there
