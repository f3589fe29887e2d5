"""The shape of the code base: imports run one way, parts are asked what they can do (never which class they are).

* The import graph of ``annotator`` (every ``import``, also inside functions and under ``TYPE_CHECKING``) has no
  cycle, and nothing :mod:`annotator.config` imports imports it back.
* The modules of the former cycles import first, on their own, in a fresh interpreter state (the order that used
  to fail with "partially initialized module").
* A plugin backend that declares a price gets costs and a budget; a plugin task that classifies can be audited and
  sampled; a plugin task ships its own default template.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest

from annotator.backends import BaseTeacherConfig, Generation, GenerationRequest, PriceConfig, TeacherCapabilities

PACKAGE = Path(__file__).resolve().parents[1] / "annotator"

LAZY_OWN_BACKEND = {("annotator.backends.openai_config", "annotator.backends.openai_compat")}
"""Edges allowed against the direction of imports, each inside a function only: the openai settings build their
backend, whose module loads the OpenAI SDK (over a second), so every pipeline file is validated without it."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> dict[str, bool]:
    """The annotator modules ``name`` imports -> whether every such import is inside a function."""

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function = {
        id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
    }
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("annotator"):
            targets = [f"{node.module}.{a.name}" for a in node.names]  # a submodule, or a name in the module
        for target in targets:
            mod = owner(target)
            if mod and mod != name:
                found[mod] = found.get(mod, True) and id(node) in in_function
    return found


