"""Tasks are registered units: a task defined in this file alone (config, output model, checks, export rows;
its template is written to the test's tmp dir) runs through `annotator run` and `annotator export` as a plugin
(an ``annotator.tasks`` entry point), without any change to the ``annotator`` package. Plus the registry's rules.

This module is also the plugin's code: the CLI subprocesses (``run_cli_process``: entry points are read by a
starting process) import ``test_task_registry:KeywordsTask``, so its top-level imports stay light (no conftest
import; fixtures come from conftest through pytest).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, Field, create_model

from annotator.errors import ConfigError
from annotator.tasks import (
    Exporter,
    ExportItem,
    TaskConfigBase,
    build_task,
    get_task_class,
    register,
    task_names,
    unregister,
)
from annotator.tasks.base import OneAnswerTask, common_variables, format_row

TESTS = Path(__file__).resolve().parent

# ------------------------------------------------------------------------------------ the new task, in full


class KeywordsConfig(TaskConfigBase):
    type: Literal["keywords"]
    max_keywords: int = Field(default=3, ge=1, le=10)
    instructions: str = ""


class KeywordsExporter(Exporter):
    """One chat/instruction row per text: the assistant lists the keywords; ``n_keywords`` counts them."""

    output_key = "keywords"

    def rows(self, item: ExportItem) -> list[dict[str, Any]]:
        rec = item.record
        words = [str(w) for w in (rec.output or {}).get("keywords") or []]
        ask = "List the keywords of the text."
        row: dict[str, Any] = {"id": rec.id, "source_id": rec.id, "n_keywords": len(words)}
        return [format_row(row, self.ctx.fmt, ask, f"{ask}\n\n{rec.text}", ask, rec.text, ", ".join(words))]

    def columns(self) -> dict[str, Any]:
        from datasets import Value

        return {"n_keywords": Value("int32")}


class KeywordsTask(OneAnswerTask):
    """Extract up to ``max_keywords`` distinct keywords from a text."""

    name = "keywords"
    config_model = KeywordsConfig
    default_template = None  # no built-in template: pipelines set prompt.template
    hub_category = "text-generation"
    exporter = KeywordsExporter

    def __init__(self, cfg: KeywordsConfig):
        self.cfg = cfg
        self.output_model = create_model(
            "KeywordsOutput", keywords=(list[str], Field(min_length=1, max_length=cfg.max_keywords))
        )

    def template_variables(self, row: Any, rng: random.Random) -> dict[str, Any]:
        return {**common_variables(row, [], self.cfg.instructions), "max_keywords": self.cfg.max_keywords}

    def check(self, output: BaseModel, row: Any) -> None:
        words = [w.strip().lower() for w in output.keywords]  # type: ignore[attr-defined]
        if any(not w for w in words) or len(set(words)) != len(words):
            raise ValueError("keywords must be distinct and not blank")


TEMPLATE = """Give at most {{ max_keywords }} keywords of the text below.
Text: {{ text }}

Answer with JSON only: {"keywords": ["..."]}
"""


@pytest.fixture
def keywords_task():
    """KeywordsTask registered in this process for one test."""
    register(KeywordsTask)
    yield KeywordsTask
    unregister("keywords")


def install_plugin(site: Path, entry: str = "test_task_registry:KeywordsTask") -> dict[str, str]:
    """The plugin installed in ``site`` as entry point ``keywords`` of ``annotator.tasks``; the CLI's PYTHONPATH."""
    from conftest import install_entry_point

    return install_entry_point(site, "annotator.tasks", "keywords", entry)


