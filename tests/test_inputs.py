"""Input files: CSV, JSONL and Parquet stream through the same reader."""

import polars as pl
import pytest

from annotator.errors import InputDataError
from annotator.inputs import InputConfig, check_ids, count_rows, iter_rows

ROWS = {"doc_id": [1, 2, 3], "body": ["alpha", "beta, with comma", "gamma\nnewline"], "lang": ["en", "de", "fr"]}


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_formats(tmp_path, suffix):
    df = pl.DataFrame(ROWS)
    path = tmp_path / f"in.{suffix}"
    {"csv": df.write_csv, "jsonl": df.write_ndjson, "parquet": df.write_parquet}[suffix](path)
    cfg = InputConfig(path=path, id_column="doc_id", text_column="body")
    rows = list(iter_rows(cfg, batch_size=2))
    assert [r.id for r in rows] == ["1", "2", "3"]
    assert [r.text for r in rows] == ROWS["body"]
    assert [r.index for r in rows] == [0, 1, 2]
    assert rows[1].columns["lang"] == "de"
    assert count_rows(cfg) == 3
    assert check_ids(cfg) == 3


def test_limit_and_duplicates(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,text\na,1\nb,2\na,3\n", encoding="utf-8")
    cfg = InputConfig(path=path)
    with pytest.raises(InputDataError, match=r"duplicate id 'a' \(rows 1 and 3\)"):
        check_ids(cfg)
    assert [r.id for r in iter_rows(InputConfig(path=path, limit=2))] == ["a", "b"]


def test_unknown_extension(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(InputDataError, match="input.format"):
        count_rows(InputConfig(path=path))
