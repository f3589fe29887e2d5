"""Output a person can read at 80 columns: a table wider than the terminal is printed as one block per row, so no
name or number is cut to "teache..."."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from annotator.commands.output import fitted_table

COLUMNS = ["teacher", "items", "accuracy", "alpha vs majority", "winning rate", "advantage prob.", "alt-test"]
ROWS = [
    ["teacher-big-model-v2", "150", "0.837 [0.772, 0.898]", "0.785 [0.701, 0.860]", "1.00", "0.873", "PASSED"],
    ["teacher-small-model", "150", "0.551 [0.466, 0.627]", "0.423 [0.320, 0.518]", "0.00", "0.636", "FAILED"],
]


def _render(width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(fitted_table(console, "Teachers", COLUMNS, ROWS, left=("teacher",)))
    return console.export_text()


def test_a_wide_table_is_one_block_per_row_at_80_columns():
    text = _render(80)
    assert "…" not in text and "..." not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    for row in ROWS:
        assert f"teacher {row[0]}" in text
        for col, cell in zip(COLUMNS[1:], row[1:]):
            assert any(line.split() == [*col.split(), *cell.split()] for line in text.splitlines()), (col, cell)


def test_a_table_that_fits_stays_a_table():
    text = _render(200)
    assert "┃ teacher" in text and text.count("teacher-big-model-v2") == 1 and "alt-test" in text


def test_the_teacher_comparison_keeps_every_name_at_80_columns(tmp_path, monkeypatch, capsys):
    from annotator.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    humans = tmp_path / "humans.csv"
    humans.write_text(
        "item_id,annotator,label\n"
        + "".join(f"i{k},{a},{'pos' if k % 2 else 'neg'}\n" for k in range(12) for a in ("a", "b", "c"))
    )
    teachers = []
    for name, flip in (("teacher-with-a-long-name", 0), ("another-long-teacher-name", 3)):
        path = tmp_path / f"{name}.csv"
        path.write_text(
            "item_id,label\n" + "".join(f"i{k},{'pos' if (k % 2) != (k < flip) else 'neg'}\n" for k in range(12))
        )
        teachers += ["--teacher", str(path)]
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "audit",
                "--humans",
                str(humans),
                *teachers,
                "--out",
                str(tmp_path / "cmp"),
                "--bootstrap",
                "0",
                "--no-plots",
            ]
        )
    out = capsys.readouterr().out
    assert (exc.value.code or 0) == 0
    assert "teacher teacher-with-a-long-name" in out and "teacher another-long-teacher-name" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["teachers"][0]["name"] == (
        "teacher-with-a-long-name"
    )
