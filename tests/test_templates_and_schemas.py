"""Prompt templates (sandboxed, strict) and output schemas (labels restricted to the configured set)."""

import json
import random

import pytest
from pydantic import ValidationError

from annotator.engine import item_rng
from annotator.errors import TemplateError
from annotator.inputs import InputRow
from annotator.schemas import extract_json, strict_json_schema
from annotator.tasks import build_task
from annotator.tasks.label import LabelTaskConfig
from annotator.tasks.qa import QATaskConfig
from annotator.tasks.rephrase import RephraseTaskConfig
from annotator.templates import PromptTemplate

LABELS = [{"name": n, "description": f"about {n}"} for n in ["politics", "sport", "health", "economy"]]


def row(text="The cup final ended 3-1.", id_="x1"):
    return InputRow(index=0, id=id_, text=text, columns={"id": id_, "text": text, "lang": "en"})


def label_task(**kw):
    return build_task(LabelTaskConfig(type="label", labels=LABELS, **kw))


def test_unknown_variable_is_a_clear_error():
    tpl = PromptTemplate("Text: {{ text }} in {{ langauge }}", "t.jinja")
    with pytest.raises(TemplateError) as exc:
        tpl.render({"text": "hi", "row": {}})
    assert "langauge" in str(exc.value) and "t.jinja" in str(exc.value)
    assert "available variables: row, text" in str(exc.value)


def test_sandbox_blocks_python_internals():
    tpl = PromptTemplate("{{ text.__class__.__mro__[1].__subclasses__() }}", "evil.jinja")
    with pytest.raises(TemplateError):
        tpl.render({"text": "x"})


def test_syntax_error_reported_with_line():
    with pytest.raises(TemplateError, match="line 2"):
        PromptTemplate("ok\n{% for x in %}", "bad.jinja")


def test_default_label_template_renders_labels_and_few_shot():
    task = label_task(few_shot=[{"text": "Goal!", "output": {"label": "sport"}}])
    tpl = PromptTemplate.builtin("label")
    msgs = tpl.render(task.template_variables(row(), random.Random(0)))
    assert msgs[-1]["role"] == "user"
    content = msgs[-1]["content"]
    for lab in LABELS:
        assert f"- {lab['name']}: {lab['description']}" in content
    assert 'Example text: Goal!\nAnswer: {"label": "sport"}' in content
    assert "Text: The cup final ended 3-1." in content


def test_label_shuffle_is_per_item_and_deterministic():
    task = label_task(shuffle_labels=True)
    orders = {
        tuple(lab["name"] for lab in task.template_variables(row(id_=f"i{i}"), item_rng(0, f"i{i}"))["labels"])
        for i in range(30)
    }
    assert len(orders) > 5  # varies across items
    a = task.template_variables(row(id_="same"), item_rng(0, "same"))["labels"]
    b = task.template_variables(row(id_="same"), item_rng(0, "same"))["labels"]
    assert a == b  # stable for the same item (so the cache key is stable)
    fixed = label_task(shuffle_labels=False)
    assert [x["name"] for x in fixed.template_variables(row(), item_rng(0, "z"))["labels"]] == [
        x["name"] for x in LABELS
    ]


def test_label_schema_restricts_to_label_set():
    task = label_task(rationale=True)
    schema = strict_json_schema(task.output_model)
    assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)
    assert schema["properties"]["label"]["enum"] == [x["name"] for x in LABELS]
    assert list(schema["properties"]) == ["rationale", "label"]  # reason first, then commit
    assert schema["required"] == ["rationale", "label"] and schema["additionalProperties"] is False
    task.output_model.model_validate({"rationale": "r", "label": "sport"})
    with pytest.raises(ValidationError):
        task.output_model.model_validate({"rationale": "r", "label": "weather"})


def test_multi_label_schema_and_dedupe():
    task = label_task(multi_label=True)
    schema = strict_json_schema(task.output_model)
    assert schema["properties"]["labels"]["items"]["enum"] == [x["name"] for x in LABELS]
    out = task.output_model.model_validate({"labels": ["sport", "sport", "health"]})
    assert out.labels == ["sport", "health"]
    with pytest.raises(ValidationError):
        task.output_model.model_validate({"labels": []})


def test_single_label_majority_vote_and_confidence():
    task = label_task()
    outs = [task.output_model.model_validate({"label": x}) for x in ["sport", "health", "sport", "sport", "health"]]
    agg = task.aggregate(outs, 5)
    assert agg.label == "sport" and agg.confidence == pytest.approx(0.6)
    assert agg.votes == {"sport": 3, "health": 2}
    tie = task.aggregate([task.output_model.model_validate({"label": x}) for x in ["health", "sport"]], 2)
    assert tie.label == "health" and tie.confidence == 0.5  # ties go to the earliest sample


