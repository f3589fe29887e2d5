"""The teacher side of `annotator distill`: ordinary pipeline runs over the corpus, so every answer goes through the
cache.

Each round runs the pipeline in ``OUT/teacher`` on the corpus rows asked so far (:attr:`annotator.engine.Pipeline.
only_rows`, as a cascade stage does): rows of earlier rounds are cache hits (no call), and a round killed half-way
finds every answer that arrived. Rechecks (rows a confident student disputes) run the same way in ``OUT/recheck``
with ``teacher.samples`` raised, the majority of the new samples deciding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from annotator.config import PipelineConfig
from annotator.engine import Pipeline, RunStats
from annotator.errors import TeacherUnreachable
from annotator.inputs import InputConfig, InputRow, iter_rows
from annotator.records import AnnotationRecord, iter_annotations, read_manifest

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"
RECHECK_DIR = "recheck"


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
    """One run directory of the pipeline, asked about a growing set of corpus rows."""

    def __init__(self, cfg: PipelineConfig, run_dir: Path, samples: int | None = None) -> None:
        self.cfg = cfg
        self.dir = run_dir
        self.samples = samples or cfg.teacher.samples

    def pipeline_config(self) -> PipelineConfig:
        """The pipeline with this run directory (and the samples asked for)."""
        cfg = self.cfg.model_copy(deep=True)
        cfg.output.dir = self.dir
        cfg.teacher = cfg.teacher.model_copy(update={"samples": self.samples})
        return cfg

    def ask(
        self,
        positions: Collection[int],
        max_cost: float | None = None,
        on_row: Callable[[AnnotationRecord, RunStats], None] | None = None,
    ) -> dict[str, AnnotationRecord]:
        """Run the pipeline on the corpus rows at ``positions`` (every row asked so far): their records, by id.
        Raises what a run raises (``BudgetReached`` at ``max_cost``, ``TeacherUnreachable``, ...)."""
        if positions:
            pipeline = Pipeline(self.pipeline_config(), on_row=on_row, only_rows=set(positions))
            if max_cost is not None:  # the teacher's own budget (its capabilities) gives way to distill's
                pipeline.budget.max_cost = max_cost
            asyncio.run(pipeline.run())
            stats = pipeline.stats
            if stats.rows_failed and not stats.rows_ok and stats.failed_by_kind.get("transport") == stats.rows_failed:
                raise TeacherUnreachable(  # no answer at all, every call failed: the teacher is down, not the rows
                    f"the teacher answered none of the {stats.rows_failed} rows it was asked (see the errors in "
                    f"{self.dir / 'annotations.jsonl'}); check that it is up and run the same command again"
                )
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
