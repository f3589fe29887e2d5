"""Problems of the environment and of template code are one clear line, never a traceback (real CLI processes):
a damaged cache, a full disk, a read-only output location, output.dir pointing at a file, template runtime errors.
A template error that only some rows trigger fails those rows, not the run."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import out_dir_of, read_annotations, rows_of


def _clean_error(proc, *needles: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    flat = " ".join(out.split())  # rich wraps long lines
    for needle in needles:
        assert needle in flat, f"{needle!r} not in:\n{out}"
    return flat


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only; the test is skipped where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# -- the cache -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_cache_is_one_clear_line(damage, server, make_pipeline, run_cli):
    texts = [f"cache row {i} " + "padding " * 200 for i in range(80)]
    p = make_pipeline(rows_of(texts), server.base_url, task={"rationale": True})
    assert run_cli("run", str(p), "--quiet").returncode == 0
    cache = out_dir_of(p) / "cache.sqlite"
    data = cache.read_bytes()
    assert len(data) > 16 * 4096
    cache.write_bytes(b"\x00garbage" * 4096 if damage == "garbage" else data[: len(data) // 3])
    _clean_error(run_cli("run", str(p), "--quiet"), "cache.sqlite is damaged", "Delete it to start")
    cache.unlink()  # the advice works: the run starts from scratch
    assert run_cli("run", str(p), "--quiet").returncode == 0


# -- the output location -------------------------------------------------------------------------------------
def test_a_full_disk_is_one_clear_line_and_nothing_saved_is_lost(server, make_pipeline, run_cli, tmp_path):
    texts = [f"disk row {i} " + "lorem ipsum " * 60 for i in range(300)]
    with tmpfs(tmp_path / "small", "size=256k") as small:
        p = make_pipeline(rows_of(texts), server.base_url, task={"rationale": True}, output={"dir": str(small / "out")})
        flat = _clean_error(run_cli("run", str(p), "--quiet"), "no space left")
        assert "cache.sqlite" in flat or "annotations.jsonl" in flat
        assert "cannot commit" not in flat
        asked = set(server.stats()["ok_by_item"])
        assert asked, "the disk filled before any answer was saved: the test proves nothing"
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        server.reset()
        proc = run_cli("run", str(p), "--quiet")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        recs = read_annotations(small / "out")
        assert [r["text"] for r in recs] == texts and all(r["status"] == "ok" for r in recs)
        again = set(server.stats()["by_item"])
        # answers committed before the disk filled are not asked again (the last few in flight may be)
        assert len(asked - again) >= len(asked) - 16


def test_a_read_only_output_location_is_one_clear_line(server, make_pipeline, run_cli, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        p = make_pipeline(rows_of(["a", "b"]), server.base_url, output={"dir": str(ro / "out")})
        _clean_error(run_cli("run", str(p), "--quiet"), "cannot write", "Read-only file system", "output.dir")
    assert server.stats()["total"] == 0


@pytest.mark.parametrize("where", ["dir-is-a-file", "parent-is-a-file"])
def test_output_dir_pointing_at_a_file(where, server, make_pipeline, run_cli, tmp_path):
    (tmp_path / "taken").write_text("my notes")
    out = "taken" if where == "dir-is-a-file" else "taken/out"
    p = make_pipeline(rows_of(["a", "b"]), server.base_url, output={"dir": out})
    _clean_error(run_cli("run", str(p), "--quiet"), "is a file, not a directory")
    assert (tmp_path / "taken").read_text() == "my notes"
    assert server.stats()["total"] == 0


# -- template runtime errors ---------------------------------------------------------------------------------
TEMPLATE_ERRORS = {
    "huge-range": ("{{ range(10**6) | length }} Text: {{ text }}", "range too big"),
    "include": ("{% include 'other.jinja' %} Text: {{ text }}", "no loader"),
    "bad-format": ("{{ '%d' | format(text) }} Text: {{ text }}", "TypeError"),
    "division": ("{{ 1 // 0 }} Text: {{ text }}", "ZeroDivisionError"),
}


@pytest.mark.parametrize("case", list(TEMPLATE_ERRORS))
def test_template_runtime_errors_are_one_clear_line(case, server, make_pipeline, run_cli, tmp_path):
    source, needle = TEMPLATE_ERRORS[case]
    (tmp_path / "prompt.jinja").write_text(source + "\n\nAnswer with JSON only: {}", encoding="utf-8")
    p = make_pipeline(rows_of(["a", "b"]), server.base_url, prompt={"template": "prompt.jinja"})
    flat = _clean_error(run_cli("run", str(p), "--quiet"), "prompt.jinja")
    assert needle.lower() in flat.lower(), flat
    assert server.stats()["total"] == 0


def test_a_template_runtime_error_of_one_row_fails_that_row(server, make_pipeline, run_cli, tmp_path):
    tpl = "{% if row.n %}{{ range(row.n) | length }}{% endif %} Text: {{ text }}\n\nAnswer with JSON only: {}"
    (tmp_path / "prompt.jinja").write_text(tpl, encoding="utf-8")
    rows = [
        {"id": "a", "text": "first", "n": 3},
        {"id": "b", "text": "second", "n": 10**7},
        {"id": "c", "text": "third", "n": 5},
    ]
    p = make_pipeline(
        rows, server.base_url, prompt={"template": "prompt.jinja"}, validation={"max_failed_fraction": 0.5}
    )
    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    recs = {r["id"]: r for r in read_annotations(out_dir_of(p))}
    assert recs["a"]["status"] == recs["c"]["status"] == "ok"
    assert recs["b"]["status"] == "failed" and "prompt could not be rendered" in recs["b"]["error"]
    assert "range too big" in recs["b"]["error"].lower()


def test_a_template_reaching_python_internals_is_blocked_by_the_sandbox_in_one_line() -> None:
    """The sandbox's SecurityError (unsafe attribute, or a mutating call in the immutable sandbox) has its message."""
    from annotator.errors import TemplateError
    from annotator.templates import PromptTemplate

    for source, attribute in (("{{ text.__class__.__mro__ }}", "__class__"), ("{{ labels.append('x') }}", "append")):
        with pytest.raises(TemplateError) as exc:
            PromptTemplate(source, "evil.jinja").render({"text": "x", "labels": []})
        message = str(exc.value)
        assert message.startswith("template evil.jinja: blocked by the sandbox:") and attribute in message
        assert "\n" not in message