def keywords_pipeline(tmp_path: Path, base_url: str, n: int = 12) -> Path:
    """A keywords pipeline (input, template and YAML in ``tmp_path``) against an OpenAI-compatible server."""
    (tmp_path / "keywords.jinja").write_text(TEMPLATE, encoding="utf-8")
    rows = [{"id": f"k{i:03d}", "text": f"Item {i}: the harbour crane lifted container number {i}."} for i in range(n)]
    (tmp_path / "input.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = {
        "name": "keywords_test",
        "input": {"path": "input.jsonl"},
        "task": {"type": "keywords", "max_keywords": 2},
        "prompt": {"template": "keywords.jinja"},
        "teacher": {
            "backend": "openai",
            "base_url": base_url,
            "model": "fault-model",
            "max_retries": 1,
            "timeout": 5.0,
        },
        "output": {"dir": "out"},
    }
    path = tmp_path / "keywords.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_task_from_a_plugin_runs_and_exports_end_to_end(tmp_path, server, run_cli):
    from conftest import process_started_with

    yaml_path = keywords_pipeline(tmp_path, server.base_url)
    with process_started_with(**install_plugin(tmp_path / "site")) as run_there:
        _keywords_end_to_end(tmp_path, yaml_path, server, run_there)
    # without the plugin installed the pipeline is refused in one line that lists the known tasks
    res = run_cli("validate", str(yaml_path))
    assert res.returncode == 2
    assert "task.type: unknown task 'keywords': the registered tasks are label, qa, rephrase" in res.stderr
    assert "Traceback" not in res.stderr


