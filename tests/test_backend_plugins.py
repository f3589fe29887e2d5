"""Backends are registered units: a backend defined in this file alone (its settings class and the backend) runs
`annotator run` as a plugin (an ``annotator.backends`` entry point), without any change to the ``annotator``
package. Its settings are checked like the built-in ones (a setting of another backend is an error naming both).

This module is also the plugin's code: the CLI subprocesses import ``test_backend_plugins:EchoTeacherConfig``, so
its top-level imports stay light (fixtures come from conftest through pytest). Backend plugins are found when
``annotator.backends`` is imported, so a CLI run that should see one is a real process started with the plugin on
its ``PYTHONPATH`` (``process_started_with``: several commands in one process; ``run_cli_process``: one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from annotator.backends import BaseTeacherConfig, Generation, GenerationRequest

TESTS = Path(__file__).resolve().parent


class EchoBackend:
    """A teacher that answers every request with the same label, and counts the requests it got."""

    name = "echo"
    structured_mode = "json_schema"

    def __init__(self, cfg: EchoTeacherConfig):
        self.model_id = f"echo:{cfg.answer}"
        self.max_concurrency = cfg.concurrency
        self.answer = cfg.answer

    async def generate(self, request: GenerationRequest) -> Generation:
        words = sum(len(m["content"].split()) for m in request.messages)
        return Generation(
            text=json.dumps({"label": self.answer}), finish_reason="stop", prompt_tokens=words, completion_tokens=3
        )

    async def aclose(self) -> None:
        return None


class EchoTeacherConfig(BaseTeacherConfig):
    backend: Literal["echo"] = "echo"
    answer: str = Field(default="sport", description="The label every answer gives.")
    concurrency: int = Field(default=4, ge=1)

    def create_backend(self) -> EchoBackend:
        return EchoBackend(self)


def install_plugin(site: Path, entry: str = "test_backend_plugins:EchoTeacherConfig") -> dict[str, str]:
    """The plugin installed in ``site`` as entry point ``echo`` of ``annotator.backends``; the CLI's PYTHONPATH."""
    from conftest import install_entry_point

    return install_entry_point(site, "annotator.backends", "echo", entry)


def test_a_backend_from_a_plugin_runs_a_pipeline(tmp_path, make_pipeline, run_cli):
    from conftest import process_started_with, read_annotations, rows_of

    yaml_path = make_pipeline(
        rows_of([f"text {i}" for i in range(7)]), teacher={"backend": "echo", "answer": "politics", "concurrency": 2}
    )
    with process_started_with(**install_plugin(tmp_path / "site")) as run_there:
        res = run_there("run", str(yaml_path))
        assert res.returncode == 0, res.stderr
        records = read_annotations(tmp_path / "out")
        assert len(records) == 7 and {r["label"] for r in records} == {"politics"}
        assert {r["model"] for r in records} == {"echo:politics"}
        manifest = json.loads((tmp_path / "out" / "run.json").read_text())
        assert manifest["config"]["teacher"]["backend"] == "echo"
        # a rerun is served from the cache: the plugin's model id is part of the key like a built-in one's
        res = run_there("run", str(yaml_path), "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["teacher_calls"] == 0

        # its settings are checked like a built-in backend's: another backend's field names both
        bad = make_pipeline(rows_of(["x"]), name="bad", teacher={"backend": "echo", "n_ctx": 512})
        res = run_there("validate", str(bad))
        assert res.returncode == 2
        assert "teacher.n_ctx: not a setting of backend echo (it belongs to backend local)" in res.stderr

    # without the plugin installed the pipeline is refused in one line that lists the known backends
    res = run_cli("validate", str(yaml_path))
    assert res.returncode == 2 and "unknown backend 'echo' (known: local, openai, vllm)" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_broken_backend_plugin_is_skipped_with_one_line(tmp_path, make_pipeline):
    from conftest import install_entry_point, process_started_with, rows_of

    broken = {
        "echo": ("no_such_module_xyz:Config", "it failed to import: ModuleNotFoundError"),
        "echo2": ("test_backend_plugins:EchoBackend", "it is not a subclass of annotator.backends.BaseTeacherConfig"),
    }
    env = {
        name: install_entry_point(tmp_path / "site", "annotator.backends", name, entry)
        for name, (entry, _) in broken.items()
    }["echo"]  # both in one site: one PYTHONPATH
    with process_started_with(**env) as run_there:
        for name, (_, why) in broken.items():
            yaml_path = make_pipeline(rows_of(["x"]), name=name, teacher={"backend": name})
            res = run_there("validate", str(yaml_path))
            assert res.returncode == 2, res.stdout
            for other, (other_entry, other_why) in broken.items():  # every broken plugin is named
                group = "(entry point group annotator.backends)"
                line = f"backend plugin {other} = {other_entry} {group} skipped: {other_why}"
                assert res.stderr.startswith(line) or f"\n{line}" in res.stderr, res.stderr
            assert f"unknown backend '{name}'" in res.stderr and why in res.stderr and "Traceback" not in res.stderr


class ShadowOpenAIConfig(BaseTeacherConfig):
    """A plugin claiming the built-in name ``openai``."""

    backend: Literal["openai"] = "openai"

    def create_backend(self) -> EchoBackend:
        raise AssertionError("a plugin never replaces a built-in backend")


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_plugin_shadowing_a_builtin_is_skipped_and_quiet_hides_the_line(tmp_path, make_pipeline, run_cli_process):
    """The skip line is a warning: `annotator -q` hides it (it is found at import, before -q is read); the
    built-in backend stays the one a pipeline gets. The console script itself, in a process of its own."""
    from conftest import install_entry_point, rows_of

    env = install_entry_point(
        tmp_path / "site", "annotator.backends", "openai", "test_backend_plugins:ShadowOpenAIConfig"
    )
    yaml_path = make_pipeline(rows_of(["x"]), teacher={"backend": "openai", "base_url": "http://127.0.0.1:9/v1"})
    line = (
        "backend plugin openai = test_backend_plugins:ShadowOpenAIConfig (entry point group annotator.backends) "
        "skipped: backend 'openai' is already annotator.backends.openai_config.OpenAITeacherConfig"
    )
    default = run_cli_process("validate", str(yaml_path), **env)
    quiet = run_cli_process("-q", "validate", str(yaml_path), **env)
    assert default.returncode == quiet.returncode == 0, default.stderr
    assert line in " ".join(default.stderr.split())
    assert quiet.stderr == "" and quiet.stdout == default.stdout
