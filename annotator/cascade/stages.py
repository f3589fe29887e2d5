"""A cascade's stages as ordinary pipeline runs.

Stage ``k`` (0-based) of a cascade pipeline is the pipeline itself with the stage's teacher and its own run
directory, ``<output.dir>/stages/<name>/``, restricted to the input rows it is asked about
(:attr:`annotator.engine.Pipeline.only_rows`). Every stage reads the same input file, so the run directory's
binding, cache, lock, resume and integrity checks (:mod:`annotator.rundir`) hold per stage as for any run: a stage
killed at any point asks no answer twice when run again, and answers obtained during ``annotator calibrate`` (on
the human sample) are cache hits for the full run. The directory is named after the stage alone, not its place, so
reordering the stages or inserting one keeps every answer obtained so far.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from annotator.backends import Backend
from annotator.cascade.settings import CascadeConfig
from annotator.config import OutputConfig, PipelineConfig
from annotator.engine import Pipeline, RunStats, answer_fingerprint
from annotator.errors import BudgetReached, ConfigError, TeacherUnreachable
from annotator.records import AnnotationRecord, FailureKind, RunManifest

log = logging.getLogger(__name__)

STAGES_DIR = "stages"
StageHook = Callable[[str, Pipeline], None]
"""Called before a stage runs with its label ("stage 2/3 strong") and its pipeline (to attach a progress bar)."""


def cascade_of(cfg: PipelineConfig) -> CascadeConfig:
    """The pipeline's ``cascade`` section; :class:`ConfigError` for a pipeline without one."""
    if cfg.cascade is None:
        where = cfg.source_path or "the pipeline file"
        raise ConfigError(
            f"{where} has no cascade section (see docs/cascade.md); `annotator calibrate` is for cascade pipelines"
        )
    return cfg.cascade


def calibration_path(cfg: PipelineConfig) -> Path:
    """Where the pipeline's thresholds live (``cascade.calibration``, resolved at load)."""
    path = cascade_of(cfg).calibration
    return path if path is not None else Path(cfg.output.dir) / "calibration.json"


def stage_dir(cfg: PipelineConfig, k: int) -> Path:
    """The run directory of stage ``k`` (0-based): ``<output.dir>/stages/<name>`` (by name, so that reordering the
    stages or inserting one reuses every answer)."""
    return Path(cfg.output.dir) / STAGES_DIR / cascade_of(cfg).stages[k].name


def stage_config(cfg: PipelineConfig, k: int) -> PipelineConfig:
    """Stage ``k`` as a pipeline of its own: the stage's teacher, the stage's run directory, no cascade."""
    stage = cascade_of(cfg).stages[k]
    return cfg.model_copy(
        update={"teacher": stage.teacher, "cascade": None, "output": OutputConfig(dir=stage_dir(cfg, k))}
    )


def stage_label(cfg: PipelineConfig, k: int) -> str:
    """``stage 2/3 strong``: how messages and progress bars name stage ``k``."""
    cascade = cascade_of(cfg)
    return f"stage {k + 1}/{len(cascade.stages)} {cascade.stages[k].name}"


def stage_fingerprint(cfg: PipelineConfig, k: int) -> str:
    """A hash of what shapes stage ``k``'s answers (:func:`annotator.engine.answer_fingerprint` of its teacher: its
    model and sampling settings, the prompt, the whole task and ``validation``): a calibration made under another
    one is stale."""
    return answer_fingerprint(cfg, cascade_of(cfg).stages[k].teacher)


@dataclass
class StageRun:
    """A finished stage run: its manifest, directory, and why each failed row failed (by id)."""

    manifest: RunManifest
    dir: Path
    failures: dict[str, FailureKind] = field(default_factory=dict)


async def run_stage(
    cfg: PipelineConfig,
    k: int,
    only_rows: Collection[int],
    backend: Backend | None = None,
    retry_failed: bool = False,
    hook: StageHook | None = None,
) -> StageRun:
    """Run stage ``k`` on the input rows at ``only_rows``; its answers land in its run directory.

    A stopped stage (teacher unreachable, budget reached) raises the same error with the stage named; everything
    it answered is saved."""
    pipeline = Pipeline(stage_config(cfg, k), backend=backend, retry_failed=retry_failed, only_rows=only_rows)
    label = stage_label(cfg, k)
    if hook is not None:
        hook(label, pipeline)
    failures: dict[str, FailureKind] = {}
    shown = pipeline.on_row

    def on_row(record: AnnotationRecord, stats: RunStats) -> None:
        if record.status != "ok":
            failures[record.id] = record._failure_kind or "validation"
        if shown is not None:
            shown(record, stats)

    pipeline.on_row = on_row
    try:
        manifest = await pipeline.run()
    except (TeacherUnreachable, BudgetReached) as exc:
        raise type(exc)(f"{label}: {exc}") from None
    return StageRun(manifest, stage_dir(cfg, k), failures)
