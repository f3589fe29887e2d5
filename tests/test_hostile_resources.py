"""Rule 8 (docs/safety.md): resources are bounded, and a full disk is one line that leaves nothing half-written.

A YAML alias bomb is refused before anything walks it (it took over 60 s and 1 GB in ``validate`` before); ``--ray``
at an open port that is not Ray fails within seconds (it waited for minutes); a full disk during sample, export,
audit or predict is one line (OSError tracebacks before, and sample left ``*.tmp`` files and a mix of old and new
sheets), and the rerun after freeing space succeeds."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from hostile import cli, fake_student, one_line_error
from test_export import make_label_run

from conftest import rows_of, write_rows

BOMB = "name: bomb\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n" for i in range(7)
)


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)  # 9**7 = 4.8 million strings once expanded
    started = time.monotonic()
    err = one_line_error(cli(capsys, "validate", path))
    assert "YAML aliases" in err and time.monotonic() - started < 10
    path.write_text("name: deep\nx: " + "[" * 5000 + "]" * 5000 + "\n")  # a RecursionError traceback before
    assert "nested too deeply" in one_line_error(cli(capsys, "validate", path))
    path.write_text("name: loop\nx: &x [1, *x]\n")
    assert "refers to itself" in one_line_error(cli(capsys, "validate", path))
    path.write_text("name: big\ndescription: " + "x" * 10_000_001 + "\n")
    assert "a pipeline file is at most" in one_line_error(cli(capsys, "validate", path))
    if Path("/dev/zero").exists():  # read whole before: every byte of memory
        assert "a pipeline file is at most" in one_line_error(cli(capsys, "validate", "/dev/zero"))


def test_a_template_that_never_ends_is_refused(tmp_path, make_pipeline, capsys):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    pipe = make_pipeline(rows_of(["one"]), prompt={"template": "/dev/zero"})
    assert "not a template" in one_line_error(cli(capsys, "validate", pipe))


def _silent_port() -> tuple[socket.socket, int]:
    """A port that accepts connections and never says a word (what `--ray` at the wrong service looks like)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(srv.accept()[0]) for _ in range(8)], daemon=True).start()
    return srv, srv.getsockname()[1]


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_ray_at_a_port_that_is_not_ray_fails_within_seconds(make_pipeline, server, run_cli):
    srv, port = _silent_port()
    pipe = make_pipeline(rows_of(["a text"]), server.base_url)
    try:
        for address, why in ((f"127.0.0.1:{port}", "no answer"), (f"127.0.0.1:{server.port}", "not as a Ray cluster")):
            started = time.monotonic()
            res = run_cli("run", str(pipe), "--quiet", "--ray", address, timeout=90)  # minutes before
            assert res.returncode == 2 and why in res.stderr and "Traceback" not in res.stderr, res.stderr
            assert time.monotonic() - started < 60
    finally:
        srv.close()


def _fail_fsync_after(monkeypatch, n: int) -> None:
    """``os.fsync`` succeeds ``n`` times, then the disk is full."""
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_during_sample_leaves_the_old_sheets_whole(tmp_path, capsys, monkeypatch):
    run = make_label_run(tmp_path / "run", n=60)
    out = tmp_path / "sheets"
    assert cli(capsys, "sample", run, "--n", "9", "--out", out, "--seed", "1").code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as mp:
        _fail_fsync_after(mp, 2)  # two of the five new files written, then the disk is full
        err = one_line_error(cli(capsys, "sample", run, "--n", "12", "--out", out, "--seed", "2"))
    assert "no space left writing" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no *.tmp, no mix of two draws
    assert cli(capsys, "sample", run, "--n", "12", "--out", out, "--seed", "2").code == 0  # space freed: it works
    assert json.loads((out / "sample.json").read_text())["n"] == 12


def test_a_full_disk_during_export_and_audit_is_one_line_and_the_rerun_works(tmp_path, capsys, monkeypatch):
    import datasets

    run = make_label_run(tmp_path / "run", n=60)
    real_save = datasets.DatasetDict.save_to_disk

    def full(self, path, *args, **kwargs):
        Path(path, "half-written.arrow").write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as mp:
        mp.setattr(datasets.DatasetDict, "save_to_disk", full)
        err = one_line_error(cli(capsys, "export", run, "--out", tmp_path / "ds"))
    assert "no space left writing" in err and str(tmp_path / "ds") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder, no dataset
    assert datasets.DatasetDict.save_to_disk is real_save
    assert cli(capsys, "export", run, "--out", tmp_path / "ds").code == 0

    humans = tmp_path / "humans.csv"
    humans.write_text(
        "item_id,annotator,label\n" + "".join(f"n{i:03d},{a},politics\n" for i in range(30) for a in ("a1", "a2", "a3"))
    )
    with monkeypatch.context() as mp:
        _fail_fsync_after(mp, 0)
        err = one_line_error(
            cli(capsys, "audit", "--humans", humans, "--teacher", run, "--out", tmp_path / "au", "--bootstrap", "0")
        )
    assert "no space left writing" in err and not (tmp_path / "au" / "report.json").exists()
    assert (
        cli(capsys, "audit", "--humans", humans, "--teacher", run, "--out", tmp_path / "au", "--bootstrap", "0").code
        == 0
    )  # the plots it left are its own: the rerun replaces them


def test_a_full_disk_during_predict_is_one_line_and_the_rerun_finishes(tmp_path, monkeypatch):
    from annotator.errors import AnnotatorError
    from annotator.inputs import InputConfig
    from annotator.student.predict import PredictOptions, load_student_info, predict_file

    info = load_student_info(fake_student(tmp_path / "student"))
    inp = write_rows(tmp_path / "corpus.jsonl", [{"id": f"d{i}", "text": f"text {i}"} for i in range(20)])

    def labeler(batches):  # the student's answers, without a model: this test is about the writes
        for batch in batches:
            yield [{"label": "sport", "confidence": 0.9, "probs": {"sport": 0.9}} for _ in batch]

    opts = PredictOptions(out=tmp_path / "p.jsonl", batch_size=4)
    cfg = InputConfig(path=inp)
    with monkeypatch.context() as mp:
        _fail_fsync_after(mp, 3)
        with pytest.raises(AnnotatorError, match="no space left writing"):  # an OSError traceback before
            predict_file(info, cfg, opts, labeler)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) >= 12
    summary = predict_file(info, cfg, opts, labeler)
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [f"d{i}" for i in range(20)] and summary.resumed_after >= 12


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "RUN", "--n", "5", "--plan", "--annotators", "1000000000"],
        ["export", "RUN", "--route-below", "0.9", "--route-annotators", "1000000000"],
    ],
)
def test_a_billion_annotators_is_refused_not_allocated(tmp_path, capsys, args):
    run = make_label_run(tmp_path / "run", n=30)
    started = time.monotonic()
    err = one_line_error(cli(capsys, *[str(run) if a == "RUN" else a for a in args]))
    assert "annotators must be between 1 and 1000" in err and time.monotonic() - started < 10