def _graph() -> dict[str, dict[str, bool]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_imports_run_one_way():
    graph = _graph()
    for a, b in LAZY_OWN_BACKEND:
        assert graph[a][b], f"{a} may import {b} only inside a function"
    edges = {a: {b for b in targets if (a, b) not in LAZY_OWN_BACKEND} for a, targets in graph.items()}
    cycle = _cycle(edges)
    assert cycle is None, "import cycle (counting imports in functions and under TYPE_CHECKING): " + " -> ".join(cycle)


def test_nothing_config_imports_imports_it_back():
    edges = {a: set(targets) for a, targets in _graph().items()}
    below, todo = set(), ["annotator.config"]
    while todo:
        for nxt in edges[todo.pop()] - below:
            below.add(nxt)
            todo.append(nxt)
    assert "annotator.config" not in below
    back = sorted(m for m in below if "annotator.config" in edges[m])
    assert back == [], f"imported by annotator.config and importing it back: {back}"


FORMER_CYCLES = [
    "annotator.config",
    "annotator.backends",
    "annotator.backends.openai_compat",
    "annotator.backends.openai_config",
    "annotator.backends.ray_pool",
    "annotator.costs",
    "annotator.inputs",
    "annotator.retry",
    "annotator.tasks",
    "annotator.tasks.base",
    "annotator.tasks.label",
    "annotator.tasks.qa",
    "annotator.tasks.registry",
    "annotator.tasks.rephrase",
    "annotator.batch",
    "annotator.engine",
    "annotator.audit.run_audit",
    "annotator.audit.slices",
    "annotator.export.card",
    "annotator.export.dataset_builder",
    "annotator.student.card",
    "annotator.student.train",
]
"""The modules of the import cycles this layout removed (14 through config.py, four of two modules)."""


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_modules_of_former_cycles_import_first_in_a_fresh_interpreter():
    """Each module is imported with no annotator module loaded before it (third-party modules stay cached): the
    order in which an import cycle fails with "partially initialized module"."""
    names = FORMER_CYCLES
    code = textwrap.dedent(f"""
        import importlib, sys, traceback
        failed = []
        for name in {names!r}:
            for loaded in [m for m in sys.modules if m == "annotator" or m.startswith("annotator.")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except Exception:
                failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
        print("\\n".join(failed))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=PACKAGE.parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", res.stdout


# -- capabilities: a plugin backend with a price ------------------------------------------------------------------
class PricedEchoBackend:
    """Answers every request with the label ``sport``; 100 prompt and 10 completion tokens each."""

    name = "priced-echo"
    model_id = "priced-echo:1"
    structured_mode = "json_schema"
    max_concurrency = 1

    async def generate(self, request: GenerationRequest) -> Generation:
        return Generation(text='{"label": "sport"}', finish_reason="stop", prompt_tokens=100, completion_tokens=10)

    async def aclose(self) -> None:
        return None


class PricedEchoConfig(BaseTeacherConfig):
    """A plugin backend's settings that declare a price and a budget (as a priced API would)."""

    backend: Literal["priced-echo"] = "priced-echo"
    max_cost: float | None = None

    def create_backend(self) -> PricedEchoBackend:
        return PricedEchoBackend()

    def capabilities(self) -> TeacherCapabilities:
        return TeacherCapabilities(price=PriceConfig(input=1000.0, output=10000.0), max_cost=self.max_cost)


def test_a_plugin_backend_that_declares_a_price_gets_costs_estimates_and_a_budget(tmp_path, make_pipeline):
    """costs.py asks the teacher for its price: 100 x $1000/M + 10 x $10000/M = $0.2 per call. The plugin is found
    at start-up, so the commands run in one process started with its PYTHONPATH."""
    from conftest import install_entry_point, process_started_with, read_annotations, rows_of

    env = install_entry_point(
        tmp_path / "site", "annotator.backends", "priced-echo", "test_architecture:PricedEchoConfig"
    )
    yaml_path = make_pipeline(rows_of([f"text {i}" for i in range(5)]), teacher={"backend": "priced-echo"})
    capped = make_pipeline(
        rows_of([f"text {i}" for i in range(5)]),
        name="capped",
        teacher={"backend": "priced-echo", "max_cost": 0.5},
        output={"dir": "capped"},
    )
    with process_started_with(**env) as run_there:
        res = run_there("validate", str(yaml_path), "--estimate", "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["estimate"]["cost_max_usd"] is not None
        res = run_there("run", str(yaml_path), "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["cost_total_usd"] == pytest.approx(1.0)
        assert [r["cost"] for r in read_annotations(tmp_path / "out")] == pytest.approx([0.2] * 5)
        res = run_there("run", str(capped))
        assert res.returncode == 8 and "teacher.max_cost=$0.5" in res.stderr, res.stderr


def test_a_capability_refusal_is_a_config_error(tmp_path, monkeypatch):
    """A teacher that cannot re-ask says why; load_config names the setting and the --set it came from."""
    from annotator.backends.local_llama import LocalTeacherConfig
    from annotator.config import load_config
    from annotator.errors import ConfigError

    monkeypatch.setattr(
        LocalTeacherConfig, "capabilities", lambda self: TeacherCapabilities(reask_refused="this teacher cannot re-ask")
    )
    (tmp_path / "in.csv").write_text("id,text\n1,a\n")
    (tmp_path / "p.yaml").write_text(
        "name: p\ninput: {path: in.csv}\ntask: {type: label, labels: [a, b]}\noutput: {dir: out}\n"
    )
    assert load_config(tmp_path / "p.yaml").validation.on_invalid == "resample"
    with pytest.raises(
        ConfigError,
        match=r"validation.on_invalid: this teacher cannot re-ask \(from --set "
        r"validation.on_invalid=reask\)",
    ):
        load_config(tmp_path / "p.yaml", ["validation.on_invalid=reask"])


# -- capabilities: a plugin task that classifies -----------------------------------------------------------------
@pytest.fixture
def sentiment_task():
    """A plugin task that classifies (a label task under another name), registered for one test."""
    from annotator.tasks import register, unregister
    from annotator.tasks.label import LabelTask, LabelTaskConfig

    class SentimentConfig(LabelTaskConfig):
        type: Literal["sentiment"]  # type: ignore[assignment]

    class SentimentTask(LabelTask):
        name = "sentiment"
        config_model = SentimentConfig

    register(SentimentTask)
    yield SentimentTask
    unregister("sentiment")


def _run_dir(path: Path, task: str, labels: list[str | None]) -> Path:
    from annotator.records import AnnotationRecord

    path.mkdir()
    records = [
        AnnotationRecord(
            id=f"i{k}",
            text=f"text {k}",
            task=task,
            status="ok",
            label=lab,
            confidence=0.9,
            output={"label": lab},
            model="m",
            prompt_hash="h",
        )
        for k, lab in enumerate(labels)
    ]
    (path / "annotations.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
    return path


def test_a_plugin_task_that_classifies_can_be_audited_and_sampled(tmp_path, sentiment_task):
    from annotator.audit.compute import AuditOptions
    from annotator.audit.run_audit import run_audit
    from annotator.audit.sampling import load_candidates

    labels = ["pos", "neg"] * 10
    run = _run_dir(tmp_path / "run", "sentiment", labels)
    humans = tmp_path / "humans.csv"
    humans.write_text(
        "item_id,annotator,label\n" + "".join(f"i{k},{a},{lab}\n" for k, lab in enumerate(labels) for a in ("a", "b"))
    )
    report = run_audit(AuditOptions(humans=humans, teacher=run, bootstrap=0, plots=False))
    assert report.classification.accuracy.value == 1.0
    cands, names = load_candidates(run)
    assert len(cands) == 20 and names == ["neg", "pos"]


def test_a_task_that_does_not_classify_is_refused_by_audit_and_sample(tmp_path):
    from annotator.audit.sampling import load_candidates
    from annotator.audit.teacher import load_teacher
    from annotator.errors import InputDataError

    run = _run_dir(tmp_path / "run", "rephrase", [None, None])
    with pytest.raises(InputDataError, match="'rephrase' records; audit and estimate need a single-label task"):
        load_teacher(run)
    with pytest.raises(InputDataError, match="'rephrase' task; sampling for an audit needs a label task"):
        load_candidates(run)


# -- a plugin task ships its default template --------------------------------------------------------------------
def test_a_plugin_task_ships_its_own_default_template(tmp_path, monkeypatch):
    from annotator.tasks import register, unregister
    from annotator.templates import PromptTemplate, default_template_path

    plugin = tmp_path / "topic_plugin"
    plugin.mkdir()
    (plugin / "topic.py").write_text(
        textwrap.dedent("""
        from typing import Literal

        from annotator.tasks.label import LabelTask, LabelTaskConfig


        class TopicConfig(LabelTaskConfig):
            type: Literal["topic"]


        class TopicTask(LabelTask):
            name = "topic"
            config_model = TopicConfig
            default_template = "topic.jinja"
    """)
    )
    (plugin / "topic.jinja").write_text("Topic of: {{ text }} ({{ labels | map(attribute='name') | join(', ') }})")
    monkeypatch.syspath_prepend(str(plugin))
    from topic import TopicTask  # type: ignore[import-not-found]

    register(TopicTask)
    try:
        assert default_template_path("topic") == plugin / "topic.jinja"
        template = PromptTemplate.builtin("topic")
        assert template.name == "builtin:topic.jinja"
        assert template.render({"text": "x", "labels": [{"name": "a"}, {"name": "b"}]}) == [
            {"role": "user", "content": "Topic of: x (a, b)"}
        ]
        # the built-in tasks still find theirs in the package
        assert default_template_path("label") == PACKAGE / "prompts" / "label.jinja"
    finally:
        unregister("topic")
