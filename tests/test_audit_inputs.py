"""Loading human and teacher annotations, and clear messages for bad input."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from annotator.audit.dataset import build
from annotator.audit.humans import load_humans
from annotator.audit.teacher import load_teacher
from annotator.errors import InputDataError
from annotator.records import AnnotationRecord, LabelInfo, RunManifest

LABELS = ["pos", "neg", "neu"]


def write_run(
    dirpath: Path,
    labels: dict[str, str | None],
    confidence: float | None = 0.9,
    label_set: list[str] | None = LABELS,
    **manifest_kw: object,
) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    with (dirpath / "annotations.jsonl").open("w") as fh:
        for item, lab in labels.items():
            rec = AnnotationRecord(
                id=item,
                text=f"text {item}",
                task="label",
                status="ok" if lab else "failed",
                output={"label": lab} if lab else None,
                label=lab,
                confidence=confidence if lab else None,
                error=None if lab else "boom",
                model="tiny",
                prompt_hash="h",
            )
            fh.write(rec.model_dump_json() + "\n")
    manifest = RunManifest(
        pipeline_name="t",
        pipeline_path="p.yaml",
        config={},
        task=manifest_kw.pop("task", "label"),  # type: ignore[arg-type]
        labels=[LabelInfo(name=x) for x in (label_set or [])],
        template_path="t",
        template_sha256="s",
        backend="fake",
        model="tiny",
        started_at="2025-01-01T00:00:00",
        annotator_version="0.1.0",
        **manifest_kw,
    )
    (dirpath / "run.json").write_text(manifest.model_dump_json())
    return dirpath


def long_rows() -> list[dict[str, str]]:
    return [
        {"item_id": "i1", "annotator": "a", "label": "pos"},
        {"item_id": "i1", "annotator": "b", "label": "pos"},
        {"item_id": "i2", "annotator": "a", "label": "neg"},
        {"item_id": "i2", "annotator": "b", "label": "neu"},
        {"item_id": "i2", "annotator": "c", "label": "neg"},
        {"item_id": "i3", "annotator": "c", "label": "neu"},
        {"item_id": "i3", "annotator": "b", "label": "neu"},
    ]


def test_long_and_wide_formats_agree(tmp_path: Path) -> None:
    pl.DataFrame(long_rows()).write_csv(tmp_path / "long.csv")
    (tmp_path / "wide.csv").write_text("id,text,a,b,c\ni1,hello,pos,pos,\ni2,x,neg,neu,neg\ni3,y,,neu,neu\n")
    pl.DataFrame(long_rows()).write_ndjson(tmp_path / "long.jsonl")
    pl.read_csv(tmp_path / "wide.csv").write_parquet(tmp_path / "wide.parquet")
    long = load_humans(tmp_path / "long.csv")
    assert long.format == "long" and long.annotators == ["a", "b", "c"]
    for name in ("wide.csv", "long.jsonl", "wide.parquet"):
        other = load_humans(tmp_path / name)
        assert other.ratings == long.ratings, name
        assert sorted(other.annotators) == ["a", "b", "c"]
    wide = load_humans(tmp_path / "wide.csv")
    assert wide.format == "wide" and wide.ignored_columns == ["text"]


def test_numeric_labels_from_parquet_match_teacher_strings(tmp_path: Path) -> None:
    pl.DataFrame({"item_id": ["i1", "i2"], "a": [1.0, 2.0], "b": [1, None]}).write_parquet(tmp_path / "r.parquet")
    h = load_humans(tmp_path / "r.parquet")
    assert h.ratings == {"i1": {"a": "1", "b": "1"}, "i2": {"a": "2"}}


def test_run_dir_failed_records_are_excluded_and_counted(tmp_path: Path) -> None:
    pl.DataFrame(long_rows()).write_csv(tmp_path / "h.csv")
    run = write_run(tmp_path / "run", {"i1": "pos", "i2": None, "i3": "neu", "i4": "neg"})
    teacher = load_teacher(run)
    assert teacher.failed == ["i2"] and teacher.manifest_labels == LABELS
    assert teacher.confidence == {"i1": 0.9, "i3": 0.9, "i4": 0.9}
    d = build(load_humans(tmp_path / "h.csv"), teacher)
    assert d.items == ["i1", "i3"]
    assert d.coverage["teacher_failed_on_human_items"] == 1 and d.coverage["teacher_only_items"] == 1
    assert any("teacher failed" in w for w in d.warnings)
    # the annotations file itself works too
    assert load_teacher(run / "annotations.jsonl").labels == teacher.labels


def test_teacher_table_with_confidence(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,label,confidence\ni1,pos,0.5\ni2,,\ni3,neu,1\n")
    t = load_teacher(tmp_path / "t.csv")
    assert t.labels == {"i1": "pos", "i3": "neu"} and t.failed == ["i2"] and t.confidence == {"i1": 0.5, "i3": 1.0}
    assert t.manifest_labels is None


def test_label_set_from_observed_sorted_numerically(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("item_id,a,b\ni1,10,2\ni2,2,1\n")
    (tmp_path / "t.csv").write_text("item_id,label\ni1,2\ni2,1\n")
    d = build(load_humans(tmp_path / "h.csv"), load_teacher(tmp_path / "t.csv"), level="interval")
    assert d.labels == ["1", "2", "10"] and list(d.values) == [1.0, 2.0, 10.0]


# ----------------------------------------------------------------- bad input


def err(fn, *args, **kw) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InputDataError) as exc:
        fn(*args, **kw)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    assert "empty" in err(load_humans, tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("item_id,annotator,label\n")
    assert "no rows" in err(load_humans, tmp_path / "header.csv")
    assert "empty" in err(load_teacher, tmp_path / "empty.csv")
    assert "not found" in err(load_humans, tmp_path / "missing.csv")


def test_one_annotator_and_simple_gold_files_load(tmp_path: Path) -> None:
    """One reader for audit and train-student: one annotator (long, wide) and item_id,label files load."""
    (tmp_path / "h.csv").write_text("item_id,annotator,label\ni1,a,pos\ni2,a,neg\n")
    h = load_humans(tmp_path / "h.csv")
    assert h.annotators == ["a"] and h.format == "long" and h.ratings == {"i1": {"a": "pos"}, "i2": {"a": "neg"}}
    (tmp_path / "w.csv").write_text("id,text,ann1\ni1,x,pos\n")
    assert load_humans(tmp_path / "w.csv").annotators == ["ann1"]
    (tmp_path / "g.csv").write_text("id,text,label\ni1,x,pos\ni2,y,\n")
    g = load_humans(tmp_path / "g.csv")
    assert g.format == "simple" and g.ratings == {"i1": {"label": "pos"}} and g.ignored_columns == ["text"]
    (tmp_path / "gold.csv").write_text("item_id,gold\ni1,neg\n")
    assert load_humans(tmp_path / "gold.csv").ratings == {"i1": {"gold": "neg"}}
    (tmp_path / "half.csv").write_text("item_id,annotator\ni1,a\n")
    assert "no 'label' column" in err(load_humans, tmp_path / "half.csv")
    run = write_run(tmp_path / "run", {"i1": "pos", "i2": "neg"})
    d = build(load_humans(tmp_path / "h.csv"), load_teacher(run))
    assert d.annotators == ["a"] and list(d.majority) == [0, 1]
    assert any("one human annotator" in w and "two or more" in w for w in d.warnings)


def test_no_id_column(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("item,a,b\ni1,pos,pos\n")
    assert "no item id column" in err(load_humans, tmp_path / "h.csv")


def test_conflicting_duplicate_ratings(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("item_id,annotator,label\ni1,a,pos\ni1,a,neg\ni1,b,pos\n")
    assert "a/i1" in err(load_humans, tmp_path / "h.csv")


def test_unknown_item_ids(tmp_path: Path) -> None:
    pl.DataFrame(long_rows()).write_csv(tmp_path / "h.csv")
    run = write_run(tmp_path / "run", {"i1": "pos", "i2": "neg"})
    msg = err(build, load_humans(tmp_path / "h.csv"), load_teacher(run))
    assert "'i3'" in msg and "not in the teacher's output" in msg


def test_labels_outside_label_set(tmp_path: Path) -> None:
    rows = long_rows()
    rows[0]["label"] = "Positive"
    rows[1]["label"] = "Positive"
    pl.DataFrame(rows).write_csv(tmp_path / "h.csv")
    run = write_run(tmp_path / "run", {"i1": "pos", "i2": "neg", "i3": "neu"})
    msg = err(build, load_humans(tmp_path / "h.csv"), load_teacher(run))
    assert "human labels outside the label set from run.json" in msg and "'Positive' (2x)" in msg
    pl.DataFrame(long_rows()).write_csv(tmp_path / "ok.csv")
    run2 = write_run(tmp_path / "run2", {"i1": "pos", "i2": "maybe", "i3": "neu"})
    assert "teacher labels outside" in err(build, load_humans(tmp_path / "ok.csv"), load_teacher(run2))
    assert "'neu'" in err(build, load_humans(tmp_path / "ok.csv"), load_teacher(run), labels=["pos", "neg"])


def test_interval_needs_numbers(tmp_path: Path) -> None:
    pl.DataFrame(long_rows()).write_csv(tmp_path / "h.csv")
    run = write_run(tmp_path / "run", {"i1": "pos", "i2": "neg", "i3": "neu"})
    assert "numeric labels" in err(build, load_humans(tmp_path / "h.csv"), load_teacher(run), level="interval")


def test_teacher_must_be_single_label(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"i1": "pos"}, multi_label=True)
    assert "multi-label" in err(load_teacher, run)
    (tmp_path / "t.csv").write_text("item_id,prediction\ni1,pos\n")
    assert "needs columns item_id (or id) and label" in err(load_teacher, tmp_path / "t.csv")
    (tmp_path / "c.csv").write_text("item_id,label,confidence\ni1,pos,high\n")
    assert "non-numeric confidence" in err(load_teacher, tmp_path / "c.csv")


def test_no_overlap_between_teacher_successes_and_humans(tmp_path: Path) -> None:
    pl.DataFrame(long_rows()).write_csv(tmp_path / "h.csv")
    run = write_run(tmp_path / "run", {"i1": None, "i2": None, "i3": None})
    assert "no successful label" in err(build, load_humans(tmp_path / "h.csv"), load_teacher(run))


def test_annotator_with_only_empty_ratings_is_reported_not_dropped_silently(tmp_path: Path, caplog) -> None:
    """Three annotator columns, one of them all empty: the alt-test runs with the two left (as the reference
    implementation does) but is weak, and both report.json and report.md say why (as does the log)."""
    import json
    import logging

    from annotator.audit.compute import AuditOptions
    from annotator.audit.run_audit import run_audit

    items = [f"i{k:02d}" for k in range(40)]
    teacher = {i: LABELS[k % 3] for k, i in enumerate(items)}
    run = write_run(tmp_path / "run", teacher)
    lines = ["id,a,b,c"] + [f"{i},{teacher[i]},{LABELS[(k // 5) % 3]}," for k, i in enumerate(items)]
    (tmp_path / "humans.csv").write_text("\n".join(lines) + "\n")

    with caplog.at_level(logging.WARNING, logger="annotator.audit.humans"):
        humans = load_humans(tmp_path / "humans.csv")
    assert humans.annotators == ["a", "b"] and humans.dropped_annotators == ["c"]
    assert any("'c'" in r.getMessage() and "no rating" in r.getMessage() for r in caplog.records)

    out = tmp_path / "audit"
    report = run_audit(AuditOptions(humans=tmp_path / "humans.csv", teacher=run, out=out, bootstrap=20, plots=False))
    assert report.alt_test.ran and report.alt_test.weak
    saved = json.loads((out / "report.json").read_text())
    assert any("'c'" in w and "every rating is empty" in w for w in saved["warnings"]), saved["warnings"]
    assert any("'c' left out of the alt-test" in w for w in saved["alt_test"]["warnings"])
    assert "weak: only 2 annotator(s) tested" in saved["alt_test_verdict"]
    md = (out / "report.md").read_text()
    assert "human annotator(s) 'c' left out: every rating is empty" in md
    assert "weak" in md and "'c' left out" in md.split("## 4.")[1]


def test_a_record_without_label_falls_back_to_its_output_in_audit_and_sample(tmp_path: Path) -> None:
    """One rule (AnnotationRecord.single_label) for audit and sample: ``label``, else ``output.label`` as a cell."""
    from annotator.audit.sampling import load_candidates

    run = tmp_path / "run"
    run.mkdir()
    recs = [
        AnnotationRecord(
            id="1",
            text="a",
            task="label",
            status="ok",
            label="pos",
            output={"label": "pos"},
            model="m",
            prompt_hash="h",
        ),
        AnnotationRecord(
            id="2", text="b", task="label", status="ok", output={"label": " neg "}, model="m", prompt_hash="h"
        ),
        AnnotationRecord(
            id="3", text="c", task="label", status="ok", output={"label": 7.0}, model="m", prompt_hash="h"
        ),
        AnnotationRecord(id="4", text="d", task="label", status="ok", output={"label": ""}, model="m", prompt_hash="h"),
    ]
    (run / "annotations.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in recs))
    assert [r.single_label() for r in recs] == ["pos", "neg", "7", None]
    assert load_teacher(run).labels == {"1": "pos", "2": "neg", "3": "7"}
    assert {c.id: c.label for c in load_candidates(run)[0]} == {"1": "pos", "2": "neg", "3": "7"}