def test_multi_label_majority_vote():
    task = label_task(multi_label=True)
    outs = [
        task.output_model.model_validate({"labels": x})
        for x in [["sport", "economy"], ["sport"], ["economy", "sport"], ["health"]]
    ]
    agg = task.aggregate(outs, 4)
    assert agg.labels == ["sport"]  # sport 3/4; economy 2/4 is not more than half
    assert agg.confidence == pytest.approx(1 / 4)  # share of samples whose whole set equals the answer
    agg = task.aggregate(outs[:3], 3)
    assert agg.labels == ["sport", "economy"] and agg.confidence == pytest.approx(2 / 3)
    # one sample of the four requested was invalid: it counts against the answer
    agg = task.aggregate(outs[:3], 4)
    assert agg.labels == ["sport", "economy"] and agg.confidence == pytest.approx(2 / 4)


def test_confidence_is_a_share_of_the_samples_requested():
    task = label_task()
    one_valid = task.aggregate([task.output_model.model_validate({"label": "sport"})], 3)
    assert one_valid.label == "sport" and one_valid.confidence == pytest.approx(1 / 3)
    assert one_valid.votes == {"sport": 1}


def test_rephrase_schema_counts_and_rejects_copies():
    task = build_task(RephraseTaskConfig(type="rephrase", n=2, styles=["formal", "simple"]))
    good = {"paraphrases": [{"style": "formal", "text": "A"}, {"style": "simple", "text": "B"}]}
    out = task.output_model.model_validate(good)
    task.check(out, row("something else"))
    with pytest.raises(ValidationError):
        task.output_model.model_validate({"paraphrases": good["paraphrases"][:1]})
    with pytest.raises(ValidationError):
        task.output_model.model_validate({"paraphrases": [{"style": "pirate", "text": "A"}] * 2})
    with pytest.raises(ValueError, match="identical"):
        task.check(
            task.output_model.model_validate(
                {
                    "paraphrases": [
                        {"style": "formal", "text": "the  cup final ended 3-1."},
                        {"style": "simple", "text": "B"},
                    ]
                }
            ),
            row(),
        )


def test_qa_grounding_and_bounds():
    task = build_task(QATaskConfig(type="qa", min_pairs=1, max_pairs=2))
    doc = row("The bridge opened in 1932 and carries six lanes of traffic.")
    ok = task.output_model.model_validate(
        {"pairs": [{"question": "When did it open?", "answer": "1932", "evidence": "opened in  1932"}]}
    )
    task.check(ok, doc)
    bad = task.output_model.model_validate(
        {"pairs": [{"question": "How long is it?", "answer": "2 km", "evidence": "it is 2 km long"}]}
    )
    with pytest.raises(ValueError, match="not a verbatim quote"):
        task.check(bad, doc)
    with pytest.raises(ValidationError):
        task.output_model.model_validate({"pairs": [ok.pairs[0].model_dump()] * 3})


def _qa(question: str, answer: str, evidence: str):
    return {"pairs": [{"question": question, "answer": answer, "evidence": evidence}]}


def test_qa_grounding_needs_meaningful_evidence_that_supports_the_answer():
    task = build_task(QATaskConfig(type="qa", min_pairs=1, max_pairs=2))
    doc = row("The bridge opened in 1932 and carries six lanes of traffic across the Arn river.")
    cases = {  # (answer, evidence) -> accepted?
        ("Six lanes", "carries six lanes of traffic"): True,
        ("1932", "The bridge opened in 1932"): True,
        ("It carries traffic across the river", "carries six lanes of traffic across the Arn"): True,
        ("Yes", "carries six lanes of traffic"): True,  # no content words: the quote's length alone
        ("Paris", "a"): False,  # one character: too short to ground anything
        ("Paris", "The bridge opened in 1932"): False,  # invented answer, real quote: not supported
        ("A suspension bridge designed by Eiffel", "The bridge opened in 1932"): False,
    }
    for (answer, evidence), accepted in cases.items():
        out = task.output_model.model_validate(_qa("What about the bridge?", answer, evidence))
        if accepted:
            task.check(out, doc)
        else:
            with pytest.raises(ValueError, match="too short|does not support"):
                task.check(out, doc)
    # both bounds are configurable
    lenient = build_task(QATaskConfig(type="qa", min_evidence_chars=1, min_answer_support=0.0))
    lenient.check(lenient.output_model.model_validate(_qa("What city?", "Paris", "a")), doc)
    # a document shorter than min_evidence_chars can be quoted whole
    task.check(task.output_model.model_validate(_qa("Who won?", "Ada", "Ada won.")), row("Ada won."))


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"label": "a"}', {"label": "a"}),
        ('Here: {"label": "a"} and again: ```json\n{"label": "a"}\n```', {"label": "a"}),  # agreeing answers
        ('{"label": "a", "meta": {"x": 1}} trailing note', {"label": "a", "meta": {"x": 1}}),
        ('```json\n{"label": "a"}\n```', {"label": "a"}),
        ('Sure! Here it is: {"label": "a"} hope it helps', {"label": "a"}),
    ],
)
def test_extract_json(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize("text", ["", "no json here", '{"label": '])
def test_extract_json_rejects(text):
    with pytest.raises(ValueError):
        extract_json(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"label": "sport"} Actually, on reflection: {"label": "politics"}',
        '```json\n{"label": "sport"}\n```\nor maybe\n```json\n{"label": "health"}\n```',
    ],
)
def test_extract_json_rejects_disagreeing_answers(text):
    with pytest.raises(ValueError, match="ambiguous output: 2 different JSON answers"):
        extract_json(text)
