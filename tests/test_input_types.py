"""The text column must hold text: a Parquet column of another type is refused with one clear line naming the
file and the column, by `validate` and by `run` (before any teacher call), never sent as a Python repr."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conftest import out_dir_of, read_annotations

IDS = ["a1", "a2"]
NON_TEXT = {
    "binary": pl.Series("text", [b"bytes one", b"bytes two"], dtype=pl.Binary),
    "list": pl.Series("text", [["x", "y"], ["z"]]),
    "struct": pl.Series("text", [{"title": "x", "body": "y"}, {"title": "z", "body": "w"}]),
    "bool": pl.Series("text", [True, False]),
    "int": pl.Series("text", [7, 8]),
}


def _parquet(tmp_path: Path, text: pl.Series) -> str:
    path = tmp_path / "data" / "input.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"id": IDS}).with_columns(text).write_parquet(path)
    return "data/input.parquet"


@pytest.mark.parametrize("kind", list(NON_TEXT))
def test_non_text_column_is_refused_by_validate_and_run(kind, tmp_path, server, make_pipeline, run_cli):
    p = make_pipeline(None, base_url=server.base_url, input_file=_parquet(tmp_path, NON_TEXT[kind]))
    for command in ("validate", "run"):
        proc = run_cli(command, str(p))
        out = proc.stdout + proc.stderr
        flat = " ".join(out.split())  # rich wraps long lines
        assert proc.returncode == 2, out
        assert "Traceback" not in out, out
        assert "input.parquet" in flat and "text column 'text'" in flat and "not text" in flat, out
    assert server.stats()["total"] == 0
    assert not (out_dir_of(p) / "annotations.jsonl").exists()


@pytest.mark.parametrize("dtype", [pl.String, pl.Categorical])
def test_text_columns_are_accepted(dtype, tmp_path, server, make_pipeline, run_cli):
    text = pl.Series("text", ["the budget vote passed", "the striker scored"]).cast(dtype)
    p = make_pipeline(None, base_url=server.base_url, input_file=_parquet(tmp_path, text))
    proc = run_cli("run", str(p), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = read_annotations(out_dir_of(p))
    assert [r["text"] for r in records] == ["the budget vote passed", "the striker scored"]
    assert all(r["status"] == "ok" for r in records)
