"""Rule 9 (docs/safety.md): exit codes tell the truth, and one fault gets one answer on every path.

A plugin that calls ``sys.exit(0)`` (at import or while running) made ``annotator run`` exit 0 with nothing done; it
is now a skipped plugin (at import) or exit 2 naming it. A 401 inside Ray workers was retried per row until the
circuit breaker (exit 5, "check that the teacher is up"); it now stops the run as the local path does (exit 2,
"check model/key/URL")."""

from __future__ import annotations

import textwrap

import pytest
from test_task_registry import keywords_pipeline

from conftest import install_entry_point, out_dir_of, rows_of

PLUGIN = """
import sys
from test_task_registry import KeywordsTask

if {at_import}:
    sys.exit(0)


class ExitingTask(KeywordsTask):
    def check(self, output, row):
        sys.exit(0)
"""


def _plugin(tmp_path, at_import: bool) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "exiting_plugin.py").write_text(textwrap.dedent(PLUGIN.format(at_import=at_import)))
    return install_entry_point(site, "annotator.tasks", "keywords", "exiting_plugin:ExitingTask")


def test_a_plugin_exiting_at_import_is_a_skipped_plugin(tmp_path, server, run_cli_process):
    env = _plugin(tmp_path, at_import=True)
    pipe = keywords_pipeline(tmp_path, server.base_url)
    res = run_cli_process("run", str(pipe), **env)
    assert res.returncode == 2, res.stdout + res.stderr  # exit 0 with no output and no annotations before
    assert "skipped: it called sys.exit(0) while being imported" in res.stderr
    assert "unknown task 'keywords'" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_plugin_exiting_while_running_is_exit_2_naming_it(tmp_path, server, run_cli_process):
    env = _plugin(tmp_path, at_import=False)
    pipe = keywords_pipeline(tmp_path, server.base_url)
    res = run_cli_process("run", str(pipe), **env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "exiting_plugin (line" in res.stderr and "called sys.exit(0)" in res.stderr
    assert "Traceback" not in res.stderr and not (out_dir_of(pipe) / "annotations.jsonl").exists()


def test_a_401_on_ray_stops_the_run_like_a_local_401(ray_address, server, make_pipeline, run_cli):
    texts = [f"[[401]] refused row {i}" for i in range(40)]
    answers = {}
    for where in ("local", ray_address):
        server.reset()
        pipe = make_pipeline(
            rows_of(texts),
            server.base_url,
            name=f"p{len(answers)}",
            teacher={"concurrency": 2},
            output={"dir": f"out{len(answers)}"},
        )
        args = ["run", str(pipe), "--quiet"] + ([] if where == "local" else ["--ray", where])
        res = run_cli(*args, timeout=300, RAY_AUTH_MODE="disabled")
        answers[where] = (res.returncode, res.stderr.strip().splitlines()[-1], server.stats()["total"])
    local, ray = answers["local"], answers[ray_address]
    assert local[0] == ray[0] == 2, answers  # exit 5 ("check that the teacher is up") on Ray before
    assert "check model/key/URL" in local[1] and "check model/key/URL" in ray[1], answers
    assert ray[2] < len(texts), answers  # it stopped: not every row was tried


def test_a_401_from_the_batch_api_gets_the_online_answer(server, make_pipeline, capsys):
    from hostile import cli

    server.configure(batch_create_status=401)
    pipe = make_pipeline(
        rows_of(["one", "two"]), server.base_url, teacher={"mode": "batch", "batch_poll_interval": 0.05}
    )
    r = cli(capsys, "run", pipe)
    assert r.code == 2 and "check model/key/URL" in r.err and "re-attach" not in r.err, r.err
