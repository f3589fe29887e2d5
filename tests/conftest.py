"""Shared fixtures: a fault-injecting OpenAI-compatible server, pipeline YAML writers, CLI runners.

* ``fault_server`` (session) / ``server`` (per test, counters reset): a :class:`ServerHandle` for
  ``tests/fault_server.py`` running in a subprocess on 127.0.0.1 with a free port.
* ``make_pipeline``: write input rows + a pipeline YAML into ``tmp_path``; returns the YAML path.
* ``run_cli``: run ``annotator ...`` in a subprocess and capture its output.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


LABELS = ["politics", "economy", "sport", "science_technology", "health", "arts_culture"]


def annotator_cmd() -> list[str]:
    """How to start the CLI: the venv console script when installed, else ``python -m annotator.cli``."""
    script = Path(sys.executable).with_name("annotator")
    return [str(script)] if script.exists() else [sys.executable, "-m", "annotator.cli"]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1",
                "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(k, None)
    env.update(extra)
    return env


# -- the fault server ----------------------------------------------------------------------------------------
class ServerHandle:
    """Client side of a running ``tests/fault_server.py``."""

    def __init__(self, proc: subprocess.Popen[str], port: int):
        self.proc = proc
        self.port = port
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/v1"

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.root + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset(self, **config: Any) -> None:
        """Clear counters and set the default config (plus ``config`` overrides)."""
        self._call("POST", "/reset", {})
        defaults = {"latency": 0.0, "retry_after": 0.05, "hang": 30.0, "prompt_tokens": 50,
                    "completion_tokens": 10, "record_times": True, "max_prompt_chars": 0,
                    "trickle_interval": 0.25, "huge_chars": 50_000_000, "rpm": 0, "tpm": 0, "rate_window": 60.0,
                    "cached_tokens": 0, "batch_delay": 0.2, "batch_fail_next": "", "batch_create_status": 0,
                    "weak_models": []}
        self._call("POST", "/config", {**defaults, **config})

    def configure(self, **config: Any) -> dict[str, Any]:
        return self._call("POST", "/config", config)

    def calls(self, text: str) -> int:
        """Requests the server has seen for the item with this text."""
        return int(self.stats()["by_item"].get(text, 0))

    def wait_for(self, predicate, timeout: float = 30.0, interval: float = 0.05) -> dict[str, Any]:
        """Poll ``/stats`` until ``predicate(stats)`` holds; return those stats."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if predicate(s):
                return s
            if time.monotonic() > deadline:
                raise TimeoutError(f"server condition not met within {timeout}s (total={s['total']})")
            time.sleep(interval)


def start_fault_server(latency: float = 0.0) -> ServerHandle:
    proc = subprocess.Popen(
        [sys.executable, str(TESTS_DIR / "fault_server.py"), "--port", "0", "--latency", str(latency)],
        stdout=subprocess.PIPE, text=True, env=subprocess_env(),
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"fault server did not start: {line!r}")
    return ServerHandle(proc, int(line.split()[1]))


def stop_fault_server(handle: ServerHandle) -> None:
    handle.proc.terminate()
    try:
        handle.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        handle.proc.kill()
        handle.proc.wait()


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
        "teacher": {"backend": "openai", "base_url": base_url or "http://127.0.0.1:9/v1", "model": "fault-model",
                    "concurrency": 8, "timeout": 2.0, "max_retries": 3, "max_backoff": 0.05,
                    "max_tokens": 32, "structured_output": "json_schema"},
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

    def make(rows: list[dict[str, Any]] | None, base_url: str | None = None, name: str = "pipeline",
             input_file: str = "data/input.jsonl", **overrides: Any) -> Path:
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
    """``run_cli("run", str(yaml), timeout=60) -> CompletedProcess`` (text, stdout+stderr captured)."""

    def run(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*annotator_cmd(), *args], capture_output=True, text=True, timeout=timeout,
                              env=subprocess_env(**env), cwd=str(REPO))

    return run


def spawn_cli(*args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``annotator ...`` without waiting (crash tests); stdout+stderr go to one pipe."""
    return subprocess.Popen([*annotator_cmd(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=subprocess_env(**env), cwd=str(REPO))


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
