"""Run directories made by hand for the export and student tests (no teacher): label runs cycling through three
topics, generation runs, and :func:`export` (the export of one, in this process)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from annotator.records import AnnotationRecord, LabelInfo, RunManifest

LABELS = ["politics", "economy", "sport"]
TOPIC_WORDS = {
    "politics": "The parliament voted on the election law and the minister resigned",
    "economy": "Inflation rose and the stock market fell as the central bank raised rates",
    "sport": "The striker scored twice and the club won the league final",
}


def manifest_for(task: str, labels: list[str], multi_label: bool, n: int, failed: int) -> RunManifest:
    return RunManifest(
        pipeline_name="news_test",
        pipeline_path="pipelines/news_test.yaml",
        config={"task": {"type": task, "multi_label": multi_label}, "samples": 3, "backend": {"kind": "fake"}},
        task=task,  # type: ignore[arg-type]
        labels=[LabelInfo(name=lab, description=f"about {lab}") for lab in labels],
        multi_label=multi_label,
        template_path="prompts/label.j2",
        template_sha256="ab" * 32,
        backend="fake",
        model="teacher-model-x",
        rows_total=n,
        rows_ok=n - failed,
        rows_failed=failed,
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:05:00+00:00",
        annotator_version="0.1.0",
    )


def write_run(run: Path, records: list[AnnotationRecord], manifest: RunManifest | None) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "annotations.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
    if manifest is not None:
        (run / "run.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return run


def make_label_run(
    run: Path, n: int = 40, failed_every: int = 10, low_every: int = 8, multi_label: bool = False
) -> Path:
    """n rows cycling through LABELS; every `failed_every`-th failed, every `low_every`-th with confidence 1/3."""
    recs = []
    for i in range(n):
        lab = LABELS[i % len(LABELS)]
        rid = f"n{i:03d}"
        text = f"{TOPIC_WORDS[lab]} (story {i})."
        common = {
            "id": rid,
            "text": text,
            "task": "label",
            "model": "teacher-model-x",
            "prompt_hash": "ab" * 32,
            "samples": 3,
        }
        if failed_every and i % failed_every == failed_every - 1:
            recs.append(AnnotationRecord(status="failed", error="invalid JSON", raw="{oops", **common))
            continue
        conf = 1 / 3 if (low_every and i % low_every == 0) else 1.0
        if multi_label:
            labs = [lab] + ([LABELS[(i + 1) % 3]] if i % 4 == 0 else [])
            recs.append(AnnotationRecord(status="ok", output={"labels": labs}, labels=labs, confidence=conf, **common))
        else:
            recs.append(
                AnnotationRecord(
                    status="ok",
                    output={"label": lab, "rationale": f"mentions {lab}"},
                    label=lab,
                    confidence=conf,
                    votes={lab: 3},
                    **common,
                )
            )
    n_failed = sum(r.status == "failed" for r in recs)
    return write_run(run, recs, manifest_for("label", LABELS, multi_label, n, n_failed))


def make_gen_run(run: Path, task: str, n: int = 10) -> Path:
    recs = []
    for i in range(n):
        common = {
            "id": f"d{i}",
            "text": f"Document {i}. The river Arn flows north.",
            "task": task,
            "model": "t",
            "prompt_hash": "cd" * 32,
        }
        if i == n - 1:
            recs.append(AnnotationRecord(status="failed", error="timeout", **common))
        elif task == "rephrase":
            out = {
                "paraphrases": [{"style": "formal", "text": f"Formal {i}"}, {"style": "casual", "text": f"Casual {i}"}]
            }
            recs.append(AnnotationRecord(status="ok", output=out, **common))
        else:
            out = {
                "pairs": [
                    {
                        "question": f"Which way does the Arn flow ({i})?",
                        "answer": "North.",
                        "evidence": "The river Arn flows north.",
                    }
                ]
            }
            recs.append(AnnotationRecord(status="ok", output=out, **common))
    return write_run(run, recs, manifest_for(task, [], False, n, 1))


def export(run: Path, out: Path, **kw):
    from annotator.export import ExportOptions, export_run

    return export_run(run, ExportOptions(out=out, **kw))


def exported_with_gold(base: Path, columns: dict[str, Callable[[int], str]] | None = None) -> Path:
    """``base/dataset``: 30 label rows exported (seed 0; the teacher says LABELS[i % 3], rows 9, 19 and 29 failed);
    ``base/humans.csv``: 3 annotators, ann_b and ann_c flip the items with i % 5 == 0, plus ``columns`` (name ->
    the value for item i). Returns ``base``."""
    export(make_label_run(base / "run", n=30, failed_every=10, low_every=0), base / "dataset", seed=0)
    extra = columns or {}
    lines = [",".join(["item_id", "annotator", "label", *extra])]
    for i in range(30):
        for ann in ("ann_a", "ann_b", "ann_c"):
            lab = LABELS[(i + 1) % 3] if ann != "ann_a" and i % 5 == 0 else LABELS[i % 3]
            lines.append(",".join([f"n{i:03d}", ann, lab, *(value(i) for value in extra.values())]))
    (base / "humans.csv").write_text("\n".join(lines) + "\n")
    return base
