"""The built-in prompts fit any task of their kind; task wording belongs in `instructions` or a template."""

from __future__ import annotations

import json
import random

from annotator.config import PipelineConfig
from annotator.inputs import InputRow
from annotator.tasks import build_task
from annotator.templates import PromptTemplate

from conftest import REPO, rows_of

REVIEWS = ["Broke after two days. Avoid.", "Does exactly what it says."]


def validate_json(run_cli, p, *args: str) -> dict:
    proc = run_cli("validate", str(p), "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_default_label_prompt_fits_a_sentiment_task(make_pipeline, run_cli):
    p = make_pipeline(
        rows_of(REVIEWS),
        task={
            "type": "label",
            "labels": ["positive", "negative", "neutral"],
            "instructions": "Judge the reviewer's opinion of the product.",
        },
    )
    prompt = validate_json(run_cli, p)["messages"][-1]["content"]
    assert prompt.startswith(
        "Choose the one label from the list below that best fits the text.\n"
        "Judge the reviewer's opinion of the product."
    )
    assert "topic" not in prompt.lower()
    multi = make_pipeline(
        rows_of(REVIEWS),
        name="multi",
        task={"type": "label", "labels": ["price", "quality", "delivery"], "multi_label": True},
    )
    prompt = validate_json(run_cli, multi)["messages"][-1]["content"]
    assert prompt.startswith("Assign every label from the list below that applies to the text.")
    assert "topic" not in prompt.lower()


def test_demo_pipeline_keeps_its_topic_wording(run_cli):
    summary = validate_json(run_cli, REPO / "pipelines" / "news_topics.yaml")
    assert summary["template"] == "builtin:label.jinja"
    prompt = summary["messages"][-1]["content"]
    # same intent as the old built-in wording ("Classify the text below into exactly one topic label")
    assert prompt.startswith(
        "Choose the one label from the list below that best fits the text.\n"
        "The labels are news topics: pick the topic the text is mainly about."
    )


def test_rephrase_and_qa_defaults_are_domain_neutral():
    row = InputRow(index=0, id="a", text="Some text.", columns={"id": "a", "text": "Some text."})
    for task in ({"type": "rephrase", "n": 2, "styles": ["plain", "formal"]}, {"type": "qa"}):
        cfg = PipelineConfig.model_validate(
            {"name": "x", "input": {"path": "x.csv"}, "task": task, "output": {"dir": "o"}}
        )
        variables = build_task(cfg.task).template_variables(row, random.Random(0))
        prompt = PromptTemplate.builtin(task["type"]).render(variables)[-1]["content"]
        assert "Some text." in prompt
        for word in ("news", "topic", "article", "sentiment"):
            assert word not in prompt.lower(), (task["type"], word)


def test_example_template_in_prompts_folder_renders(make_pipeline, run_cli):
    p = make_pipeline(rows_of(REVIEWS), task={"type": "label", "labels": ["positive", "negative"]})
    # run_cli runs in the repository root: a --set path is relative to the current directory
    summary = validate_json(run_cli, p, "--set", "prompt.template=prompts/sentiment_label.jinja")
    assert summary["template"] == str(REPO / "prompts" / "sentiment_label.jinja")
    prompt = summary["messages"][-1]["content"]
    assert prompt.startswith("What does the author of this product review think of the product?")
    assert f"Review: {REVIEWS[0]}" in prompt
