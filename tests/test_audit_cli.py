"""`annotator audit` end to end on small fixtures (in-process through the real CLI entry point)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_audit_inputs import write_run  # tests/ is on sys.path (pytest rootdir-relative import)

from annotator.cli import main
from annotator.errors import InputDataError

LABELS = ["politics", "economy", "sport", "health"]


def make_data(
    tmp_path: Path,
    n: int = 40,
    teacher_acc: float = 0.9,
    ambiguous: str | None = "economy",
    confidence: bool = True,
    seed: int = 0,
) -> tuple[Path, Path]:
    """3 annotators in long format; humans split on `ambiguous` items; a teacher run directory."""
    rng = np.random.default_rng(seed)
    truth = [LABELS[i % 4] for i in range(n)]
    lines = ["item_id,annotator,label"]
    for i, t in enumerate(truth):
        for a in ("ann_a", "ann_b", "ann_c"):
            if a == "ann_c" and i % 13 == 5:
                continue  # a missing rating
            lab = t
            if t == ambiguous and rng.random() < 0.5:
                lab = "politics"
            elif rng.random() < 0.05:
                lab = LABELS[rng.integers(4)]
            lines.append(f"n{i:03d},{a},{lab}")
    humans = tmp_path / "humans.csv"
    humans.write_text("\n".join(lines) + "\n")
    labels: dict[str, str | None] = {}
    for i, t in enumerate(truth):
        labels[f"n{i:03d}"] = t if rng.random() < teacher_acc else LABELS[rng.integers(4)]
    labels["n999"] = None  # a failed teacher row without human labels
    run = write_run(tmp_path / "run", labels, confidence=0.8 if confidence else None, label_set=LABELS)
    return humans, run


def audit_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["audit", *args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else int(code)), out, err


def audit_args(humans: Path, teacher: Path, out: Path, *extra: str, bootstrap: int = 0) -> list[str]:
    """The usual audit arguments: the human and teacher files, ``--out``, ``--bootstrap`` (0: no intervals) and no
    plots, then ``extra``."""
    return [
        "--humans",
        str(humans),
        "--teacher",
        str(teacher),
        "--out",
        str(out),
        "--bootstrap",
        str(bootstrap),
        "--no-plots",
        *extra,
    ]


def strict_json(path: Path) -> dict:
    def no_nan(x: str) -> None:
        raise AssertionError(f"non-standard JSON constant {x}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def test_audit_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    humans, run = make_data(tmp_path)
    out = tmp_path / "audit"
    code, stdout, _ = audit_cli(
        ["--humans", str(humans), "--teacher", str(run), "--out", str(out), "--bootstrap", "50", "--seed", "1"], capsys
    )
    assert code == 0
    for name in ("report.json", "report.md", "confusion_matrix.png", "per_class_agreement.png", "calibration.png"):
        assert (out / name).stat().st_size > 0, name
    rep = strict_json(out / "report.json")
    assert rep["inputs"]["labels"] == LABELS and rep["inputs"]["label_source"] == "run.json"
    assert rep["coverage"]["evaluated_items"] == 40 and rep["coverage"]["teacher_failed"] == 1
    assert rep["coverage"]["annotators"] == ["ann_a", "ann_b", "ann_c"]
    acc = rep["classification"]["accuracy"]
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert rep["alt_test"]["ran"] and rep["alt_test"]["passed"] in (True, False)
    assert rep["calibration"]["available"]
    assert "economy" in rep["low_agreement_categories"]
    md = (out / "report.md").read_text()
    assert "Alt-test PASSED" in md or "Alt-test FAILED" in md
    assert "**LOW**" in md and "Categories where the humans themselves disagree" in md
    assert "Alt-test" in stdout and "report.md" in stdout
    # the same seed gives the same numbers
    code, _, _ = audit_cli(
        [
            "--humans",
            str(humans),
            "--teacher",
            str(run),
            "--out",
            str(tmp_path / "again"),
            "--bootstrap",
            "50",
            "--seed",
            "1",
            "--no-plots",
        ],
        capsys,
    )
    again = strict_json(tmp_path / "again" / "report.json")
    assert again["agreement"] == rep["agreement"]
    assert not (tmp_path / "again" / "confusion_matrix.png").exists()


def test_min_agreement_gate_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    humans, run = make_data(tmp_path, teacher_acc=0.5)
    out = tmp_path / "audit"
    code, _, err = audit_cli(
        audit_args(humans, run, out, "--min-agreement", "0.95"),
        capsys,
    )
    assert code == 3
    assert "audit gate failed: krippendorff_alpha" in " ".join(err.split()) and "Traceback" not in err
    assert (out / "report.json").exists()
    rep = strict_json(out / "report.json")
    assert rep["gate"]["passed"] is False and rep["gate"]["min_agreement"] == 0.95
    code, _, _ = audit_cli(
        audit_args(humans, run, out, "--min-agreement", "0.1", "--gate-metric", "accuracy"),
        capsys,
    )
    assert code == 0


def test_teacher_table_two_annotators_without_confidence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "h.csv").write_text(
        "id,text,x,y\n" + "".join(f"i{i},t,{'ab'[i % 2]},{'ab'[(i // 3) % 2]}\n" for i in range(30))
    )
    (tmp_path / "t.csv").write_text("id,label\n" + "".join(f"i{i},{'ab'[i % 2]}\n" for i in range(30)))
    out = tmp_path / "o"
    code, stdout, _ = audit_cli(
        [
            "--humans",
            str(tmp_path / "h.csv"),
            "--teacher",
            str(tmp_path / "t.csv"),
            "--out",
            str(out),
            "--bootstrap",
            "20",
        ],
        capsys,
    )
    assert code == 0
    rep = strict_json(out / "report.json")
    # two annotators with 30 items each: the reference runs the alt-test; the report says it is weak
    assert rep["alt_test"]["ran"] is True and rep["alt_test"]["weak"] is True
    assert any("weak test: only 2 annotator(s)" in w for w in rep["alt_test"]["warnings"])
    assert rep["calibration"]["available"] is False
    assert not (out / "calibration.png").exists()
    md = (out / "report.md").read_text()
    assert "weak: only 2 annotator(s) tested" in md and "no confidence" in md
    assert "weak" in " ".join(stdout.split())
    # with 25 items each both annotators are excluded (reference default); the option keeps them
    (tmp_path / "h.csv").write_text(
        "id,x,y\n" + "".join(f"i{i},{'ab'[i % 2]},{'ab'[(i // 3) % 2]}\n" for i in range(25))
    )
    code, stdout, _ = audit_cli(
        audit_args(tmp_path / "h.csv", tmp_path / "t.csv", out),
        capsys,
    )
    rep = strict_json(out / "report.json")
    assert (
        code == 0
        and rep["alt_test"]["ran"] is False
        and rep["alt_test"]["excluded"] == ["x (25 items)", "y (25 items)"]
    )
    assert "excluded: x (25 items), y (25 items)" in (out / "report.md").read_text()
    code, _, _ = audit_cli(
        audit_args(tmp_path / "h.csv", tmp_path / "t.csv", out, "--alt-test-min-items", "20"),
        capsys,
    )
    rep = strict_json(out / "report.json")
    assert (
        rep["alt_test"]["ran"] is True
        and rep["alt_test"]["excluded"] == []
        and rep["inputs"]["alt_test_min_items"] == 20
    )


def test_interval_ratings_use_neg_rmse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(1, 6, 45)
    rows = ["item_id,annotator,label"]
    for i, t in enumerate(truth):
        for a in "pqr":
            rows.append(f"s{i},{a},{int(np.clip(t + rng.integers(-1, 2), 1, 5))}")
    (tmp_path / "h.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "t.jsonl").write_text(
        "".join(
            json.dumps({"item_id": f"s{i}", "label": int(t), "confidence": 0.7}) + "\n" for i, t in enumerate(truth)
        )
    )
    out = tmp_path / "o"
    code, _, _ = audit_cli(
        [
            "--humans",
            str(tmp_path / "h.csv"),
            "--teacher",
            str(tmp_path / "t.jsonl"),
            "--out",
            str(out),
            "--level",
            "interval",
            "--bootstrap",
            "20",
            "--labels",
            "1,2,3,4,5",
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0
    rep = strict_json(out / "report.json")
    assert rep["alt_test"]["scoring"] == "neg_rmse"
    assert rep["numeric"]["teacher_mae"] is not None
    assert rep["agreement"]["kappa_weights"] == "quadratic"


@pytest.mark.parametrize(
    "case,expected",
    [
        ("empty", "human annotations file is empty"),
        ("unknown_ids", "not in the teacher's output"),
        ("bad_label", "human labels outside the label set"),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, expected: str
) -> None:
    humans, run = make_data(tmp_path, n=12)
    extra: list[str] = []
    if case == "empty":
        humans.write_text("")
    elif case == "unknown_ids":
        humans.write_text(humans.read_text() + "zz1,ann_a,sport\nzz1,ann_b,sport\n")
    elif case == "bad_label":
        humans.write_text(humans.read_text() + "n001,ann_d,Sports\n")
    code, _, err = audit_cli(
        audit_args(humans, run, tmp_path / "o", *extra),
        capsys,
    )
    assert code == 2
    assert expected in " ".join(err.split()), err  # rich wraps the line at the terminal width
    assert "Traceback" not in err
    assert err.strip().startswith("error:")


def test_single_annotator_gold_reports_teacher_vs_gold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gold file with one annotator (or item_id,label) audits: accuracy, F1, kappa, calibration; no agreement."""
    humans, run = make_data(tmp_path, n=40)
    rows = [line.split(",") for line in humans.read_text().splitlines()[1:]]
    for name, text in (
        (
            "gold_long.csv",
            "item_id,annotator,label\n" + "".join(f"{i},ann_a,{lab}\n" for i, a, lab in rows if a == "ann_a"),
        ),
        ("gold_simple.csv", "item_id,label\n" + "".join(f"{i},{lab}\n" for i, a, lab in rows if a == "ann_a")),
    ):
        (tmp_path / name).write_text(text)
        out = tmp_path / f"out_{name}"
        code, printed, err = audit_cli(
            audit_args(tmp_path / name, run, out, bootstrap=50),
            capsys,
        )
        assert code == 0, err
        rep = strict_json(out / "report.json")
        gold = {i: lab for i, a, lab in rows if a == "ann_a"}
        teacher = {
            json.loads(line)["id"]: json.loads(line)["label"]
            for line in (run / "annotations.jsonl").read_text().splitlines()
        }
        acc = np.mean([teacher[i] == g for i, g in gold.items()])
        assert rep["classification"]["accuracy"]["value"] == pytest.approx(acc)
        assert rep["classification"]["macro_f1"]["value"] is not None
        assert rep["agreement"]["teacher_vs_majority"]["cohen_kappa"]["value"] is not None
        assert rep["calibration"]["available"] and rep["calibration"]["ece"] is not None
        assert rep["agreement"]["human_human"]["krippendorff_alpha"]["value"] is None
        assert rep["coverage"]["annotators"] == [("ann_a" if name == "gold_long.csv" else "label")]
        assert any("need two or more" in w for w in rep["warnings"])
        assert "two or more" in " ".join(printed.split()) + " ".join(err.split())


