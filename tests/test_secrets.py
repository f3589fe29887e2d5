"""The API key never reaches a message, a log line or a file, even when the server echoes it back."""

from __future__ import annotations

import logging

from conftest import out_dir_of, rows_of

KEY = "sk-test-Zq8vR2mN4xK7pL1wT9sB3dF6"


def _leaks(key: str, *texts: str) -> list[int]:
    return [i for i, t in enumerate(texts) if key in t]


def test_key_echoed_in_an_error_body_is_redacted_everywhere(server, make_pipeline, run_cli):
    texts = ["[[echokey]] a server that echoes credentials", "a plain row"]
    p = make_pipeline(rows_of(texts), teacher={"base_url": server.base_url, "max_retries": 0})
    proc = run_cli("run", str(p), "--max-failed-fraction", "0.5", OPENAI_API_KEY=KEY)  # the echo row fails
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = out_dir_of(p)
    annotations = (out / "annotations.jsonl").read_text(encoding="utf-8")
    assert "upstream rejected" in annotations and "***" in annotations  # the echo happened, and was redacted
    files = {f.name: f.read_bytes().decode("latin-1") for f in out.iterdir() if f.is_file()}
    assert {"annotations.jsonl", "run.json", "cache.sqlite"} <= set(files)
    assert _leaks(KEY, proc.stdout, proc.stderr) == []
    assert [name for name, data in files.items() if KEY in data] == []


def test_key_echoed_in_a_fatal_error_is_redacted(server, make_pipeline, run_cli):
    p = make_pipeline(
        rows_of(["[[echokey401]] refused, with the key in the message"]), teacher={"base_url": server.base_url}
    )
    proc = run_cli("run", str(p), OPENAI_API_KEY=KEY)
    err = proc.stdout + proc.stderr
    assert proc.returncode == 2, err
    assert "refused the request" in err and "***" in err and "Traceback" not in err
    assert KEY not in err
    for f in out_dir_of(p).iterdir():
        if f.is_file():
            assert KEY not in f.read_bytes().decode("latin-1"), f.name


def test_log_records_are_redacted(caplog):
    from annotator.redact import redact, register_secret

    secret = "sk-log-Yy7Tt5Rr3Ee1Ww9Qq"
    register_secret(secret)
    with caplog.at_level(logging.WARNING):
        logging.getLogger("annotator.test").warning("request failed: Bearer %s was refused", secret)
        logging.getLogger("somebody.else").error(f"echo: {secret}")
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text and caplog.text.count("***") == 2
    assert redact(f"x {secret} y") == "x *** y"
    register_secret("x")  # too short to be a secret: ordinary text is left alone
    assert redact("x marks the spot") == "x marks the spot"
