"""The human side of the loop: `annotator sample` designs and sheets, reading filled sheets and Label Studio
exports back, the design-corrected accuracy, several teachers in one audit, and `export --route-below`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_audit_cli import audit_cli, strict_json  # tests/ is on sys.path

from annotator.audit import agreement as ag
from annotator.audit import sampling as sp
from annotator.audit.compute import AuditOptions
from annotator.audit.humans import load_humans
from annotator.audit.run_audit import run_audit
from annotator.cli import main
from annotator.errors import InputDataError
from annotator.records import AnnotationRecord, LabelInfo, RunManifest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

DATA = Path(__file__).parent / "data"
LABELS = ["politics", "economy", "sport", "health", "science"]
SHARES = [0.45, 0.3, 0.18, 0.05, 0.02]


def make_run(
    path: Path,
    n: int = 400,
    seed: int = 0,
    tokens: int = 100,
    flip: float = 0.0,
    conf_levels: tuple[float, ...] = (1 / 3, 2 / 3, 1.0),
    model: str = "teacher",
) -> tuple[Path, dict[str, str]]:
    """A label run with skewed labels and vote-share confidences; returns the run and the true labels
    (the teacher is right with probability = its confidence, then wrong with probability ``flip`` more)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    # all draws up front, so one seed gives the same truth and confidences whatever ``flip`` is
    true_idx, confs = rng.choice(len(LABELS), size=n, p=SHARES), rng.choice(conf_levels, size=n)
    u_conf, u_flip, shift = rng.random(n), rng.random(n), rng.integers(1, len(LABELS), size=n)
    truth: dict[str, str] = {}
    with (path / "annotations.jsonl").open("w") as fh:
        for i in range(n):
            item = f"n{i:04d}"
            truth[item] = LABELS[true_idx[i]]
            conf = float(confs[i])
            right = u_conf[i] < conf and u_flip[i] >= flip
            label = truth[item] if right else LABELS[(true_idx[i] + shift[i]) % len(LABELS)]
            rec = AnnotationRecord(
                id=item,
                text=f'text {i}, "quoted"',
                task="label",
                status="ok",
                output={"label": label},
                label=label,
                confidence=conf,
                tokens=tokens,
                model=model,
                prompt_hash="h",
            )
            fh.write(rec.model_dump_json() + "\n")
    manifest = RunManifest(
        pipeline_name="t",
        pipeline_path="p.yaml",
        config={},
        task="label",
        labels=[LabelInfo(name=x) for x in LABELS],
        template_path="t",
        template_sha256="s",
        backend="fake",
        model=model,
        started_at="2026-01-01",
        annotator_version="0.1.0",
        rows_total=n,
        rows_ok=n,
        tokens=n * tokens,
    )
    (path / "run.json").write_text(manifest.model_dump_json())
    return path, truth


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return (0 if exc.value.code is None else int(exc.value.code)), " ".join(out.split()), " ".join(err.split())


