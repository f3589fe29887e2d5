"""Rule 3 (docs/safety.md): a secret is redacted wherever it appears.

Gateways that take the key in the URL (``?api-key=${KEY}``, ``https://user:${PASSWORD}@host``, or a path segment from
a ``${..._TOKEN}``) used to leak it into run.json, every record's ``model``, the cache, the dataset card, export.json
and the summary table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile import cli

from conftest import out_dir_of, rows_of

QUERY_KEY = "gwq-Zq8vR2mN4xK7pL1w"
USER_PASSWORD = "gwp-T9sB3dF6Hh2Jj4Kk"
PATH_TOKEN = "gwt-Mm5Nn7Bb9Vv1Cc3X"
LITERAL = "lit-Qq1Ww2Ee3Rr4Tt5Y"


def _leaks(root: Path, texts: list[str], secrets: list[str]) -> list[str]:
    found = [f"output {i}" for i, t in enumerate(texts) for s in secrets if s in t]
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix != ".yaml":  # the user's own pipeline file holds what the user wrote
            data = f.read_bytes()
            found += [f"{f.relative_to(root)}" for s in secrets if s.encode() in data]
    return found


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/v1?api-key=${{GW_KEY}}",
        "http://gateway:${{GW_PASSWORD}}@127.0.0.1:{port}/v1",
        "http://127.0.0.1:{port}/${{GW_TOKEN}}/v1",
        "http://127.0.0.1:{port}/v1?token=" + LITERAL,
    ],
)
@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_a_key_in_base_url_reaches_no_file_and_no_output(server, make_pipeline, capsys, monkeypatch, tmp_path, url):
    monkeypatch.setenv("GW_KEY", QUERY_KEY)
    monkeypatch.setenv("GW_PASSWORD", USER_PASSWORD)
    monkeypatch.setenv("GW_TOKEN", PATH_TOKEN)
    secrets = [QUERY_KEY, USER_PASSWORD, PATH_TOKEN, LITERAL]
    pipe = make_pipeline(
        rows_of([f"row {i}" for i in range(12)]), teacher={"base_url": url.format(port=server.port), "max_retries": 0}
    )
    outputs = []
    for args in (
        ["validate", pipe, "--json"],
        ["validate", pipe, "--set", "teacher.timeout=5"],
        ["run", pipe],
        ["run", pipe, "--json"],
        ["export", out_dir_of(pipe), "--split", "0.5,0.5"],
        ["export", out_dir_of(pipe), "--json"],
    ):
        r = cli(capsys, *args)
        outputs += [r.out, r.err]
        assert r.code == 0, (args, r.err)
    assert server.stats()["total"] == 12  # the teacher was really called through that URL
    records = [json.loads(line) for line in (out_dir_of(pipe) / "annotations.jsonl").read_text().splitlines()]
    assert all(rec["status"] == "ok" and "***" in rec["model"] for rec in records), records[0]
    assert _leaks(tmp_path, outputs, secrets) == []


def test_error_lines_and_logs_never_show_url_credentials(capsys, make_pipeline, monkeypatch):
    monkeypatch.setenv("GW_KEY", QUERY_KEY)
    pipe = make_pipeline(
        rows_of(["one"]),
        teacher={"base_url": "http://127.0.0.1:9/v1?key=${GW_KEY}", "max_retries": 0},
        validation={"max_consecutive_transport_failures": 1},
    )
    r = cli(capsys, "-v", "run", pipe)
    assert r.code == 5 and "127.0.0.1:9" in r.err, r.err  # the breaker names the teacher...
    assert QUERY_KEY not in r.err + r.out  # ...without its key
