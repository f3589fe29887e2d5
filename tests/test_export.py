"""`annotator export`: run dir -> DatasetDict (save_to_disk + Parquet + card + export.json)."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from annotator.errors import AnnotatorError, InputDataError

from label_runs import LABELS, export, make_gen_run, make_label_run

datasets = pytest.importorskip("datasets")

# ------------------------------------------------------------------------------------------------ label


def test_export_single_label(tmp_path):
    run = make_label_run(tmp_path / "run")
    out = tmp_path / "ds"
    s = export(run, out, seed=7, min_confidence=0.5)

    # 40 rows: 4 failed (i=9,19,29,39), low confidence at i=0,8,16,24,32 -> 5 below threshold
    assert s.counts.total == 40
    assert s.counts.failed_excluded == 4
    assert s.counts.below_threshold_excluded == 5
    assert s.counts.exported_rows == 31 == sum(s.counts.per_split.values())

    dsd = datasets.load_from_disk(str(out))
    assert list(dsd) == ["train", "validation", "test"]
    feat = dsd["train"].features
    assert isinstance(feat["label"], datasets.ClassLabel)
    assert feat["label"].names == LABELS
    assert {"id", "text", "label", "confidence", "rationale"} <= set(feat)
    sizes = {k: len(v) for k, v in dsd.items()}
    assert sizes == s.counts.per_split
    # splits are dealt over the 40 input rows by id hash (32/4/4), then the 9 dropped rows leave
    from annotator.export.splits import assign_by_id

    by_id = assign_by_id([f"n{i:03d}" for i in range(40)], {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=7)
    assert Counter(by_id.values()) == {"train": 32, "validation": 4, "test": 4}
    assert all(by_id[i] == split for split, d in dsd.items() for i in d["id"])
    assert s.split_method == "item id" and s.gold is None
    ids = [i for split in dsd.values() for i in split["id"]]
    assert len(ids) == len(set(ids)) == 31
    assert all(min(c) >= 0.5 for c in [d["confidence"] for d in dsd.values()])
    # the label distribution recorded per split
    for split, d in dsd.items():
        counts = Counter(feat["label"].int2str(x) for x in d["label"])
        assert s.label_distribution[split] == {lab: counts.get(lab, 0) for lab in LABELS}

    # parquet copy + export.json + card
    for split, n in sizes.items():
        p = out / "parquet" / f"{split}.parquet"
        assert p.is_file()
        assert len(datasets.Dataset.from_parquet(str(p))) == n
    ej = json.loads((out / "export.json").read_text())
    assert ej["counts"]["failed_excluded"] == 4 and ej["counts"]["below_threshold_excluded"] == 5
    assert ej["template_sha256"] == "ab" * 32 and ej["teacher_model"] == "teacher-model-x"
    assert ej["audit_summary"] is None  # no audit yet (test_audit_headlines_from_annotator_report has one)
    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    import yaml

    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["annotator"]["teacher_model"] == "teacher-model-x"
    assert meta["annotator"]["template_sha256"] == "ab" * 32
    assert [x["num_examples"] for x in meta["dataset_info"]["splits"]] == list(sizes.values())
    assert "No audit report was found" in card
    assert "failed (excluded) | 4" in card
    assert "`politics`" in card  # label distribution table
    assert "samples: 3" in card  # pipeline config


def test_split_is_seeded(tmp_path):
    run = make_label_run(tmp_path / "run", n=60, failed_every=0, low_every=0)
    a = export(run, tmp_path / "a", seed=1)
    export(run, tmp_path / "b", seed=1)
    c = export(run, tmp_path / "c", seed=2)
    ids = lambda p: {s: sorted(d["id"]) for s, d in datasets.load_from_disk(str(p)).items()}
    assert ids(tmp_path / "a") == ids(tmp_path / "b")
    assert ids(tmp_path / "a") != ids(tmp_path / "c")
    assert a.counts.per_split == c.counts.per_split == {"train": 48, "validation": 6, "test": 6}


def test_splits_do_not_depend_on_the_teacher(tmp_path):
    """Two teachers of one input (different labels, different failures) share every split; gold stratifies."""
    import json as _json

    a = make_label_run(tmp_path / "a", n=60, failed_every=0, low_every=0)
    b = make_label_run(tmp_path / "b", n=60, failed_every=7, low_every=0)
    lines = (b / "annotations.jsonl").read_text().splitlines()
    flipped = []
    for line in lines:  # teacher b disagrees with a on every label
        rec = _json.loads(line)
        if rec["status"] == "ok":
            rec["label"] = rec["output"]["label"] = LABELS[(LABELS.index(rec["label"]) + 1) % 3]
        flipped.append(_json.dumps(rec))
    (b / "annotations.jsonl").write_text("\n".join(flipped) + "\n")
    ids = lambda p: {i: s for s, d in datasets.load_from_disk(str(p)).items() for i in d["id"]}
    export(a, tmp_path / "da")
    export(b, tmp_path / "db")
    sa, sb = ids(tmp_path / "da"), ids(tmp_path / "db")
    assert len(sb) < len(sa) == 60 and all(sa[i] == s for i, s in sb.items())

    gold = tmp_path / "gold.csv"  # 40 sport, 20 politics by gold: each class split 0.8/0.1/0.1 exactly
    gold.write_text("item_id,label\n" + "".join(f"n{i:03d},{'sport' if i < 40 else 'politics'}\n" for i in range(60)))
    s = export(a, tmp_path / "dg", gold=gold)
    assert s.split_method == "item id, gold strata" and s.gold == str(gold)
    by_split = ids(tmp_path / "dg")
    for split, n_sport, n_pol in (("train", 32, 16), ("validation", 4, 2), ("test", 4, 2)):
        got = [i for i, sp in by_split.items() if sp == split]
        assert sum(int(i[1:]) < 40 for i in got) == n_sport and sum(int(i[1:]) >= 40 for i in got) == n_pol


def test_two_way_split_and_overwrite(tmp_path):
    run = make_label_run(tmp_path / "run", n=20, failed_every=0, low_every=0)
    out = tmp_path / "ds"
    export(run, out, split="0.75,0.25")
    s = export(run, out, split="0.5,0.5")  # re-export replaces the previous one
    dsd = datasets.load_from_disk(str(out))
    assert list(dsd) == ["train", "test"] and s.counts.per_split == {"train": 10, "test": 10}
    assert not (out.parent / ".ds.partial").exists()


def test_tiny_classes_fall_back_to_train(tmp_path):
    from annotator.export.splits import parse_split_spec, stratified_assign

    strata = ["a"] * 20 + ["b"] * 2 + ["c"]
    split = stratified_assign(strata, parse_split_spec("0.8,0.1,0.1"), seed=0)
    assert Counter(split) == {"train": 19, "validation": 2, "test": 2}  # 18.4/2.3/2.3
    got = Counter(zip(strata, split))
    assert got[("c", "train")] == 1 and got[("b", "train")] >= 1


def test_export_multi_label(tmp_path):
    run = make_label_run(tmp_path / "run", n=30, multi_label=True)
    s = export(run, tmp_path / "ds")
    dsd = datasets.load_from_disk(str(tmp_path / "ds"))
    feat = dsd["train"].features["labels"]
    assert isinstance(feat, (datasets.Sequence, getattr(datasets, "List", datasets.Sequence)))
    assert isinstance(feat.feature, datasets.ClassLabel) and feat.feature.names == LABELS
    rows = {r["id"]: r["labels"] for d in dsd.values() for r in d}
    assert sorted(rows["n004"]) == [1, 2]  # i=4: economy + sport
    assert s.multi_label and s.counts.failed_excluded == 3
    assert "labels" in s.columns and "label" not in s.columns


def test_export_without_manifest_infers_labels(tmp_path):
    run = make_label_run(tmp_path / "run", n=12, failed_every=0, low_every=0)
    (run / "run.json").unlink()
    s = export(run, tmp_path / "ds")
    assert s.label_names == sorted(LABELS)
    assert any("no run.json" in n for n in s.notes)


def test_label_task_as_chat(tmp_path):
    run = make_label_run(tmp_path / "run", n=12, failed_every=0, low_every=0)
    export(run, tmp_path / "ds", fmt="chat")
    row = datasets.load_from_disk(str(tmp_path / "ds"))["train"][0]
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert row["messages"][2]["content"] in LABELS and "politics" in row["messages"][0]["content"]


# ------------------------------------------------------------------------------------------------ rephrase / qa


def test_rephrase_chat_and_instruction(tmp_path):
    run = make_gen_run(tmp_path / "run", "rephrase", n=11)
    s = export(run, tmp_path / "chat")
    assert s.format == "chat" and s.counts.failed_excluded == 1 and s.counts.exported_items == 10
    dsd = datasets.load_from_disk(str(tmp_path / "chat"))
    assert sum(len(d) for d in dsd.values()) == 20 == s.counts.exported_rows
    row = dsd["train"][0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["style"] in ("formal", "casual") and row["messages"][2]["content"].split()[0].lower() == row["style"]
    # both paraphrases of one source item stay in one split
    where = {}
    for split, d in dsd.items():
        for src in d["source_id"]:
            assert where.setdefault(src, split) == split
    assert s.style_distribution["all"] == {"casual": 10, "formal": 10}

    s2 = export(run, tmp_path / "inst", fmt="instruction")
    d2 = datasets.load_from_disk(str(tmp_path / "inst"))["train"]
    assert {"instruction", "input", "output", "style", "source_id"} <= set(d2.column_names)
    assert d2[0]["input"].startswith("Document") and s2.format == "instruction"


def test_qa_chat(tmp_path):
    run = make_gen_run(tmp_path / "run", "qa", n=6)
    s = export(run, tmp_path / "ds", split="0.6,0.2,0.2", min_confidence=0.9)
    dsd = datasets.load_from_disk(str(tmp_path / "ds"))
    row = dsd["train"][0]
    assert "Passage:" in row["messages"][1]["content"] and row["messages"][2]["content"] == "North."
    assert row["evidence"] == "The river Arn flows north."
    assert s.counts.exported_rows == 5 and any("ignored" in n for n in s.notes)
    with pytest.raises(AnnotatorError, match="classification"):
        export(run, tmp_path / "bad", fmt="classification")


# ------------------------------------------------------------------------------------------------ errors / CLI


def test_missing_run_dir(tmp_path):
    with pytest.raises(InputDataError, match="not found"):
        export(tmp_path / "nope", tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputDataError, match="annotations.jsonl"):
        export(tmp_path / "empty", tmp_path / "ds")


@pytest.mark.parametrize("spec", ["0.8,0.1", "a,b,c", "0.8,0.1,0.1,0", "0.5,0.6,0.1", "0,0.5,0.5", "-0.2,0.6,0.6", ""])
def test_bad_split(tmp_path, spec):
    run = make_label_run(tmp_path / "run", n=10)
    if spec == "0.8,0.1":
        with pytest.raises(AnnotatorError):
            export(run, tmp_path / "ds", split="0.8,0.1")  # sums to 0.9
        return
    with pytest.raises(AnnotatorError, match="--split"):
        export(run, tmp_path / "ds", split=spec)


def test_refuses_to_clobber_other_dirs(tmp_path):
    run = make_label_run(tmp_path / "run", n=10)
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(AnnotatorError, match="refusing"):
        export(run, other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_all_failed_is_an_error(tmp_path):
    run = make_label_run(tmp_path / "run", n=3, failed_every=1)
    with pytest.raises(AnnotatorError, match="nothing to export"):
        export(run, tmp_path / "ds")


def test_cli_export(tmp_path, capsys):
    from annotator.cli import main

    run = make_label_run(tmp_path / "run", n=20)
    with pytest.raises(SystemExit) as exc:
        main(["export", str(run), "--split", "0.8,0.2", "--seed", "3", "--min-confidence", "0.9"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "20 annotated rows" in out and "2 failed" in out
    assert (run / "dataset" / "dataset_dict.json").is_file()  # default --out RUN/dataset

    with pytest.raises(SystemExit) as exc:
        main(["export", str(tmp_path / "missing")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not found" in err and "Traceback" not in err

    with pytest.raises(SystemExit) as exc:
        main(["export", str(run), "--split", "80/20"])
    assert exc.value.code == 2
    assert "--split" in capsys.readouterr().err


def test_headlines_of_an_audit_whose_alt_test_did_not_run(tmp_path, capsys):
    """An alt-test that did not run leaves undefined statistics (null in report.json): export still reads the
    report (found by the make chain: export refused every report with fewer than 30 items per annotator)."""
    from test_audit_cli import audit_cli, make_data  # tests/ is on sys.path

    from annotator.export.dataset_builder import load_audit_summary

    humans, run = make_data(tmp_path)
    code, _, _ = audit_cli(
        [
            "--humans",
            str(humans),
            "--teacher",
            str(run),
            "--out",
            str(run / "audit"),
            "--bootstrap",
            "20",
            "--alt-test-min-items",
            "1000",
        ],
        capsys,
    )
    assert code == 0
    report = json.loads((run / "audit" / "report.json").read_text())
    assert report["alt_test"]["ran"] is False and report["alt_test"]["winning_rate"] is None
    got, _ = load_audit_summary(run)
    assert got["coverage.evaluated_items"] == 40
    assert "alt_test.winning_rate" not in got


def test_audit_headlines_from_annotator_report(tmp_path, capsys):
    """The headlines come from the report `annotator audit` wrote, read through its pydantic model; a damaged
    report.json is one error line naming the file."""
    from test_audit_cli import audit_cli, make_data  # tests/ is on sys.path

    from annotator.cli import main
    from annotator.export.dataset_builder import load_audit_summary
    from annotator.export.summary import ExportError

    humans, run = make_data(tmp_path)
    code, _, _ = audit_cli(
        [
            "--humans",
            str(humans),
            "--teacher",
            str(run),
            "--out",
            str(run / "audit"),
            "--bootstrap",
            "20",
            "--seed",
            "1",
        ],
        capsys,
    )
    assert code == 0
    report = json.loads((run / "audit" / "report.json").read_text())
    got, path = load_audit_summary(run)
    assert path == str(run / "audit" / "report.json")
    assert got["coverage.evaluated_items"] == report["coverage"]["evaluated_items"] == 40
    assert got["classification.accuracy"] == round(report["classification"]["accuracy"]["value"], 4)
    kappa = report["agreement"]["teacher_vs_majority"]["cohen_kappa"]["value"]
    assert got["agreement.teacher_vs_majority.cohen_kappa"] == round(kappa, 4)
    assert got["gate.metric"] == report["gate"]["metric"]
    assert got["low_agreement_categories"] == (", ".join(report["low_agreement_categories"]) or "none")
    assert "gate.min_agreement" not in got  # unset scalars are left out (no --min-agreement)
    card = export(run, tmp_path / "ds").out and (tmp_path / "ds" / "README.md").read_text()
    alpha = round(report["agreement"]["human_human"]["krippendorff_alpha"]["value"], 4)
    assert f"agreement.human_human.krippendorff_alpha | {alpha:.4g}" in card

    for damaged in ("{not json", json.dumps({"kappa": 0.5, "nested": {"alpha": 0.4}})):
        (run / "audit" / "report.json").write_text(damaged)
        with pytest.raises(ExportError, match="report.json is not an audit report") as exc:
            load_audit_summary(run)
        assert "\n" not in str(exc.value)
        with pytest.raises(SystemExit) as ex:
            main(["export", str(run), "--out", str(tmp_path / "ds2")])
        assert ex.value.code == 2
        err = capsys.readouterr().err
        assert str(run / "audit" / "report.json") in err.replace("\n", "") and "Traceback" not in err
        assert not (tmp_path / "ds2").exists()


def test_export_never_deletes_files_it_did_not_write(tmp_path):
    """A folder with a dataset_dict.json (not written by export) plus the user's own files is refused, untouched;
    re-exporting into export's own folder replaces only the files its export.json lists."""
    run = make_label_run(tmp_path / "run", n=20, failed_every=0, low_every=0)
    foreign = tmp_path / "mine"
    (foreign / "train").mkdir(parents=True)
    (foreign / "dataset_dict.json").write_text('{"splits": ["train"]}')
    (foreign / "train" / "notes.txt").write_text("my notes")
    (foreign / "model.bin").write_bytes(b"\x00weights")
    before = sorted(p.relative_to(foreign).as_posix() for p in foreign.rglob("*"))
    with pytest.raises(AnnotatorError, match="refusing"):
        export(run, foreign)
    assert sorted(p.relative_to(foreign).as_posix() for p in foreign.rglob("*")) == before
    assert (foreign / "train" / "notes.txt").read_text() == "my notes"

    out = tmp_path / "ds"
    first = export(run, out, split="0.8,0.1,0.1")
    assert "export.json" in first.files and "dataset_dict.json" in first.files
    assert any(f.startswith("validation/") for f in first.files)
    (out / "my_analysis.ipynb").write_text("{}")
    (out / "train" / "keep.txt").write_text("mine too")
    second = export(run, out, split="0.5,0.5")  # no validation split this time
    assert (out / "my_analysis.ipynb").read_text() == "{}"
    assert (out / "train" / "keep.txt").read_text() == "mine too"
    assert not (out / "validation").exists()  # the previous export's own files (and emptied folders) went
    assert list(datasets.load_from_disk(str(out))) == ["train", "test"]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(second.files) | {"my_analysis.ipynb", "train/keep.txt"}

    # a file of the user's where export wants to write one: refused, nothing changed
    (out / "parquet" / "validation.parquet").write_text("user data")
    with pytest.raises(AnnotatorError, match="not written by export"):
        export(run, out, split="0.8,0.1,0.1")
    assert (out / "parquet" / "validation.parquet").read_text() == "user data"
    assert (out / "my_analysis.ipynb").exists() and not (out.parent / ".ds.partial").exists()


