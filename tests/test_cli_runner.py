"""The tests' in-process CLI runner (tests/cli_runner.py) answers as the console script does in a process of its
own, and leaves nothing of a call behind in the test process."""

from __future__ import annotations

import logging
import os

import pytest

from conftest import LABELS, rows_of


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "{ok}"],
        ["validate", "{ok}", "--json"],
        ["-v", "validate", "{bad}"],
        ["run", "{ok}", "--quiet", "--set", "teacher"],
        ["export", "{missing}", "--format", "Chat"],
        ["nonsense-command"],
    ],
)
@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_in_process_and_a_real_process_answer_the_same(args, make_pipeline, run_cli, run_cli_process, tmp_path):
    ok = make_pipeline(rows_of(["The striker scored.", "Rates rose."]))
    bad = make_pipeline(rows_of(["x"]), name="bad", task={"type": "label", "labels": LABELS, "bogus": 1})
    argv = [a.format(ok=ok, bad=bad, missing=tmp_path / "nowhere") for a in args]
    here, there = run_cli(*argv), run_cli_process(*argv)
    assert (here.returncode, here.stdout, here.stderr) == (there.returncode, there.stdout, there.stderr)


def test_a_call_leaves_the_process_as_it_found_it(make_pipeline, run_cli, tmp_path):
    from annotator.progress import quiet

    p = make_pipeline(rows_of(["The striker scored."]))
    env, cwd = dict(os.environ), os.getcwd()
    ours = logging.getLogger("annotator")
    handlers, level, was_quiet = ours.handlers[:], ours.level, quiet()
    res = run_cli("-q", "validate", str(p), "--set", "input.path=two.jsonl", ANNOTATOR_TEST_VAR="set", cwd=tmp_path)
    assert res.returncode == 2 and "two.jsonl" in res.stderr  # relative to cwd=tmp_path, read in the call
    assert dict(os.environ) == env and os.getcwd() == cwd and "ANNOTATOR_TEST_VAR" not in os.environ
    assert ours.handlers == handlers and ours.level == level and quiet() == was_quiet
    with pytest.raises(ValueError, match="run_cli_process"):
        run_cli("validate", str(p), PYTHONPATH="/elsewhere")  # only a new process reads entry points
