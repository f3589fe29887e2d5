"""The teacher side of `annotator distill`: ordinary pipeline runs, so every answer goes through the cache.

The rows asked so far are the input of one run directory (``OUT/teacher``): each round appends its rows to that
directory's ``input.jsonl`` and runs the pipeline over it, so rows of earlier rounds are cache hits (no call) and a
round killed half-way finds every answer that arrived. Rechecks (rows a confident student disputes) run the same way
in ``OUT/recheck`` with ``teacher.samples`` raised, the majority of the new samples deciding.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from annotator.choices import InputFormat
from annotator.config import InputConfig, PipelineConfig
from annotator.engine import Pipeline, RunStats
from annotator.inputs import InputRow, iter_rows
from annotator.records import AnnotationRecord, iter_annotations, read_manifest
from annotator.rundir import atomic_write_text, os_error, prepare_run_dir

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"
RECHECK_DIR = "recheck"
INPUT_FILE = "input.jsonl"


def rows_by_id(cfg: InputConfig, ids: Iterable[str]) -> dict[str, InputRow]:
    """The input rows with these ids (one streamed pass over the corpus)."""
    wanted = set(ids)
    found: dict[str, InputRow] = {}
    if wanted:
        for row in iter_rows(cfg):
            if row.id in wanted:
                found[str(row.id)] = row
                if len(found) == len(wanted):
                    break
    return found


class TeacherRun:
    """One run directory whose input grows by the rows asked of it."""

    def __init__(self, cfg: PipelineConfig, run_dir: Path, samples: int | None = None) -> None:
        self.cfg = cfg
        self.dir = run_dir
        self.input = run_dir / INPUT_FILE
        self.samples = samples or cfg.teacher.samples

    def asked(self) -> list[str]:
        """Ids in the input so far, in the order they were asked."""
        if not self.input.exists():
            return []
        col = self.cfg.input.id_column
        with self.input.open(encoding="utf-8") as fh:
            return [str(json.loads(line)[col]) for line in fh if line.strip()]

    def _append(self, rows: list[InputRow]) -> None:
        """Rewrite the input with ``rows`` added (atomically): every column of each row, as the template sees it."""
        prepare_run_dir(self.dir)
        known = set(self.asked())
        lines = self.input.read_text(encoding="utf-8") if self.input.exists() else ""
        inp = self.cfg.input
        for row in rows:
            rid = str(row.id)
            if rid in known:
                continue
            known.add(rid)
            cols = {**row.columns, inp.id_column: rid, inp.text_column: row.text}
            lines += json.dumps(cols, ensure_ascii=False, default=str) + "\n"
        try:
            atomic_write_text(self.input, lines)
        except OSError as exc:
            raise os_error(exc, self.input) from None

    def pipeline_config(self, max_cost: float | None) -> PipelineConfig:
        """The pipeline with this directory as input and output (and the samples and budget asked for)."""
        cfg = self.cfg.model_copy(deep=True)
        inp = cfg.input
        cfg.input = InputConfig(path=self.input, format=InputFormat.jsonl, id_column=inp.id_column,
                                text_column=inp.text_column, max_chars=inp.max_chars)
        cfg.output.dir = self.dir
        update: dict[str, object] = {"samples": self.samples}
        if max_cost is not None:
            update["max_cost"] = max_cost
        cfg.teacher = cfg.teacher.model_copy(update=update)
        return cfg

    def ask(self, rows: list[InputRow], max_cost: float | None = None,
            on_row: Callable[[AnnotationRecord, RunStats], None] | None = None) -> dict[str, AnnotationRecord]:
        """Add ``rows`` to the input and run the pipeline over it: every record so far, by id. Raises what a run
        raises (``BudgetReached`` at ``max_cost``, ``TeacherUnreachable``, ...)."""
        self._append(rows)
        if not self.input.exists():
            return {}
        asyncio.run(Pipeline(self.pipeline_config(max_cost), on_row=on_row).run())
        return self.records()

    def records(self) -> dict[str, AnnotationRecord]:
        """The records of the last finished run (none before the first)."""
        if read_manifest(self.dir) is None:
            return {}
        return {r.id: r for r in iter_annotations(self.dir)}

    def calls_and_cost(self) -> tuple[int, float | None]:
        """Teacher calls behind the answers so far (invalid answers asked again included) and their cost."""
        manifest = read_manifest(self.dir)
        if manifest is None or manifest.answers is None:
            return 0, None
        return manifest.answers.attempts, manifest.answers.cost_usd

    def spent(self) -> float:
        return self.calls_and_cost()[1] or 0.0
