"""Shared fixtures: a fault-injecting OpenAI-compatible server, pipeline YAML writers, CLI runners.

* ``fault_server`` (session) / ``server`` (per test, counters reset): a :class:`ServerHandle` for
  ``tests/fault_server.py`` running in a subprocess on 127.0.0.1 with a free port.
* ``make_pipeline``: write input rows + a pipeline YAML into ``tmp_path``; returns the YAML path.
* ``run_cli``: run ``annotator ...`` in this process (tests/cli_runner.py), output captured like a process's;
  ``run_cli_process`` / ``spawn_cli``: as a real process, for what only a process shows (signals, kill -9, locks
  between processes, its exit status, what C libraries write to its stderr, entry points read at import).
* shared engines, one per session (tests/engines.py): ``llama_server``, ``local_teacher``, ``vllm_engine``,
  ``ray_address``, ``student_dir``; a test that uses one is marked ``slow``. ``make test`` runs on pytest-xdist
  workers with ``--dist loadfile``: a file's tests share a worker, so an engine used by one file starts once.
* every process the tests start carries ``ANNOTATOR_TEST_SESSION`` in its environment; at the end of the session
  none may still run (``nothing_left_running``).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from cli_runner import (  # noqa: E402
    REPO,
    annotator_cmd,
    cli_state_kept,
    kill_group,
    process_started_with,
    run_in_process,
    run_process,
    subprocess_env,
)
from cli_runner import spawn as spawn_cli  # noqa: E402
from engines import (  # noqa: E402,F401  (shared engines: fixtures for every test file)
    ENGINE_GROUPS,
    llama_server,
    local_teacher,
    ray_address,
    student_dir,
    vllm_engine,
    vllm_model,
)
from leftovers import SESSION_VAR, check_nothing_left_running  # noqa: E402
from servers import ServerHandle, start_fault_server, stop_fault_server  # noqa: E402

__all__ = [
    "REPO",
    "TESTS_DIR",
    "ServerHandle",
    "annotator_cmd",
    "kill_group",
    "process_started_with",
    "spawn_cli",
    "start_fault_server",
    "stop_fault_server",
    "subprocess_env",
]
os.environ[SESSION_VAR] = str(os.getpid())  # inherited by every process a test starts (one value per xdist worker)
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # workers share the cores: torch (here and in CLI processes) too
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )


LABELS = ["politics", "economy", "sport", "science_technology", "health", "arts_culture"]


# -- the fault server ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fault_server() -> Iterator[ServerHandle]:
    handle = start_fault_server()
    try:
        yield handle
    finally:
        stop_fault_server(handle)


@pytest.fixture
def server(fault_server: ServerHandle) -> ServerHandle:
    """The session's fault server with counters and config reset for this test."""
    fault_server.reset()
    return fault_server