def test_stratify_by_an_input_column_splits_every_slice(tmp_path):
    """--stratify-by language: 30 en / 20 de / 10 fr rows are each split 0.8/0.1/0.1 exactly (hand-computed)."""
    run = make_label_run(tmp_path / "a", n=60, failed_every=0, low_every=0)
    lang = {f"n{i:03d}": "en" if i % 6 < 3 else ("de" if i % 6 < 5 else "fr") for i in range(60)}
    inp = tmp_path / "input.csv"
    inp.write_text("id,text,language\n" + "".join(f"{i},story {i},{lg}\n" for i, lg in lang.items()))
    manifest = json.loads((run / "run.json").read_text())
    manifest["config"] = {"input": {"path": str(inp), "id_column": "id"}}
    (run / "run.json").write_text(json.dumps(manifest))
    s = export(run, tmp_path / "d", stratify_by="language")
    assert s.split_method == "item id, language strata" and s.stratify_by == "language"
    got = Counter(
        (lang[i], split) for split, d in datasets.load_from_disk(str(tmp_path / "d")).items() for i in d["id"]
    )
    assert got == Counter(
        {
            ("en", "train"): 24,
            ("en", "validation"): 3,
            ("en", "test"): 3,
            ("de", "train"): 16,
            ("de", "validation"): 2,
            ("de", "test"): 2,
            ("fr", "train"): 8,
            ("fr", "validation"): 1,
            ("fr", "test"): 1,
        }
    )
    with pytest.raises(InputDataError, match="no column 'region' in"):
        export(run, tmp_path / "d2", stratify_by="region")