def _keywords_end_to_end(tmp_path: Path, yaml_path: Path, server, run_there) -> None:
    """validate, run and export a keywords pipeline in a process that has the plugin installed."""
    res = run_there("validate", str(yaml_path))
    assert res.returncode == 0, res.stderr
    assert "task keywords" in res.stdout

    res = run_there("run", str(yaml_path))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["task"] for r in records} == {"keywords"}
    assert all(r["status"] == "ok" and 1 <= len(r["output"]["keywords"]) <= 2 for r in records)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["task"] == "keywords" and manifest["template_path"].endswith("keywords.jinja")
    assert manifest["config"]["task"] == {"type": "keywords", "max_keywords": 2, "instructions": ""}
    assert server.stats()["total"] == 12  # one teacher call per row: every answer passed the checks

    res = run_there("export", str(out), "--out", str(tmp_path / "ds"), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["task"] == "keywords" and summary["format"] == "chat"
    assert summary["columns"] == ["id", "source_id", "messages", "n_keywords"]
    assert summary["counts"]["exported_rows"] == 12 == sum(summary["counts"]["per_split"].values())

    import datasets

    dsd = datasets.load_from_disk(str(tmp_path / "ds"))
    row = next(r for split in dsd.values() for r in split)
    rec = next(r for r in records if r["id"] == row["id"])
    assert row["messages"][-1] == {"role": "assistant", "content": ", ".join(rec["output"]["keywords"])}
    assert row["n_keywords"] == len(rec["output"]["keywords"])
    card = (tmp_path / "ds" / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["task_categories"] == ["text-generation"]

    res = run_there("export", str(out), "--out", str(tmp_path / "ds2"), "--format", "classification")
    assert res.returncode == 2 and "--format classification does not fit a keywords task" in res.stderr


def test_a_broken_plugin_is_skipped_with_one_line(tmp_path, make_pipeline):
    """A task plugin that fails to load does not block the other tasks (as a broken backend plugin does not): one
    warning line names it, and a pipeline of that task is refused with the reason."""
    from conftest import install_entry_point, process_started_with

    label_yaml = make_pipeline([{"id": "a", "text": "x"}])
    broken = {
        "keywords": ("no_such_module_xyz:KeywordsTask", "it failed to import: ModuleNotFoundError"),
        "keywords2": ("test_task_registry:KeywordsConfig", "the class's name is None, not 'keywords2'"),
    }
    env = {
        name: install_entry_point(tmp_path / "site", "annotator.tasks", name, entry)
        for name, (entry, _) in broken.items()
    }["keywords"]  # both in one site: one PYTHONPATH
    lines = [
        f"task plugin {name} = {entry} (entry point group annotator.tasks) skipped: {why}"
        for name, (entry, why) in broken.items()
    ]
    with process_started_with(**env) as run_there:
        res = run_there("validate", str(label_yaml))
        assert res.returncode == 0, res.stderr
        assert all(line in res.stderr for line in lines) and "Traceback" not in res.stderr
        for name in broken:
            doc = yaml.safe_load(keywords_pipeline(tmp_path, "http://127.0.0.1:9/v1").read_text(encoding="utf-8"))
            doc["task"]["type"] = name
            (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
            res = run_there("validate", str(tmp_path / f"{name}.yaml"))
            assert res.returncode == 2
            assert f"task.type: unknown task '{name}': the registered tasks are label" in res.stderr
            assert all(line in res.stderr for line in lines) and "Traceback" not in res.stderr
        assert run_there("-q", "validate", str(label_yaml)).stderr == ""


# ------------------------------------------------------------------------------------ the registry


def test_builtin_tasks_are_registered():
    assert {"label", "rephrase", "qa"} <= set(task_names())
    for name in ("label", "rephrase", "qa"):
        cls = get_task_class(name)
        assert cls.name == name and cls.default_template == f"{name}.jinja"
    assert get_task_class("label").aggregates_samples
    assert not get_task_class("rephrase").aggregates_samples and not get_task_class("qa").aggregates_samples


def test_unknown_task_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown task 'sumarize': the registered tasks are label, .*qa"):
        get_task_class("sumarize")

    class Cfg:
        type = "sumarize"

    with pytest.raises(ConfigError, match="unknown task 'sumarize'"):
        build_task(Cfg())


def test_duplicate_registration_is_refused(keywords_task):
    register(KeywordsTask)  # the same class again: a no-op

    class Impostor(KeywordsTask):
        pass

    with pytest.raises(ConfigError, match="task 'keywords' is registered twice"):
        register(Impostor)
    assert get_task_class("keywords") is KeywordsTask

    class LabelAgain(get_task_class("label")):  # type: ignore[misc]
        pass

    with pytest.raises(ConfigError, match="task 'label' is registered twice"):
        register(LabelAgain)


def test_a_task_class_must_declare_what_a_task_is():
    class Nameless:
        name = "Bad Name"

    with pytest.raises(ConfigError, match="lower-case"):
        register(Nameless)

    class Partial:
        name = "partial"
        config_model = KeywordsConfig

    with pytest.raises(ConfigError, match="does not declare default_template, aggregates_samples"):
        register(Partial)

    class WrongType(KeywordsTask):
        name = "wrong_type"

    with pytest.raises(ConfigError, match=r"KeywordsConfig.type must be Literal\['wrong_type'\]"):
        register(WrongType)
    assert "partial" not in task_names() and "wrong_type" not in task_names()


def test_a_registered_task_joins_the_config_union(tmp_path, keywords_task):
    from annotator.config import PipelineConfig, load_config

    path = keywords_pipeline(tmp_path, "http://127.0.0.1:9/v1")
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig) and isinstance(cfg.task, KeywordsConfig)
    assert cfg.task.max_keywords == 2
    with pytest.raises(ConfigError, match=r"task\.max_keywords: Input should be less than or equal to 10"):
        load_config(path, ["task.max_keywords=11"])
    with pytest.raises(ConfigError, match=r"task\.stopwords: unknown field"):
        load_config(path, ["task.stopwords=[a]"])
    with pytest.raises(ConfigError, match="teacher.samples: 3: the keywords task keeps one answer"):
        load_config(path, ["teacher.samples=3"])
    from annotator.errors import TemplateError
    from annotator.templates import PromptTemplate

    with pytest.raises(TemplateError, match="task 'keywords' has no built-in prompt template: set prompt.template"):
        PromptTemplate.builtin("keywords")


@pytest.mark.parametrize("task", [{"type": "rephrase"}, {"type": "qa"}])
def test_samples_on_a_task_that_does_not_aggregate_is_refused(tmp_path, task):
    from annotator.config import load_config

    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "p", "input": {"path": "d.csv"}, "task": task, "teacher": {"samples": 3}, "output": {"dir": "o"}}
        )
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    assert f"teacher.samples: 3: the {task['type']} task keeps one answer per row" in msg
    assert msg.endswith("set teacher.samples: 1")
    path.write_text(yaml.safe_dump({"name": "p", "input": {"path": "d.csv"}, "task": task, "output": {"dir": "o"}}))
    with pytest.raises(ConfigError, match=r"\(from --set teacher.samples=2\)"):
        load_config(path, ["teacher.samples=2"])
    assert load_config(path).teacher.samples == 1
