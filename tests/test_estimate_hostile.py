"""`annotator estimate` and `annotator sample --strategy confidence` against a hostile user: wrong types, partial runs,
mismatched teachers, outputs that would destroy a file, a full disk, Ctrl-C, a second process. Every mistake is one
line with exit code 2 and leaves the outputs as they were (in-process, except where a second process matters)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_audit_inputs import write_run  # tests/ is on sys.path
from test_estimate_cli import cli

import annotator.rundir
from annotator.audit import sampling as sp
from annotator.errors import InputDataError
from annotator.estimate.stats import share_estimates

LABELS = ["neg", "pos"]
TRUTH = {f"i{k}": ("pos" if k % 3 else "neg") for k in range(120)}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", TRUTH, label_set=LABELS)


def humans(tmp_path: Path, n: int = 60, name: str = "humans.csv", **columns: list[object]) -> Path:
    ids = list(TRUTH)[:n]
    pl.DataFrame({"item_id": ids, "label": [TRUTH[i] for i in ids], **columns}).write_csv(tmp_path / name)
    return tmp_path / name


def estimate(
    capsys: pytest.CaptureFixture[str], humans_file: Path, *teachers: Path, out: Path, extra: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    args = ["estimate", "--humans", str(humans_file), "--out", str(out), *extra]
    for t in teachers:
        args += ["--teacher", str(t)]
    return cli(args, capsys)


def one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in " ".join(err.split()), err


# -- the humans file ---------------------------------------------------------------------------------------------


def test_inclusion_probabilities_implying_an_absurd_population_are_one_line(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inclusion_prob 1e-300 passed the (0, 1] check, then the variance overflowed (a traceback)."""
    h = humans(tmp_path, inclusion_prob=[1e-300] * 60)
    code, _, err = estimate(capsys, h, run, out=tmp_path / "e")
    one_line_error(
        code,
        err,
        "imply a population of 6e+301 items",
        "more than 10 times the 120 items",
        "drop the inclusion_prob column",
    )
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("value", [True, "nan", "inf", -0.5, 0, 1.5])
def test_an_inclusion_prob_that_is_not_a_probability_is_one_line(
    value: object, tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A column of JSON booleans was read as probability 1 (Label Studio exports: branch hostile's checks)."""
    ids = list(TRUTH)[:40]
    (tmp_path / "h.jsonl").write_text(
        "".join(
            json.dumps({"item_id": i, "label": TRUTH[i], "inclusion_prob": value if k == 0 or value is True else 0.5})
            + "\n"
            for k, i in enumerate(ids)
        )
    )
    code, _, err = estimate(capsys, tmp_path / "h.jsonl", run, out=tmp_path / "e")
    one_line_error(code, err, "row 2 (item 'i0') has inclusion_prob", "it must be a probability in (0, 1]")
    assert not (tmp_path / "e").exists()


def test_ids_that_differ_only_in_case_get_a_hint(tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [i.upper() if k < 10 else i for k, i in enumerate(list(TRUTH)[:60])]
    pl.DataFrame({"item_id": ids, "label": [TRUTH[i.lower()] for i in ids]}).write_csv(tmp_path / "h.csv")
    code, _, err = estimate(capsys, tmp_path / "h.csv", run, out=tmp_path / "e", extra=("--no-plots",))
    assert code == 0, err
    assert "10 human item(s) are not in the run" in " ".join(err.split())
    assert "10 of them are run ids written in other upper/lower case" in " ".join(err.split())


def test_drawn_items_left_unlabelled_scale_the_inclusion_probabilities(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sheet drawn at pi = 0.8 of which humans labelled 60 items: the probabilities imply 75 of the 120 items, so
    the drawn-and-labelled probability is 0.8 * 75/120 = 0.5 (a finite-population correction of 0.2 would claim
    more precision than 60 of 120 items give)."""
    h = humans(tmp_path, inclusion_prob=[0.8] * 60)
    code, out, err = estimate(capsys, h, run, out=tmp_path / "e", extra=("--no-plots", "--json"))
    assert code == 0, err
    assert "scaled by the response rate 0.625" in " ".join(err.split())
    rep = json.loads(out)["teachers"][0]
    assert rep["overall"]["implied_population"] == pytest.approx(120)  # sum of 1/(0.8 * 0.625) over 60 items
    plain = humans(tmp_path, name="plain.csv")  # the same 60 items as a simple random sample: pi = 60/120
    code, out2, err = estimate(capsys, plain, run, out=tmp_path / "e2", extra=("--no-plots", "--json"))
    assert code == 0, err
    assert json.loads(out2)["teachers"][0]["overall"]["shares"] == rep["overall"]["shares"]


# -- the teacher runs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["multi_label", "rephrase"])
def test_a_run_of_another_task_names_estimate(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = {"multi_label": True} if kind == "multi_label" else {"task": "rephrase"}
    other = write_run(tmp_path / kind, TRUTH, label_set=LABELS, **extra)  # type: ignore[arg-type]
    code, _, err = estimate(capsys, humans(tmp_path), other, out=tmp_path / "e")
    one_line_error(code, err, "audit and estimate")


def test_teachers_whose_run_json_orders_the_labels_differently_are_compared_label_by_label(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, the side-by-side table and the plot paired the first teacher's 'neg' with the second's 'pos'."""
    flipped = {i: ("neg" if k % 4 == 0 else "pos") for k, i in enumerate(TRUTH)}
    other = write_run(tmp_path / "other", flipped, label_set=["pos", "neg"])
    code, out, err = estimate(capsys, humans(tmp_path), run, other, out=tmp_path / "e", extra=("--json", "--no-plots"))
    assert code == 0, err
    first, second = json.loads(out)["teachers"]
    assert [s["label"] for s in second["overall"]["shares"]] == LABELS
    neg = second["overall"]["shares"][0]
    assert neg["teacher_share"] == pytest.approx(np.mean([lab == "neg" for lab in flipped.values()]))
    row = next(
        line for line in (tmp_path / "e/estimate.md").read_text().splitlines() if line.startswith("| (all) | neg")
    )
    assert f"{neg['teacher_share']:.3f}" in row and f"{first['overall']['shares'][0]['teacher_share']:.3f}" in row


def test_teachers_with_different_label_sets_are_refused_naming_the_teacher(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_run(
        tmp_path / "yesno", {i: ("yes" if lab == "pos" else "no") for i, lab in TRUTH.items()}, label_set=["no", "yes"]
    )
    code, _, err = estimate(capsys, humans(tmp_path), run, other, out=tmp_path / "e")
    one_line_error(code, err, f"teacher {other} has 'no', 'yes'; lacks 'neg', 'pos'", "give --labels")
    assert not (tmp_path / "e").exists()


def test_a_cascade_run_says_its_human_queue_is_outside_the_population(tmp_path: Path) -> None:
    """A cascade run leaves its unsure rows to people: no teacher label, so they are outside the population. The human
    items among them were reported as rows 'the teacher failed on', and nothing said the shares leave out the
    hardest rows."""
    from annotator.audit.humans import load_humans
    from annotator.audit.teacher import TeacherAnnotations
    from annotator.estimate.data import join

    queue = {f"i{k}" for k in range(0, 120, 6)}
    kept = {i: lab for i, lab in TRUTH.items() if i not in queue}
    teacher = TeacherAnnotations(
        labels=kept,
        confidence={},
        failed=[],
        ids=set(TRUTH),
        source="run",
        path="runs/c",
        manifest_labels=LABELS,
        left_to_humans=queue,
    )
    j = join(load_humans(humans(tmp_path)), teacher)
    assert len(j.ids) == 100 and len(j.rows) == 50
    assert not any("failed on" in n for n in j.notes)
    assert any(
        "a cascade run: its 20 rows left to humans" in n
        and "(10 of the human items are among them)" in n
        and "stages/NAME" in n
        for n in j.notes
    ), j.notes


# -- options -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra,message",
    [
        (("--by", "lang", "--by", "lang"), "--by 'lang' is given twice"),
        (("--labels", " , "), "--labels ' , ' names no label"),
    ],
)
def test_repeated_by_and_empty_labels_are_refused(
    extra: tuple[str, ...], message: str, tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = estimate(capsys, humans(tmp_path), run, out=tmp_path / "e", extra=extra)
    one_line_error(code, err, message)


def test_a_column_with_a_value_per_item_lists_its_slices_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--by on an id-like column: one too-small slice per item; estimate.md names them on one line (a section per
    slice before: 120 headings), the JSON keeps them all, and a real slice next to them is still estimated."""
    pl.DataFrame(
        {
            "id": list(TRUTH),
            "text": "t",
            "uniq": [f"u{k}" for k in range(120)],
            "half": ["a" if k < 60 else "b" for k in range(120)],
        }
    ).write_csv(tmp_path / "input.csv")
    run = write_run(tmp_path / "run", TRUTH, label_set=LABELS)
    manifest = json.loads((run / "run.json").read_text())
    manifest["config"] = {"input": {"path": str(tmp_path / "input.csv"), "id_column": "id"}}
    (run / "run.json").write_text(json.dumps(manifest))
    h = humans(tmp_path, n=120)
    code, out, err = estimate(capsys, h, run, out=tmp_path / "e", extra=("--by", "uniq", "--no-plots", "--json"))
    assert code == 0, err
    slices = json.loads(out)["teachers"][0]["slices"]
    assert len(slices) == 120 and all(s["too_small"] for s in slices)
    md = (tmp_path / "e/estimate.md").read_text()
    assert "####" not in md and md.count("Too small to estimate") == 1 and "and 70 more" in md
    code, out, err = estimate(capsys, h, run, out=tmp_path / "e", extra=("--by", "half", "--no-plots", "--json"))
    assert code == 0, err
    half = {s["slice"]: s for s in json.loads(out)["teachers"][0]["slices"]}
    a_share = half["a"]["shares"][1]
    assert (half["a"]["population"], half["a"]["n_humans"]) == (60, 60)
    assert a_share["teacher_share"] == pytest.approx(np.mean([TRUTH[f"i{k}"] == "pos" for k in range(60)]))


def test_unequal_weights_note_the_effective_number_of_human_items(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """40 'neg' items carry the label, but one of them weighs as much as all the others: the normal interval
    rests on few items, which the report says (Kish's effective number), though 40 items have the label."""
    ids = list(TRUTH)
    negs = [i for i in ids if TRUTH[i] == "neg"][:40]
    sample = negs + [i for i in ids if TRUTH[i] == "pos"][:40]
    prob = [0.02 if i == negs[0] else 1.0 for i in sample]
    pl.DataFrame({"item_id": sample, "label": [TRUTH[i] for i in sample], "inclusion_prob": prob}).write_csv(
        tmp_path / "h.csv"
    )
    code, out, err = estimate(capsys, tmp_path / "h.csv", run, out=tmp_path / "e", extra=("--json", "--no-plots"))
    assert code == 0, err
    share = json.loads(out)["teachers"][0]["overall"]["shares"][0]
    assert share["humans_with_label"] == 40
    assert "effective number under the weights) have neg (" in " ".join(err.split())


# -- outputs -----------------------------------------------------------------------------------------------------


def test_out_never_replaces_files_estimate_did_not_write(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "estimate.md").write_text("my notes")
    code, _, err = estimate(capsys, humans(tmp_path), run, out=mine)
    one_line_error(code, err, "estimate.md already exist(s) and were not written by `annotator estimate`")
    assert (mine / "estimate.md").read_text() == "my notes"
    code, _, err = estimate(capsys, humans(tmp_path), run, out=run)
    one_line_error(code, err, f"--out {run} is the --teacher {run}")
    assert sorted(p.name for p in run.iterdir()) == ["annotations.jsonl", "run.json"]
    code, _, err = estimate(capsys, humans(tmp_path), run, out=mine.parent / "e")  # its own folder: replaced
    assert code == 0, err
    code, _, err = estimate(capsys, humans(tmp_path), run, out=mine.parent / "e")
    assert code == 0, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


@pytest.mark.parametrize(
    "failure",
    [OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EACCES, "Permission denied"), KeyboardInterrupt()],
)
def test_a_full_disk_or_ctrl_c_while_writing_leaves_the_previous_estimate(
    failure: BaseException,
    tmp_path: Path,
    run: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: estimate.json (and forest.png) replaced, estimate.md not, and estimate.md.tmp left behind."""
    out = tmp_path / "e"
    code, _, err = estimate(capsys, humans(tmp_path), run, out=out)
    assert code == 0, err
    before = snapshot(out)
    calls = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # the plot and estimate.json are written; estimate.md fails
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        if calls[-1].endswith("estimate.md.tmp"):
            raise failure
        real_fsync(fd)

    monkeypatch.setattr(annotator.rundir.os, "fsync", fsync)
    code, _, err = estimate(capsys, humans(tmp_path, n=90), run, out=out)
    if isinstance(failure, KeyboardInterrupt):
        assert code == 130, err
    else:
        one_line_error(code, err, f"cannot write the estimate in {out}: {failure.strerror}")  # type: ignore[attr-defined]
    assert any(c.endswith("estimate.json.tmp") for c in calls) and calls[-1].endswith("estimate.md.tmp")
    assert snapshot(out) == before  # every file as it was, no temporary file left
    monkeypatch.undo()
    code, _, err = estimate(capsys, humans(tmp_path, n=90), run, out=out)
    assert code == 0 and snapshot(out) != before


def test_no_plots_removes_the_plot_of_an_earlier_estimate(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "e"
    assert estimate(capsys, humans(tmp_path), run, out=out)[0] == 0
    assert (out / "forest.png").exists()
    assert estimate(capsys, humans(tmp_path, n=90), run, out=out, extra=("--no-plots",))[0] == 0
    assert not (out / "forest.png").exists()  # it showed the other estimate's numbers


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
"""


def test_a_second_estimate_waits_for_the_process_writing_the_same_out(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two estimates into one folder: both used estimate.json.tmp, and the second failed with 'No such file or
    directory; free space ...' (or files of both runs were mixed). The folder's lock makes the second wait."""
    out = tmp_path / "e"
    out.mkdir()
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out / ".estimate.lock"), str(release)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result: list[tuple[int, str, str]] = []
        worker = threading.Thread(
            target=lambda: result.append(estimate(capsys, humans(tmp_path), run, out=out, extra=("--no-plots",)))
        )
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and not (out / "estimate.json").exists()  # waiting, nothing written
        release.touch()
        worker.join(timeout=60)
    finally:
        release.touch()
        holder.wait(timeout=10)
    assert result and result[0][0] == 0, result
    assert json.loads((out / "estimate.json").read_text())["teachers"]


# -- sample: every item can be drawn, and the written probabilities are the real ones ------------------------------


def candidates(confidences: list[float | None], labels: list[str]) -> list[sp.Candidate]:
    return [
        sp.Candidate(id=f"c{i}", text="", label=labels[i % len(labels)], confidence=c)
        for i, c in enumerate(confidences)
    ]


def test_uncertain_gives_every_confidence_band_a_draw(tmp_path: Path) -> None:
    """100 unsure items and 10 confident ones, 50 draws: the confident band got 0 draws, so its items had inclusion
    probability 0 and every weighted estimate (the audit's design-corrected accuracy) ignored them."""
    cands = candidates([0.2] * 100 + [1.0] * 10, LABELS)
    strata = {s.name: s for s in sp.draw(cands, 50, "uncertain", 0, LABELS).strata}
    assert strata["[0.9, 1.0]"].drawn >= 1 and strata["[0.9, 1.0]"].inclusion_prob > 0
    with pytest.raises(InputDataError, match="--strategy stratified needs --n of at least the number of its strata"):
        sp.draw(candidates([0.9] * 30, ["a", "b", "c"]), 2, "stratified", 0, ["a", "b", "c"])


MIXED = [1 / 3] * 3 + [2 / 3] * 7 + [1.0] * 20 + [0.95] * 2
UNSURE = [0.2] * 22 + [1.0] * 10  # uncertain, 5 draws: the confident band got none (probability 0)


@pytest.mark.parametrize(
    "strategy,n,confs",
    [
        ("confidence", 8, MIXED),
        ("uncertain", 6, MIXED),
        ("uncertain", 5, UNSURE),
        ("stratified", 6, MIXED),
        ("random", 5, MIXED),
    ],
)
def test_written_inclusion_probabilities_are_the_draws_frequencies(strategy: str, n: int, confs: list[float]) -> None:
    """32 items, 3000 seeds: each item's share of the draws that contain it matches the inclusion_prob written for
    it (within 4 standard errors), every item has a positive probability, and one item always gets one value."""
    cands = candidates(confs, ["a", "b", "c"])  # type: ignore[arg-type]
    seeds = 3000
    hits = np.zeros(len(cands))
    written: dict[str, set[float]] = {}
    for seed in range(seeds):
        sample = sp.draw(cands, n, strategy, seed, ["a", "b", "c"])
        for c, p in zip(sample.items, sample.inclusion_prob):
            hits[int(c.id[1:])] += 1
            written.setdefault(c.id, set()).add(p)
    assert all(len(v) == 1 for v in written.values())
    pi = np.array([next(iter(written[c.id])) for c in cands])  # KeyError: an item never drawn
    assert np.all(pi > 0)
    se = np.sqrt(pi * (1 - pi) / seeds)
    assert np.all(np.abs(hits / seeds - pi) <= 4 * se + 1e-12), (hits / seeds, pi)


@pytest.mark.parametrize(
    "confidence,n,expected",
    [
        (None, 10, [("no confidence", 120, 10)]),  # samples: 1 without confidences
        (1.0, 10, [("1.000", 120, 10)]),  # every confidence equal
        (1.0, 500, [("1.000", 120, 120)]),  # n larger than the run: every item, pi = 1
    ],
)
def test_confidence_strategy_degenerate_runs(
    confidence: float | None,
    n: int,
    expected: list[tuple[str, int, int]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = write_run(tmp_path / "run", TRUTH, label_set=LABELS, confidence=confidence)
    code, out, err = cli(
        [
            "sample",
            str(run),
            "--strategy",
            "confidence",
            "--n",
            str(n),
            "--per-item",
            "1",
            "--annotators",
            "1",
            "--out",
            str(tmp_path / "s"),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    strata = json.loads(out)["design"]["strata"]
    assert [(s["name"], s["size"], s["drawn"]) for s in strata] == expected
    sheet = pl.read_csv(tmp_path / "s/sheet_long.csv")
    assert sheet["inclusion_prob"].to_list() == [expected[0][2] / 120] * expected[0][2]
    code, _, err = cli(
        ["sample", str(run), "--strategy", "confidence", "--n", "0", "--out", str(tmp_path / "z")], capsys
    )
    one_line_error(code, err, "--n must be at least 1")


def test_a_pilot_that_does_not_match_the_run_names_the_pilot(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pilot.csv").write_text("item_id,label\nz1,pos\nz2,neg\n")
    code, _, err = cli(
        [
            "sample",
            str(run),
            "--strategy",
            "confidence",
            "--n",
            "10",
            "--per-item",
            "1",
            "--annotators",
            "1",
            "--pilot",
            str(tmp_path / "pilot.csv"),
            "--out",
            str(tmp_path / "s"),
        ],
        capsys,
    )
    one_line_error(code, err, f"--pilot {tmp_path / 'pilot.csv'}: 2 of 2 human item ids are not in the teacher's")


# -- statistics: zero variance -----------------------------------------------------------------------------------


def test_humans_agreeing_with_the_teacher_everywhere_do_not_give_a_zero_width_interval() -> None:
    """100 of 1,000 items, humans agree with the teacher on every one: the design variance of the corrected share is
    0 (an interval of width 0, which misses the truth whenever the teacher errs anywhere else). With half an item
    added to each cell of the (human, teacher) table, lambda = 1 gives Agresti & Min's variance: the pseudo
    disagreements (+1 and -1, half an item each) among 102 items, (1 - n/N) * sum (r - mean)^2 / ((n - 1) n)."""
    rng = np.random.default_rng(0)
    F = np.eye(2)[rng.integers(0, 2, 100)]
    prob = np.full(100, 0.1)
    e = share_estimates(F, F, prob, np.ones(100, dtype=bool), F.mean(axis=0), 1000, lam=np.ones(2))
    r = np.concatenate([np.zeros(100), [0.0, -1.0, 1.0, 0.0]])
    weights = np.concatenate([np.ones(100), np.full(4, 0.5)])
    ss = weights @ (r - weights @ r / weights.sum()) ** 2
    assert e.corrected_se[0] == pytest.approx(np.sqrt(0.9 * ss / (99 * 100)))
    assert e.corrected_high[0] - e.corrected_low[0] > 0.01
    plain = share_estimates(F, F, prob, np.ones(100, dtype=bool), F.mean(axis=0), 1000, lam=np.ones(2), pseudo=0)
    assert plain.corrected_se[0] == 0.0
    census = share_estimates(F, F, np.ones(100), np.ones(100, dtype=bool), F.mean(axis=0), 100)
    assert np.all(census.corrected_se == 0.0)  # every item labelled: no sampling error at all