# -- pipelines -----------------------------------------------------------------------------------------------
def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as CSV (``.csv``) or JSONL (anything else)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        import csv

        cols = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    else:
        with path.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def pipeline_config(base_url: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A label pipeline against an OpenAI-compatible server, fast settings for tests."""
    cfg: dict[str, Any] = {
        "name": "test_pipeline",
        "input": {"path": "data/input.jsonl", "id_column": "id", "text_column": "text"},
        "task": {"type": "label", "labels": list(LABELS), "shuffle_labels": True},
        "teacher": {
            "backend": "openai",
            "base_url": base_url or "http://127.0.0.1:9/v1",
            "model": "fault-model",
            "concurrency": 8,
            "timeout": 2.0,
            "max_retries": 3,
            "max_backoff": 0.05,
            "max_tokens": 32,
            "structured_output": "json_schema",
        },
        "validation": {"max_attempts": 3},
        "output": {"dir": "out"},
    }
    if overrides.get("teacher", {}).get("backend", "openai") != "openai":
        cfg["teacher"] = {}  # a teacher of another backend replaces the openai one (its settings would be refused)
    return deep_merge(cfg, overrides)


@pytest.fixture
def make_pipeline(tmp_path: Path):
    """``make_pipeline(rows, base_url=..., name="p", input_file="data/input.jsonl", **overrides) -> yaml path``.

    ``rows``: list of dicts (written as JSONL, or CSV when ``input_file`` ends in .csv), or None to write no
    input file. ``overrides`` are deep-merged into :func:`pipeline_config` (e.g. ``teacher={"concurrency": 4}``).
    The YAML lands in ``tmp_path/<name>.yaml``; relative paths resolve against it.
    """

    def make(
        rows: list[dict[str, Any]] | None,
        base_url: str | None = None,
        name: str = "pipeline",
        input_file: str = "data/input.jsonl",
        **overrides: Any,
    ) -> Path:
        cfg = pipeline_config(base_url, **overrides)
        cfg["input"]["path"] = input_file
        if rows is not None:
            write_rows(tmp_path / input_file, rows)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return path

    return make


def rows_of(texts: list[str], prefix: str = "r") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i:05d}", "text": t} for i, t in enumerate(texts)]


def read_annotations(run_dir: Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "annotations.jsonl"
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def out_dir_of(yaml_path: Path) -> Path:
    cfg = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8"))
    d = Path(cfg["output"]["dir"])
    return d if d.is_absolute() else (Path(yaml_path).parent / d).resolve()


def install_entry_point(site: Path, group: str, name: str, entry: str) -> dict[str, str]:
    """A distribution in ``site`` declaring ``name = entry`` in entry-point ``group``, as `pip install` of a plugin
    package would leave it; returns the PYTHONPATH for CLI subprocesses that finds it (and the tests' modules)."""
    dist = site / f"annotator_{name}_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: annotator-{name}-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{name} = {entry}\n")
    paths = [os.environ.get("PYTHONPATH", ""), str(TESTS_DIR), str(site)]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


# -- the CLI -------------------------------------------------------------------------------------------------
@pytest.fixture
def run_cli():
    """``run_cli("run", str(yaml), cwd=..., **env) -> CliResult`` (returncode, stdout, stderr): the command run in
    this process (tests/cli_runner.py), as a process would run it."""
    return run_in_process


@pytest.fixture(autouse=True)
def _cli_state_kept() -> Iterator[None]:
    """Tests that call ``annotator.cli.main`` themselves (``-q`` included) leave no state for the next test."""
    with cli_state_kept():
        yield


@pytest.fixture
def run_cli_process():
    """``run_cli_process("run", str(yaml), timeout=60, cwd=..., **env) -> CompletedProcess``: a real process, for
    what only a process shows (its exit status, signals, C-level stderr, entry points found at start-up)."""
    return run_process


# -- sessions: shared engines, pytest-xdist, nothing left behind ---------------------------------------------
def _weight(item: pytest.Item) -> int:
    """0.. for the tests of a shared engine (vLLM first, the longest), then tests with a module-scoped fixture (a
    trained student, a built wheel), then the rest."""
    names = getattr(item, "fixturenames", ())
    order = list(dict.fromkeys(ENGINE_GROUPS.values()))
    engines = [order.index(ENGINE_GROUPS[f]) for f in names if f in ENGINE_GROUPS]
    if engines:
        return min(engines)
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    module_scoped = any(d.scope in ("module", "package", "class") for fixture in defs.values() for d in fixture)
    return len(order) if module_scoped else len(order) + 1


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses a shared engine (tests/engines.py) is ``slow``. Files go in the order of their heaviest
    test, so with ``--dist loadfile`` (a file's tests on one worker: its module fixtures made once) the longest work
    starts first; a file's tests keep their order."""
    file_weight: dict[str, int] = {}
    for item in items:
        if any(f in ENGINE_GROUPS for f in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        path = item.nodeid.split("::")[0]
        file_weight[path] = min(file_weight.get(path, _weight(item)), _weight(item))
    items.sort(key=lambda item: file_weight[item.nodeid.split("::")[0]])  # stable


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running() -> Iterator[None]:
    """When the session ends, no process a test started may still run (servers, engines, Ray, CLI runs)."""
    yield
    check_nothing_left_running()


# -- in-process runs -----------------------------------------------------------------------------------------
def run_pipeline(yaml_path: Path, retry_failed: bool = False, backend: Any = None):
    """Run a pipeline in this process; return ``(manifest, records_by_id)`` (records as dicts)."""
    import asyncio

    from annotator.config import load_config
    from annotator.engine import Pipeline

    cfg = load_config(yaml_path)
    manifest = asyncio.run(Pipeline(cfg, backend=backend, retry_failed=retry_failed).run())
    records = read_annotations(cfg.output.dir)
    return manifest, {r["id"]: r for r in records}
