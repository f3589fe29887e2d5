"""`annotator estimate` end to end (in-process through the real CLI entry point) on a real pipeline run against the
fault server, several teachers, ties, `sample --strategy confidence`, and bad input (one line, exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from test_audit_cli import strict_json  # tests/ is on sys.path
from test_audit_inputs import write_run
from test_human_loop import make_run

from annotator.audit import sampling as sp
from annotator.cli import main
from annotator.errors import InputDataError

from conftest import LABELS, ServerHandle, pipeline_config, read_annotations, run_pipeline, write_rows

N_ITEMS, N_FAILED, N_HUMANS = 300, 4, 120


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return (0 if exc.value.code is None else int(exc.value.code)), out, err


def human_rule(item: str, teacher: str) -> str:
    """The humans agree with the teacher, except on half its 'politics' items, which they call 'economy'."""
    return "economy" if teacher == "politics" and int(item[1:]) % 2 == 0 else teacher


@pytest.fixture(scope="module")
def real_run(fault_server: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A label pipeline run against the fault server: 300 items in 3 languages (fr: 5%), 4 of them failing."""
    fault_server.reset()
    root = tmp_path_factory.mktemp("estimate_run")
    rows = [
        {
            "id": f"r{i:05d}",
            "text": f"{'[[schema]] ' if i < N_FAILED else ''}article {i} about the week",
            "lang": "fr" if i % 20 == 0 else "de" if i % 3 == 0 else "en",
        }
        for i in range(N_ITEMS)
    ]
    write_rows(root / "data/input.csv", rows)
    cfg = pipeline_config(fault_server.base_url, validation={"max_attempts": 1})
    cfg["input"]["path"] = "data/input.csv"
    (root / "p.yaml").write_text(yaml.safe_dump(cfg))
    run_pipeline(root / "p.yaml")
    run = root / "out"
    return run, {r["id"]: r for r in read_annotations(run)}


