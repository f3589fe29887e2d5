"""`annotator audit --by COLUMN`: per-slice audits on data with hand-computed answers."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from test_audit_cli import audit_cli, strict_json  # tests/ is on sys.path (pytest rootdir-relative import)
from test_audit_inputs import write_run

from annotator.audit.compute import AuditOptions
from annotator.audit.run_audit import run_audit

# Slice "en": humans agree; majority pos,pos,neg,neg; teacher pos,neg,neg,neg.
#   accuracy 3/4; F1(pos) = 2/3 (P 1, R 1/2), F1(neg) = 0.8 (P 2/3, R 1) -> macro 0.7333
#   human-human kappa 1; teacher-human kappa: po 3/4, pe (1*2 + 3*2)/16 = 1/2 -> 0.5
# Slice "sl" (one class): majority pos x3; teacher pos,pos,neg.
#   accuracy 2/3; F1(pos) = 0.8, F1(neg) = 0 (predicted once, never gold) -> macro 0.4; kappa undefined
# Slice "de": one item (too small at --min-slice-items 3). Slice "el": only an item the teacher failed on (empty).
ITEMS = {  # id: (lang, human label, teacher label)
    "e1": ("en", "pos", "pos"),
    "e2": ("en", "pos", "neg"),
    "e3": ("en", "neg", "neg"),
    "e4": ("en", "neg", "neg"),
    "s1": ("sl", "pos", "pos"),
    "s2": ("sl", "pos", "pos"),
    "s3": ("sl", "pos", "neg"),
    "d1": ("de", "neg", "neg"),
    "g1": ("el", "pos", None),
}


def write_data(tmp_path: Path, lang_in_humans: bool) -> tuple[Path, Path]:
    rows = [
        {"item_id": i, **({"lang": lang} if lang_in_humans else {}), "h1": h, "h2": h, "h3": h}
        for i, (lang, h, _) in ITEMS.items()
    ]
    humans = tmp_path / "humans.csv"
    pl.DataFrame(rows).write_csv(humans)
    run = write_run(tmp_path / "run", {i: t for i, (_, _, t) in ITEMS.items()}, label_set=["neg", "pos"])
    inp = tmp_path / "input.csv"
    pl.DataFrame(
        [{"id": i, "text": f"text {i}", "lang": lang} for i, (lang, _, _) in ITEMS.items()]
        + [{"id": "x9", "text": "never labelled by humans", "lang": "fr"}]
    ).write_csv(inp)
    manifest = json.loads((run / "run.json").read_text())
    manifest["config"] = {"input": {"path": str(inp), "id_column": "id"}}
    (run / "run.json").write_text(json.dumps(manifest))
    return humans, run


def by_value(report_slices: list) -> dict:
    return {s.value: s for s in report_slices}


@pytest.mark.parametrize("lang_in_humans", [True, False])
def test_per_slice_metrics_match_hand_computation(tmp_path: Path, lang_in_humans: bool) -> None:
    humans, run = write_data(tmp_path, lang_in_humans)
    opts = AuditOptions(humans=humans, teacher=run, out=None, bootstrap=0, by="lang", min_slice_items=3)
    report = run_audit(opts)
    assert report.slices is not None
    assert report.slices.source == str(humans if lang_in_humans else tmp_path / "input.csv")
    s = by_value(report.slices.slices)
    expected = {"de", "el", "en", "sl"} | (set() if lang_in_humans else {"fr"})
    assert set(s) == expected
    en, sl = s["en"], s["sl"]
    assert (en.n_items, en.too_small, en.n_annotators) == (4, False, 3)
    assert en.accuracy.value == pytest.approx(0.75)
    assert en.macro_f1.value == pytest.approx((2 / 3 + 0.8) / 2)
    assert en.human_human_kappa.value == pytest.approx(1.0)
    assert en.teacher_human_kappa.value == pytest.approx(0.5)
    assert sl.accuracy.value == pytest.approx(2 / 3)
    assert sl.macro_f1.value == pytest.approx(0.4)
    assert sl.human_human_kappa.value is None  # one class: chance agreement is 1, kappa undefined
    assert sl.alt_test_passed is None and "not run" in sl.alt_test_verdict.lower()
    assert (s["de"].n_items, s["de"].too_small, s["de"].accuracy) == (1, True, None)
    assert (s["el"].n_items, s["el"].too_small) == (0, True)  # the teacher failed on its only item
    # the pooled numbers are the same audit on all 8 evaluated items: 6 of 8 right
    assert report.classification.accuracy.value == pytest.approx(6 / 8)


def test_cli_writes_slice_table_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    humans, run = write_data(tmp_path, lang_in_humans=True)
    out = tmp_path / "audit"
    code, _, err = audit_cli(
        [
            "--humans",
            str(humans),
            "--teacher",
            str(run),
            "--out",
            str(out),
            "--bootstrap",
            "50",
            "--by",
            "lang",
            "--min-slice-items",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    data = strict_json(out / "report.json")
    en = next(s for s in data["slices"]["slices"] if s["value"] == "en")
    assert en["accuracy"]["value"] == pytest.approx(0.75)
    assert en["accuracy"]["ci_low"] <= 0.75 <= en["accuracy"]["ci_high"]
    md = (out / "report.md").read_text()
    assert "## Results by slice: `lang`" in md
    assert "| de | 1 | 3 |" in md and "too small" in md
    assert "| en | 4 | 3 | 0.750 [" in md
    assert (out / "agreement_by_slice.png").stat().st_size > 1000
    assert data["files"]["agreement_by_slice"].endswith("agreement_by_slice.png")


def test_without_by_there_is_no_slice_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    humans, run = write_data(tmp_path, lang_in_humans=True)
    out = tmp_path / "audit"
    code, _, err = audit_cli(
        ["--humans", str(humans), "--teacher", str(run), "--out", str(out), "--bootstrap", "0"], capsys
    )
    assert code == 0, err
    assert strict_json(out / "report.json")["slices"] is None
    assert "Results by slice" not in (out / "report.md").read_text()
    assert not (out / "agreement_by_slice.png").exists()


def test_unknown_column_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    humans, run = write_data(tmp_path, lang_in_humans=True)
    code, _, err = audit_cli(
        ["--humans", str(humans), "--teacher", str(run), "--out", str(tmp_path / "a"), "--by", "source"], capsys
    )
    assert code == 2
    assert "no column 'source' in" in err and str(humans) in err and "Traceback" not in err


def test_conflicting_values_for_one_item_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, run = write_data(tmp_path, lang_in_humans=True)
    long = tmp_path / "long.csv"
    pl.DataFrame(
        [
            {"item_id": "e1", "annotator": "h1", "label": "pos", "lang": "en"},
            {"item_id": "e1", "annotator": "h2", "label": "pos", "lang": "de"},
        ]
    ).write_csv(long)
    code, _, err = audit_cli(
        ["--humans", str(long), "--teacher", str(run), "--out", str(tmp_path / "a"), "--by", "lang"], capsys
    )
    assert code == 2
    assert "item 'e1' has two values of column 'lang'" in err


def test_any_column_of_a_wide_humans_file_can_slice(tmp_path: Path) -> None:
    """A --by column not known as metadata (here 'region') is not taken for an annotator."""
    humans, run = write_data(tmp_path, lang_in_humans=True)
    pl.read_csv(humans).rename({"lang": "region"}).write_csv(humans)
    report = run_audit(AuditOptions(humans=humans, teacher=run, out=None, bootstrap=0, by="region", min_slice_items=3))
    assert report.coverage.annotators == ["h1", "h2", "h3"]
    assert by_value(report.slices.slices)["en"].accuracy.value == pytest.approx(0.75)