def fill_long(sheet: Path, truth: dict[str, str], out: Path, noise: float = 0.0, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    df = pl.read_csv(sheet, infer_schema=False)
    labels = [truth[i] if rng.random() >= noise else LABELS[rng.integers(5)] for i in df["item_id"]]
    df.with_columns(pl.Series("label", labels)).write_csv(out)
    return out


# ------------------------------------------------------------------------------------------- designs


def test_designs_are_seeded_cover_rare_labels_and_record_exact_inclusion_probabilities(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path / "run")
    cands, labels = sp.load_candidates(run)
    rand = sp.draw(cands, 60, "random", seed=3, labels=labels)
    assert len({c.id for c in rand.items}) == 60 and set(rand.inclusion_prob) == {60 / 400}
    assert [c.id for c in sp.draw(cands, 60, "random", 3, labels).items] == [c.id for c in rand.items]
    assert [c.id for c in sp.draw(cands, 60, "random", 4, labels).items] != [c.id for c in rand.items]
    exact, _ = make_run(tmp_path / "exact", conf_levels=(1.0,))  # teacher labels = the skewed true labels
    strat = sp.draw(sp.load_candidates(exact)[0], 60, "stratified", seed=0, labels=labels)
    sizes = {s.name: s.size for s in strat.strata}
    drawn = {s.name: s.drawn for s in strat.strata}
    rare = min(sizes, key=sizes.get)  # type: ignore[arg-type]
    prob = {s.name: s.inclusion_prob for s in strat.strata}
    assert sizes[rare] < 15 and drawn[rare] >= 6 and prob[rare] > 3 * prob[max(sizes, key=sizes.get)]  # type: ignore[arg-type]
    big = {s.name: s.drawn for s in sp.draw(sp.load_candidates(exact)[0], 200, "stratified", 0, labels).strata}
    assert big[rare] == sizes[rare]  # fewer items than its equal share: all of them are drawn
    assert all(drawn[lab] >= min(sizes[lab], 6) for lab in sizes) and sum(drawn.values()) == 60
    unc = sp.draw(cands, 60, "uncertain", seed=0, labels=labels)
    by_band = {s.name: s.inclusion_prob for s in unc.strata}
    assert by_band["[0.0, 0.5)"] > by_band["[0.5, 0.7)"] > by_band["[0.9, 1.0]"]
    for sample in (rand, strat, unc):  # Horvitz-Thompson: the weights of a stratified sample add up to N exactly
        assert sum(1 / p for p in sample.inclusion_prob) == pytest.approx(400)
        assert all(math.isclose(p, s.drawn / s.size) for s in sample.strata for p in [s.inclusion_prob])
    assert rand.design_effect == pytest.approx(1.0) and unc.design_effect > 1.2


def test_allocation_and_overlap_design() -> None:
    # minimums 4, 4, 3 (capped), the other 9 split 100:50 over the strata with items left: 6 and 3
    assert sp.allocate([100, 50, 3], [100, 50, 3], 20, [4, 4, 4]) == [10, 7, 3]
    assert sum(sp.allocate([10, 1, 1, 1], [1, 1, 1, 1], 2, [1, 1, 1, 1])) == 2  # more strata than draws
    names = sp.annotator_names(5, None)
    plan = sp.assign(40, names, 3)
    assert all(len(set(who)) == 3 for who in plan)
    loads = [sum(a in who for who in plan) for a in names]
    assert max(loads) - min(loads) <= 1 and sum(loads) == 120
    shared = {(a, b): sum(a in w and b in w for w in plan) for a in names for b in names if a < b}
    assert min(shared.values()) > 0  # every pair of annotators shares items
    with pytest.raises(InputDataError, match="--per-item must be between 1 and --annotators"):
        sp.assign(5, names[:2], 3)


def test_plan_formulas_and_the_alpha_approximation_against_simulation(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path / "run")
    cands, _ = sp.load_candidates(run)
    p = sp.plan(cands, cands, [100, 400], target=0.05)
    mean_conf = float(np.mean([c.confidence for c in cands]))
    assert p.accuracy_guess == pytest.approx(mean_conf)
    assert p.rows[0].accuracy_half_width == pytest.approx(
        1.959964 * math.sqrt(mean_conf * (1 - mean_conf) / 100), rel=1e-5
    )
    assert p.rows[1].accuracy_half_width == pytest.approx(p.rows[0].accuracy_half_width / 2)
    assert p.n_for_accuracy == math.ceil(1.959964**2 * mean_conf * (1 - mean_conf) / 0.05**2)
    assert p.rarest_label == "science"
    # Bloch & Kraemer's variance against the spread of Krippendorff's alpha over simulated two-rater samples
    rng = np.random.default_rng(0)
    for a, share, n in ((0.8, 0.2, 150), (0.6, 0.1, 200)):
        alphas = []
        for _ in range(600):
            common, z = rng.random(n) < a, rng.random(n) < share
            x = np.where(common, z, rng.random(n) < share).astype(int)
            y = np.where(common, z, rng.random(n) < share).astype(int)
            counts = np.stack([2 - x - y, x + y], axis=1)
            alphas.append(ag.krippendorff_alpha(counts, "nominal", np.arange(2.0)))
        assert float(np.std(alphas)) == pytest.approx(math.sqrt(sp.alpha_variance(a, share) / n), rel=0.12)


def test_plan_cli_writes_nothing_and_uses_a_pilot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, truth = make_run(tmp_path / "run")
    code, out, _ = cli(["sample", str(run), "--plan", "--target-ci", "0.05", "--n", "120"], capsys)
    assert code == 0 and "For +-0.05:" in out and "Bloch & Kraemer (1989)" in out and "Wald" in out
    assert not any(p.name != "run" for p in tmp_path.iterdir())
    code, _, _ = cli(
        ["sample", str(run), "--n", "60", "--strategy", "random", "--out", str(tmp_path / "pilot")], capsys
    )
    pilot = fill_long(tmp_path / "pilot" / "sheet_long.csv", truth, tmp_path / "pilot_filled.csv")
    code, out, _ = cli(["sample", str(run), "--plan", "--pilot", str(pilot), "--target-ci", "0.1"], capsys)
    assert code == 0 and "accuracy on the pilot human file" in out and "alpha among the pilot's humans" in out


# ------------------------------------------------------------------------------------------- sheets


def test_fixture_formats_read_the_same_and_the_design_correction_is_hand_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long, wide, ls = (load_humans(DATA / f"human_loop_{x}") for x in ("long.csv", "wide.csv", "label_studio.json"))
    assert long.format == "long" and wide.format == "wide" and ls.format == "label-studio"
    assert long.ratings == wide.ratings == ls.ratings and "ann_3" not in ls.ratings["n011"]  # cancelled = missing
    assert (
        long.inclusion_prob
        == wide.inclusion_prob
        == ls.inclusion_prob
        == {"n003": 0.5, "n007": 0.25, "n011": 0.25, "n015": 1.0}
    )
    (tmp_path / "t.csv").write_text("id,label\nn003,sport\nn007,economy\nn011,sport\nn015,health\n")
    reports = []
    for name in ("long.csv", "wide.csv", "label_studio.json"):
        code, _, _ = audit_cli(
            [
                "--humans",
                str(DATA / f"human_loop_{name}"),
                "--teacher",
                str(tmp_path / "t.csv"),
                "--out",
                str(tmp_path / name),
                "--bootstrap",
                "0",
                "--no-plots",
                "--labels",
                ",".join(LABELS),
            ],
            capsys,
        )
        assert code == 0
        reports.append(strict_json(tmp_path / name / "report.json"))
    for rep in reports:
        c = rep["classification"]
        # majority labels: sport, economy, politics, health; the teacher misses n011 (weight 4 of 2+4+4+1)
        assert c["accuracy"]["value"] == pytest.approx(3 / 4)
        assert c["design_weighted_accuracy"]["value"] == pytest.approx(7 / 11)
        assert rep["agreement"] == reports[0]["agreement"]
    assert "design-corrected" in (tmp_path / "long.csv" / "report.md").read_text()


def test_label_studio_mistakes_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = json.loads((DATA / "human_loop_label_studio.json").read_text())
    cases = {
        "no_item_id": ("has no data.item_id", lambda t: t[0]["data"].pop("item_id")),
        "two_controls": (
            "several choices controls",
            lambda t: (
                t[1]["annotations"][0]["result"].append(
                    {"type": "choices", "from_name": "tone", "to_name": "text", "value": {"choices": ["calm"]}}
                )
                or t[1]["annotations"][0]["result"][0].update(from_name="topic")
            ),
        ),
        "multi_choice": (
            "2 choices selected",
            lambda t: t[0]["annotations"][0]["result"][0]["value"].update(choices=["sport", "health"]),
        ),
        "bad_prob": ("inclusion_prob", lambda t: t[2]["data"].update(inclusion_prob=0)),
    }
    (tmp_path / "t.csv").write_text("id,label\nn003,sport\nn007,economy\nn011,sport\nn015,health\n")
    for name, (expected, mutate) in cases.items():
        tasks = json.loads(json.dumps(base))
        mutate(tasks)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(tasks))
        code, _, err = audit_cli(
            [
                "--humans",
                str(path),
                "--teacher",
                str(tmp_path / "t.csv"),
                "--out",
                str(tmp_path / "o"),
                "--bootstrap",
                "0",
                "--no-plots",
            ],
            capsys,
        )
        assert code == 2 and expected in " ".join(err.split()) and "Traceback" not in err, name