@pytest.fixture(scope="module")
def filled_sheet(real_run: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`annotator sample --strategy confidence`, the sheet filled in by the human rule."""
    run, records = real_run
    root = tmp_path_factory.mktemp("estimate_sheet")
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "sample",
                str(run),
                "--strategy",
                "confidence",
                "--n",
                str(N_HUMANS),
                "--per-item",
                "1",
                "--annotators",
                "2",
                "--out",
                str(root / "sheets"),
            ]
        )
    assert exc.value.code in (0, None)
    sheet = pl.read_csv(root / "sheets/sheet_long.csv", infer_schema=False)
    labels = [human_rule(i, records[i]["label"]) for i in sheet["item_id"]]
    humans = root / "humans.csv"
    sheet.with_columns(pl.Series("label", labels)).write_csv(humans)
    return humans


def test_end_to_end_on_a_real_run(
    real_run: tuple[Path, dict[str, Any]], filled_sheet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, records = real_run
    out = tmp_path / "est"
    code, stdout, err = cli(
        [
            "estimate",
            "--humans",
            str(filled_sheet),
            "--teacher",
            str(run),
            "--by",
            "lang",
            "--min-slice-humans",
            "20",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    assert "politics" in stdout and "too small" in stdout and "estimate.md" in stdout
    rep = strict_json(out / "estimate.json")
    t = rep["teachers"][0]
    ok = {i: r["label"] for i, r in records.items() if r["status"] == "ok"}
    assert (t["population"], t["failed"], t["human_items"]) == (N_ITEMS - N_FAILED, N_FAILED, N_HUMANS)
    assert t["design"] == "inclusion probabilities" and "Confidence-Driven" in t["method"]
    sheet = pl.read_csv(filled_sheet, infer_schema=False)
    share = {s["label"]: s for s in t["overall"]["shares"]}
    politics = share["politics"]
    y = np.array([lab == "politics" for lab in sheet["label"]], dtype=float)
    f = np.array([ok[i] == "politics" for i in sheet["item_id"]], dtype=float)
    raw = np.mean([lab == "politics" for lab in ok.values()])
    # one confidence stratum (the fault server's answers are all self-consistent): equal probabilities
    assert len(set(sheet["inclusion_prob"].to_list())) == 1
    assert politics["teacher_share"] == pytest.approx(raw)
    assert politics["human_only"]["value"] == pytest.approx(y.mean())
    lam = politics["lam"]
    assert politics["corrected"]["value"] == pytest.approx(lam * raw + y.mean() - lam * f.mean())
    truth = np.mean([human_rule(i, lab) == "politics" for i, lab in ok.items()])
    assert abs(politics["corrected"]["value"] - truth) < abs(raw - truth)  # the teacher over-says politics
    # each label has its own lambda, so the corrected shares add up to about 1 (exactly 1 for the human-only ones)
    assert sum(s["corrected"]["value"] for s in share.values()) == pytest.approx(1.0, abs=0.02)
    assert sum(s["human_only"]["value"] for s in share.values()) == pytest.approx(1.0)
    slices = {s["slice"]: s for s in t["slices"]}
    assert set(slices) == {"de", "en", "fr"}
    assert slices["fr"]["too_small"] and slices["fr"]["shares"] == []
    assert not slices["en"]["too_small"] and slices["en"]["population"] == sum(
        1 for i in ok if int(i[1:]) % 20 and int(i[1:]) % 3
    )
    md = (out / "estimate.md").read_text()
    assert "## Assumptions" in md and "Too small" in md and "tied vote is split evenly" in md
    assert (out / "forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))


def test_json_output_is_the_report(
    real_run: tuple[Path, dict[str, Any]], filled_sheet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = real_run
    code, stdout, _ = cli(
        [
            "estimate",
            "--humans",
            str(filled_sheet),
            "--teacher",
            str(run),
            "--out",
            str(tmp_path / "e"),
            "--json",
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0
    printed = json.loads(stdout)
    assert printed["teachers"][0]["overall"] == strict_json(tmp_path / "e/estimate.json")["teachers"][0]["overall"]
    assert not (tmp_path / "e/forest.png").exists()


def test_several_teachers_side_by_side(
    real_run: tuple[Path, dict[str, Any]], filled_sheet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second teacher that labels like the humans: its corrected share is worth more human labels."""
    run, records = real_run
    good = write_run(
        run.parent / "good",
        {i: human_rule(i, r["label"]) if r["status"] == "ok" else None for i, r in records.items()},
        confidence=1.0,
        label_set=LABELS,
    )
    code, _, err = cli(
        ["estimate", "--humans", str(filled_sheet), "--teacher", str(run), "--teacher", str(good)], capsys
    )
    assert code == 0, err
    out = run.parent / "estimate-comparison"
    rep = strict_json(out / "estimate.json")
    names = [t["name"] for t in rep["teachers"]]
    assert names == ["out", "good"]
    fault, perfect = ({s["label"]: s for s in t["overall"]["shares"]} for t in rep["teachers"])
    assert perfect["politics"]["effective_human_labels"] > fault["politics"]["effective_human_labels"]
    # humans agree with it everywhere: it counts almost fully (lambda just under 1: the small-count adjustment's
    # pseudo-disagreements) and the corrected share is its raw share
    assert perfect["politics"]["lam"] > 0.9
    assert perfect["politics"]["corrected"]["value"] == pytest.approx(perfect["politics"]["teacher_share"], abs=0.005)
    md = (out / "estimate.md").read_text()
    assert "## Side by side" in md and "good corrected" in md and "out corrected" in md


def test_ties_are_split_and_a_plain_file_is_a_random_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = {f"i{k}": ("pos" if k % 4 else "neg") for k in range(40)}
    run = write_run(tmp_path / "run", labels, label_set=["neg", "pos"])
    # wide format, two annotators: they disagree on i1 and i2 (a tie each), agree elsewhere
    rows = [
        {"item_id": f"i{k}", "ann_a": labels[f"i{k}"], "ann_b": "neg" if k in (1, 2) else labels[f"i{k}"]}
        for k in range(10)
    ]
    pl.DataFrame(rows).write_csv(tmp_path / "humans.csv")
    code, _, err = cli(
        [
            "estimate",
            "--humans",
            str(tmp_path / "humans.csv"),
            "--teacher",
            str(run),
            "--out",
            str(tmp_path / "e"),
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0, err
    t = strict_json(tmp_path / "e/estimate.json")["teachers"][0]
    assert t["tied_items"] == 2 and t["design"] == "random sample"
    neg = next(s for s in t["overall"]["shares"] if s["label"] == "neg")
    # neg: i0, i4, i8 by both, i1 and i2 half each -> 4 of 10
    assert neg["human_only"]["value"] == pytest.approx(0.4)
    assert neg["humans_with_label"] == pytest.approx(4.0)
    assert any("tied vote" in n for n in t["notes"]) and any("fewer than 20" in n for n in t["notes"])


def bad_input_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    run = write_run(
        tmp_path / "run",
        {f"i{k}": ("pos" if k % 3 else "neg") for k in range(30)} | {"f1": None},
        label_set=["neg", "pos"],
    )
    one = write_run(tmp_path / "one", {f"i{k}": "pos" for k in range(10)}, label_set=["pos"])
    files = {
        "humans": "item_id,label\n" + "".join(f"i{k},pos\n" for k in range(10)),
        "elsewhere": "item_id,label\nz1,pos\nz2,neg\n",
        "zero": "item_id,label,inclusion_prob\ni1,pos,0.1\ni2,neg,0\n",
        "above": "item_id,label,inclusion_prob\ni1,pos,0.1\ni2,neg,1.5\n",
        "failed_only": "item_id,label\nf1,pos\n",
        "single": "item_id,label\ni1,pos\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.csv").write_text(text)
    h = str(tmp_path / "humans.csv")

    def args(humans: str, teacher: Path = run, *extra: str) -> list[str]:
        return ["estimate", "--humans", humans, "--teacher", str(teacher), "--out", str(tmp_path / "e"), *extra]

    return {
        "no overlap": (args(str(tmp_path / "elsewhere.csv")), "none of its 2 item ids is in the teacher run"),
        "one label": (args(h, one), "has one label only"),
        "probability 0": (
            args(str(tmp_path / "zero.csv")),
            "has inclusion_prob '0'; it must be a probability in (0, 1]",
        ),
        "probability above 1": (args(str(tmp_path / "above.csv")), "has inclusion_prob '1.5'"),
        "teacher failed on all": (args(str(tmp_path / "failed_only.csv")), "failed on every human-labelled item"),
        "one human item": (args(str(tmp_path / "single.csv")), "needs at least 2"),
        "no such column": (args(h, run, "--by", "lang"), "no column 'lang'"),
        "confidence": (args(h, run, "--confidence", "95"), "--confidence must be between 0 and 1"),
        "min slice": (args(h, run, "--min-slice-humans", "1"), "--min-slice-humans must be at least 2"),
        "no teacher": (args(h, tmp_path / "nothing"), "teacher path not found"),
        "out is a file": (args(h)[:-1] + [str(tmp_path / "single.csv")], "is a file, not a folder: choose a folder"),
        "out is the humans file": (args(h)[:-1] + [h], "is the --humans file: writing there would destroy it"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no overlap",
        "one label",
        "probability 0",
        "probability above 1",
        "teacher failed on all",
        "one human item",
        "no such column",
        "confidence",
        "min slice",
        "no teacher",
        "out is a file",
        "out is the humans file",
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args, message = bad_input_cases(tmp_path)[case]
    code, _, err = cli(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "e").exists()  # nothing written


# -- sample --strategy confidence ------------------------------------------------------------------------------


def test_confidence_strategy_draws_in_proportion_to_the_estimated_error(tmp_path: Path) -> None:
    """pi_h = n/N ((1 - tau) u_h / mean(u) + tau), u_h = sqrt(max(1 - confidence, 0.05)): 1,000 items, 150 draws."""
    run, _ = make_run(tmp_path / "run", n=1000, seed=2)
    cands, labels = sp.load_candidates(run)
    design = sp.allocation(cands, 150, "confidence", labels)
    assert [name for name, _, _ in design] == ["0.333", "0.667", "1.000"]
    sizes = np.array([len(m) for _, m, _ in design])
    drawn = np.array([k for _, _, k in design])
    assert drawn.sum() == 150 and drawn.min() >= 1
    u = np.sqrt([2 / 3, 1 / 3, 0.05])
    expected = 150 / 1000 * ((1 - sp.CDI_UNIFORM_SHARE) * u / (sizes @ u / 1000) + sp.CDI_UNIFORM_SHARE)
    assert np.allclose(drawn / sizes, expected, atol=1.5 / sizes.min())
    sample = sp.draw(cands, 150, "confidence", seed=3, labels=labels)
    assert sorted(set(sample.inclusion_prob)) == sorted(set((drawn / sizes).tolist()))
    assert sum(1 / p for p in sample.inclusion_prob) == pytest.approx(1000)  # every item represented


def test_a_pilot_moves_draws_to_where_the_teacher_errs(tmp_path: Path) -> None:
    run, truth = make_run(tmp_path / "run", n=1000, seed=2)
    cands, labels = sp.load_candidates(run)
    plain = {name: k for name, _, k in sp.allocation(cands, 150, "confidence", labels)}
    # a pilot where the fully self-consistent answers are wrong half the time
    learnt = {
        name: k
        for name, _, k in sp.allocation(cands, 150, "confidence", labels, pilot={"1.000": (40, 80), "0.333": (10, 60)})
    }
    assert learnt["1.000"] > plain["1.000"] and learnt["0.333"] < plain["0.333"]
    # pilot_errors counts a real pilot file per stratum, against the human majority
    confident = [c.id for c in cands if c.confidence == 1.0][:30]
    pilot = tmp_path / "pilot.csv"
    pl.DataFrame({"item_id": confident, "label": [truth[i] for i in confident]}).write_csv(pilot)
    errors = sp.pilot_errors(pilot, run, cands)
    teacher = {c.id: c.label for c in cands}
    assert errors == {"1.000": (sum(teacher[i] != truth[i] for i in confident), 30)}


def test_confidence_strata_are_bands_when_confidence_is_continuous(tmp_path: Path) -> None:
    confs = list(np.linspace(0.0, 1.0, 101))
    name = sp.confidence_stratum(confs)
    assert name(0.0) == "[0.00, 0.05)" and name(0.97) == "[0.95, 1.00]" and name(1.0) == "[0.95, 1.00]"
    assert name(None) == "no confidence"
    assert sp.confidence_stratum([1 / 3, 1.0])(1 / 3) == "0.333"
    run, _ = make_run(tmp_path / "run", n=100, seed=2)
    cands, labels = sp.load_candidates(run)
    with pytest.raises(InputDataError, match="at least the number of its strata"):
        sp.allocation(cands, 2, "confidence", labels)


def test_sample_cli_confidence_with_a_one_annotator_pilot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sample --strategy confidence --pilot` with a gold file of one annotator: the pilot's error rates shape the
    design (the plan's alpha, undefined with one annotator, stays assumed) and the sheet feeds `estimate`."""
    run, truth = make_run(tmp_path / "run", n=1000, seed=2)
    pilot_ids = [f"n{i:04d}" for i in range(0, 1000, 10)]
    pl.DataFrame({"item_id": pilot_ids, "label": [truth[i] for i in pilot_ids]}).write_csv(tmp_path / "pilot.csv")
    code, stdout, err = cli(
        [
            "sample",
            str(run),
            "--strategy",
            "confidence",
            "--n",
            "150",
            "--per-item",
            "1",
            "--annotators",
            "1",
            "--pilot",
            str(tmp_path / "pilot.csv"),
            "--out",
            str(tmp_path / "sheets"),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert "plan keeps its assumed accuracy and alpha" in " ".join(err.split())
    cands, labels = sp.load_candidates(run)
    learnt = sp.allocation(cands, 150, "confidence", labels, pilot=sp.pilot_errors(tmp_path / "pilot.csv", run, cands))
    strata = json.loads(stdout)["design"]["strata"]
    assert [s["drawn"] for s in strata] == [k for _, _, k in learnt]
    assert [s["drawn"] for s in strata] != [k for _, _, k in sp.allocation(cands, 150, "confidence", labels)]
    sheet = pl.read_csv(tmp_path / "sheets/sheet_long.csv", infer_schema=False)
    sheet.with_columns(pl.Series("label", [truth[i] for i in sheet["item_id"]])).write_csv(tmp_path / "humans.csv")
    code, _, err = cli(
        [
            "estimate",
            "--humans",
            str(tmp_path / "humans.csv"),
            "--teacher",
            str(run),
            "--out",
            str(tmp_path / "e"),
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0, err
    shares = strict_json(tmp_path / "e/estimate.json")["teachers"][0]["overall"]["shares"]
    true_share = np.mean([lab == "politics" for lab in truth.values()])
    politics = next(s for s in shares if s["label"] == "politics")
    assert politics["corrected"]["ci_low"] <= true_share <= politics["corrected"]["ci_high"]