CHOICES = [
    ("audit", "--level", "<nominal|ordinal|interval>"),
    ("audit", "--gate-metric", "<krippendorff_alpha|cohen_kappa|gwet_ac1|accuracy|macro_f1|"),
    ("sample", "--strategy", "<random|stratified|uncertain|confidence>"),
    ("export", "--format", "<auto|classification|chat|instruction>"),
    ("predict", "--format", "<auto|csv|jsonl|parquet>"),
]


@pytest.mark.parametrize("command,option,shown", CHOICES)
def test_fixed_choices_are_listed_in_help_and_checked_by_typer(
    command: str, option: str, shown: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Options with a fixed set of values are enums: --help shows the set, any other value is a usage error (2)."""
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code in (0, None)
    assert shown in capsys.readouterr().out
    positional = {
        "audit": ["--humans", "h.csv", "--teacher", "t.csv"],
        "sample": ["run"],
        "export": ["run"],
        "predict": ["student", "in.csv", "--out", "p.jsonl"],
    }[command]
    with pytest.raises(SystemExit) as exc:
        main([command, *positional, option, "vibes"])
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2
    assert f"Invalid value for '{option}'" in err and "'vibes' is not one of" in err and "Traceback" not in err


def test_choices_are_one_list_each() -> None:
    """The CLI enums are the lists the implementations check (LEVELS and STRATEGIES are derived from them)."""
    from annotator.audit.compute import GATE_METRICS
    from annotator.choices import ExportFormat, GateMetric
    from annotator.export.summary import FORMATS

    assert [m.value for m in GateMetric] == list(GATE_METRICS)  # every metric described, none extra
    assert tuple(x.value for x in ExportFormat) == FORMATS


def test_level_is_case_insensitive_and_the_api_still_checks_its_strings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    humans, run = make_data(tmp_path, n=12)
    code, _, err = audit_cli(
        audit_args(humans, run, tmp_path / "o", "--level", "Nominal"),
        capsys,
    )
    assert code == 0, err
    from annotator.audit.compute import AuditOptions
    from annotator.audit.run_audit import run_audit

    for bad, expected in (
        ({"gate_metric": "vibes"}, "--gate-metric must be one of"),
        ({"level": "ratio"}, "--level must be one of"),
    ):
        with pytest.raises(InputDataError, match=expected):
            run_audit(AuditOptions(humans=humans, teacher=run, bootstrap=0, plots=False, **bad))  # type: ignore[arg-type]