def test_sample_cli_sheets_round_trip_and_design_corrected_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # humans agree with the truth; the teacher is right with probability = its confidence. An `uncertain` sample
    # oversamples its mistakes: the raw accuracy is biased low, the design-corrected one recovers the run's.
    run, truth = make_run(tmp_path / "run", n=3000, seed=5)
    out = tmp_path / "sheet"
    code, stdout, _ = cli(
        [
            "sample",
            str(run),
            "--n",
            "450",
            "--strategy",
            "uncertain",
            "--annotators",
            "4",
            "--per-item",
            "3",
            "--seed",
            "2",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0 and "uncertain sample: 450 of 3000 items" in stdout
    for name in (
        "sheet_long.csv",
        "sheet_wide.csv",
        "label_studio_tasks.json",
        "label_studio_config.xml",
        "sample.json",
    ):
        assert (out / name).stat().st_size > 0
    long = pl.read_csv(out / "sheet_long.csv", infer_schema=False)
    assert long.columns == ["item_id", "annotator", "label", "text", "inclusion_prob"] and long.height == 1350
    assert long["label"].null_count() == 1350 and long["text"][0].startswith("text ")
    wide = pl.read_csv(out / "sheet_wide.csv", infer_schema=False)
    assert wide.columns == ["item_id", "text", "inclusion_prob", "ann_1", "ann_2", "ann_3", "ann_4"]
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    assert len(tasks) == 450 and set(tasks[0]["data"]) == {"item_id", "text", "inclusion_prob"}
    assert '<Choices name="label"' in (out / "label_studio_config.xml").read_text()
    design = json.loads((out / "sample.json").read_text())
    assert set(design["items_per_annotator"].values()) == {337, 338}
    # fill the long sheet as annotators would, read it back, compare with the run's real accuracy
    filled = fill_long(out / "sheet_long.csv", truth, tmp_path / "filled.csv")
    records = [json.loads(line) for line in (run / "annotations.jsonl").read_text().splitlines()]
    true_acc = float(np.mean([r["label"] == truth[r["id"]] for r in records]))
    rep = run_audit(AuditOptions(humans=filled, teacher=run, bootstrap=200, plots=False))
    raw, corrected = rep.classification.accuracy, rep.classification.design_weighted_accuracy
    assert corrected is not None and raw.value is not None and corrected.value is not None
    assert abs(corrected.value - true_acc) < 0.04 < true_acc - raw.value
    assert corrected.ci_low <= true_acc <= corrected.ci_high  # type: ignore[operator]
    # the sampler never overwrites a sheet someone has filled in; a blank one it replaces
    filled.replace(out / "sheet_long.csv")
    code, _, err = cli(["sample", str(run), "--n", "10", "--out", str(out)], capsys)
    assert code == 2 and "labels already filled in (sheet_long.csv)" in err
    code, _, _ = cli(["sample", str(run), "--n", "10", "--out", str(tmp_path / "blank")], capsys)
    code, _, _ = cli(["sample", str(run), "--n", "12", "--out", str(tmp_path / "blank")], capsys)
    assert code == 0 and pl.read_csv(tmp_path / "blank" / "sheet_wide.csv").height == 12


# ------------------------------------------------------------------------------------------- teachers


def test_several_teachers_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, truth = make_run(tmp_path / "big", n=300, seed=1, tokens=400, conf_levels=(0.95, 1.0), model="big-model")
    bad, _ = make_run(tmp_path / "small", n=300, seed=1, tokens=50, flip=0.5, conf_levels=(0.95, 1.0), model="small")
    code, _, _ = cli(["sample", str(good), "--n", "90", "--strategy", "random", "--out", str(tmp_path / "s")], capsys)
    humans = fill_long(tmp_path / "s" / "sheet_long.csv", truth, tmp_path / "h.csv", noise=0.1)
    out = tmp_path / "cmp"
    code, stdout, _ = audit_cli(
        [
            "--humans",
            str(humans),
            "--teacher",
            str(good),
            "--teacher",
            str(bad),
            "--out",
            str(out),
            "--bootstrap",
            "100",
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0
    comp = strict_json(out / "comparison.json")
    big, small = comp["teachers"]
    assert (big["name"], small["name"], big["model"]) == ("big", "small", "big-model")
    assert comp["passing"] == ["big"] and comp["ranking"] == ["big", "small"]
    assert big["alt_test_passed"] is True and small["alt_test_passed"] is False
    assert big["advantage_probability"] > small["advantage_probability"]
    assert big["accuracy"]["value"] > small["accuracy"]["value"] and big["accuracy"]["ci_low"] is not None
    assert (big["tokens_per_item"], small["tokens_per_item"]) == (400, 50)
    assert set(big["per_category_accuracy"]) == set(LABELS)
    for name in ("big", "small"):  # one full report per teacher, as a single --teacher writes it
        single = strict_json(out / name / "report.json")
        assert single["alt_test"]["winning_rate"] == comp["teachers"][0 if name == "big" else 1]["winning_rate"]
    md = (out / "comparison.md").read_text()
    assert "Teachers that pass the Alternative Annotator Test: `big`" in md and "| `small` |" in md
    assert "Pass the alt-test: big" in " ".join(stdout.split())
    # gate: exit 3 only when no teacher passes it
    args = [
        "--humans",
        str(humans),
        "--teacher",
        str(good),
        "--teacher",
        str(bad),
        "--out",
        str(out),
        "--bootstrap",
        "0",
        "--no-plots",
        "--gate-metric",
        "accuracy",
        "--min-agreement",
    ]
    assert audit_cli([*args, "0.8"], capsys)[0] == 0
    code, _, err = audit_cli([*args, "0.99"], capsys)
    assert code == 3 and "every teacher" in " ".join(err.split())
    # a single teacher writes no comparison
    audit_cli(
        [
            "--humans",
            str(humans),
            "--teacher",
            str(good),
            "--out",
            str(tmp_path / "one"),
            "--bootstrap",
            "0",
            "--no-plots",
        ],
        capsys,
    )
    assert (tmp_path / "one" / "report.json").exists() and not (tmp_path / "one" / "comparison.json").exists()


# ------------------------------------------------------------------------------------------- routing


def test_export_routes_low_confidence_items_to_a_sheet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("datasets")
    run, truth = make_run(tmp_path / "run", n=120, seed=3)
    records = [json.loads(line) for line in (run / "annotations.jsonl").read_text().splitlines()]
    low = {r["id"] for r in records if r["confidence"] < 0.7}
    code, stdout, _ = cli(
        ["export", str(run), "--out", str(tmp_path / "ds"), "--route-below", "0.7", "--route-annotators", "3"], capsys
    )
    assert code == 0 and f"{len(low)} routed to humans" in stdout
    summary = json.loads((tmp_path / "ds" / "export.json").read_text())
    assert summary["counts"]["routed_to_humans"] == len(low) and summary["counts"]["exported_items"] == 120 - len(low)
    exported = set(pl.concat([pl.read_parquet(p) for p in (tmp_path / "ds" / "parquet").glob("*.parquet")])["id"])
    assert exported.isdisjoint(low) and len(exported) == 120 - len(low)
    sheet = pl.read_csv(run / "routed" / "sheet_long.csv", infer_schema=False)
    assert set(sheet["item_id"]) == low and sheet.columns == ["item_id", "annotator", "label", "text"]
    assert sheet.height == 3 * len(low) and summary["routed_sheet"] == str(run / "routed" / "sheet_long.csv")
    # the filled routed sheet is read by the audit like any other sheet; a second export refuses to clobber it
    fill_long(run / "routed" / "sheet_long.csv", truth, run / "routed" / "filled.csv")
    assert load_humans(run / "routed" / "filled.csv").annotators == ["ann_1", "ann_2", "ann_3"]
    (run / "routed" / "filled.csv").replace(run / "routed" / "sheet_long.csv")
    code, _, err = cli(["export", str(run), "--out", str(tmp_path / "ds"), "--route-below", "0.7"], capsys)
    assert code == 2 and "labels already filled in" in err
