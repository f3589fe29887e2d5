"""``annotator run`` of a cascade pipeline: stage 1 labels every row, each later stage the rows the one before was
unsure of, humans the rest.

A row is *kept* by the first stage whose confidence (vote share) reaches that stage's threshold (from the
calibration file, :mod:`annotator.cascade.calibration`). A row a stage could not answer validly (its answers stayed
invalid) goes on to the next stage like an unsure one; a row that cannot be sent (empty or too long text) or whose
teacher call failed (a rerun asks again) is recorded as failed. A stage whose threshold is None keeps nothing and is
not asked at all. Rows no stage keeps go to ``<output.dir>/human_queue/`` (blank sheets and Label Studio files, no
teacher label shown) and stay out of ``annotations.jsonl``.

Outputs, in ``output.dir``: ``annotations.jsonl`` (one record per kept or failed row, input order, with ``stage``
and ``stages``), ``run.json`` (its ``cascade`` section says what was kept where and what is guaranteed),
``human_queue/`` and ``cascade/report.{md,json}`` + ``cascade/frontier.png``. Each stage's own run directory is
``stages/<k>-<name>/`` (see :mod:`annotator.cascade.stages`); the top directory is locked for the whole run and
bound to the pipeline like any run directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import annotator
from annotator.backends import Backend
from annotator.cache import ResultStore
from annotator.cascade.calibration import CalibrationFile, fresh_calibration
from annotator.cascade.stages import StageHook, StageRun, cascade_of, run_stage, stage_config
from annotator.config import PipelineConfig
from annotator.engine import Pipeline, RunStats, load_template
from annotator.errors import InconsistentOutputs, InputDataError
from annotator.inputs import check_ids, count_rows, iter_rows
from annotator.records import (
    CACHE_FILE,
    AnnotationRecord,
    AnswerProvenance,
    CascadeSummary,
    RunCounts,
    RunManifest,
    StageSummary,
    earlier_invocations,
    iter_annotations,
)
from annotator.rundir import RunDirLock, bind_run_dir, verify_outputs, write_run_outputs
from annotator.tasks import build_task

log = logging.getLogger(__name__)

QUEUE_DIR = "human_queue"
REPORT_DIR = "cascade"
_USAGE = ("attempts", "tokens", "prompt_tokens", "cached_tokens", "completion_tokens")


@dataclass
class _Open:
    """A row no stage has kept yet: what it cost so far and its confidence at each stage that saw it."""

    id: str
    text: str
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_USAGE, 0))
    cost: float | None = None
    confidences: dict[str, float | None] = field(default_factory=dict)

    def add(self, rec: AnnotationRecord, stage: str) -> None:
        for k in _USAGE:
            self.usage[k] += getattr(rec, k)
        if rec.cost is not None:
            self.cost = (self.cost or 0.0) + rec.cost
        self.confidences[stage] = rec.confidence if rec.status == "ok" else None

    def final(self, rec: AnnotationRecord, stage: str) -> AnnotationRecord:
        """``rec`` (this stage's record) as the cascade's record: its stage, the confidences so far, the usage of
        every stage that saw the row."""
        self.add(rec, stage)
        return rec.model_copy(update={**self.usage, "cost": self.cost, "stage": stage,
                                      "stages": dict(self.confidences)})


class CascadeRun:
    """One cascade run. ``await CascadeRun(cfg).run()`` labels every row once (see the module docstring).

    ``backends`` (by stage name) replaces stages' teachers (tests, benchmarks); ``hook`` is called before each stage
    runs (progress bars)."""

    def __init__(self, cfg: PipelineConfig, backends: dict[str, Backend] | None = None, retry_failed: bool = False,
                 hook: StageHook | None = None):
        self.cfg = cfg
        self.cascade = cascade_of(cfg)
        self.backends = backends or {}
        self.retry_failed = retry_failed
        self.hook = hook
        self.out_dir = Path(cfg.output.dir)
        self.stats = RunStats()  # the cascade's own records (failed_by_kind: rows failed for good)
        self.stages: list[StageSummary] = []
        self.runs: list[StageRun] = []
        self.queue_dir: Path | None = None

    async def run(self) -> RunManifest:
        """Run the stages in turn, write the queue, the outputs and the report; return the run's manifest."""
        cal = fresh_calibration(self.cfg)
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with RunDirLock(self.out_dir):
            rows = count_rows(self.cfg.input)
            check_ids(self.cfg.input)
            Pipeline(stage_config(self.cfg, 0)).preview()  # a template error before any teacher call
            store = ResultStore(self.out_dir / CACHE_FILE)
            try:
                bind_run_dir(store, self.cfg)
                store.start_run()
                queue = await self._stages(store, cal, rows)
                self.queue_dir = self._write_queue(queue)
                manifest = self._manifest(cal, started_at, len(queue))
                write_run_outputs(self.out_dir, store, manifest)
                verify_outputs(self.out_dir, store)
            finally:
                store.close()
        from annotator.cascade.report import write_report

        write_report(self.out_dir / REPORT_DIR, cal, manifest, rows)
        return manifest

    # -- the stages -------------------------------------------------------------------------------------
    async def _stages(self, store: ResultStore, cal: CalibrationFile, rows: int) -> dict[int, _Open]:
        """Every stage in turn; returns the rows left for humans (by input position)."""
        open_rows: dict[int, _Open] | None = None  # None: every row, none asked yet
        for k, stage in enumerate(self.cascade.stages):
            threshold = cal.stages[k].threshold
            summary = StageSummary(name=stage.name, model=cal.stages[k].model, threshold=threshold,
                                   run_dir=str(self.out_dir / "stages" / f"{k + 1}-{stage.name}"))
            self.stages.append(summary)
            if threshold is None:
                log.info("stage %s keeps nothing (threshold None): not asked", stage.name)
                continue
            if open_rows is not None and not open_rows:
                continue
            only = None if open_rows is None else set(open_rows)
            run = await run_stage(self.cfg, k, only if only is not None else range(rows),
                                  self.backends.get(stage.name), self.retry_failed, self.hook)
            self.runs.append(run)
            open_rows = self._sort(run, summary, threshold, open_rows, store)
        if open_rows is None:
            open_rows = {row.index: _Open(row.id or "", row.text or "") for row in iter_rows(self.cfg.input)}
        return open_rows

    def _sort(self, run: StageRun, summary: StageSummary, threshold: float, before: dict[int, _Open] | None,
              store: ResultStore) -> dict[int, _Open]:
        """Read the stage's records: keep the sure ones, record the failed ones, pass the rest on."""
        m = run.manifest
        summary.model, summary.rows_asked = m.model, m.rows_total
        summary.tokens = m.answers.tokens if m.answers else m.tokens
        summary.cost_usd = m.answers.cost_usd if m.answers else m.cost_usd
        positions = iter(sorted(before) if before is not None else range(m.rows_total))
        still: dict[int, _Open] = {}
        seen = 0
        for rec in iter_annotations(run.dir):
            idx = next(positions, None)
            if idx is None:
                break
            seen += 1
            row = before[idx] if before is not None else _Open(rec.id, rec.text)
            kind = run.failures.get(rec.id) if rec.status != "ok" else None
            if rec.status == "ok" and rec.confidence is not None and rec.confidence >= threshold:
                summary.rows_kept += 1
                self._keep(store, idx, row.final(rec, summary.name))
            elif kind in ("input", "transport"):
                summary.rows_failed += 1
                final = row.final(rec, summary.name)
                final._failure_kind = kind
                self._keep(store, idx, final)
            else:
                row.add(rec, summary.name)
                still[idx] = row
        if seen != m.rows_total:
            raise InconsistentOutputs(f"{run.dir}: annotations.jsonl holds {seen} rows, run.json {m.rows_total}; run the "
                                      "same command again to rebuild the stage")
        return still

    def _keep(self, store: ResultStore, idx: int, record: AnnotationRecord) -> None:
        store.put_result(idx, record.id, record.model_dump_json())
        self.stats.count(record)

    # -- the human queue --------------------------------------------------------------------------------
    def _write_queue(self, queue: dict[int, _Open]) -> Path:
        """Blank sheets for the rows no stage kept (unchanged sheets are left alone, filled or not)."""
        from annotator.audit import sampling as sp

        out = self.out_dir / QUEUE_DIR
        ids = [queue[i].id for i in sorted(queue)]
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
        design_file = out / sp.DESIGN_FILE
        if design_file.exists():
            try:
                if json.loads(design_file.read_text(encoding="utf-8")).get("ids_sha256") == digest:
                    return out
            except (OSError, ValueError):
                pass
        hq = self.cascade.human_queue
        names = sp.annotator_names(hq.annotators, None)
        items = [sp.Candidate(queue[i].id, queue[i].text, "", None) for i in sorted(queue)]
        design = {"pipeline": self.cfg.name, "purpose": "rows no cascade stage kept: label them (teacher labels are "
                  "not shown)", "n": len(items), "annotators": names, "per_item": hq.per_item, "ids_sha256": digest}
        labels = [lab.name for lab in build_task(self.cfg.task).manifest_labels()[0]]
        try:
            sp.write_sheets(out, items, sp.assign(len(items), names, hq.per_item), names, labels, design=design)
        except InputDataError:
            raise InputDataError(
                f"{out} holds filled-in sheets of an earlier human queue, and the queue has changed: move {out} away "
                "(its labels stay there) and run the same command again (every answer is cached)") from None
        return out

    # -- the manifest -----------------------------------------------------------------------------------
    def _manifest(self, cal: CalibrationFile, started_at: str, to_humans: int) -> RunManifest:
        manifests = [r.manifest for r in self.runs]
        counts = {k: sum(getattr(m, k) for m in manifests) for k in RunCounts.model_fields if k != "cost_usd"}
        labels, multi_label = build_task(self.cfg.task).manifest_labels()
        template = load_template(self.cfg)
        manifest = RunManifest(
            pipeline_name=self.cfg.name, pipeline_path=str(self.cfg.source_path or ""),
            config=self.cfg.model_dump(mode="json"), task=self.cfg.task.type, labels=labels, multi_label=multi_label,
            template_path=template.name, template_sha256=template.sha256, backend="cascade",
            model=" > ".join(s.model for s in self.stages),
            **{**counts, "rows_total": self.stats.rows_done, "rows_ok": self.stats.rows_ok,
               "rows_failed": self.stats.rows_failed},
            cost_usd=_sum([m.cost_usd for m in manifests]), cost_total_usd=_sum([m.cost_total_usd for m in manifests]),
            started_at=started_at, finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            annotator_version=annotator.__version__, overrides=self.cfg.overrides, retry_failed=self.retry_failed,
            env_vars=self.cfg.env_vars, answers=_provenance([m.answers for m in manifests]),
            cascade=CascadeSummary(
                target=cal.target, delta=cal.delta, calibration=str(cascade_of(self.cfg).calibration),
                certified=cal.certified, statement=cal.statement, assumption=cal.assumption, stages=self.stages,
                rows_to_humans=to_humans, human_queue=str(self.queue_dir) if self.queue_dir else None),
        )
        manifest.history = [*earlier_invocations(self.out_dir), manifest.invocation()]
        return manifest


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _provenance(parts: list[AnswerProvenance | None]) -> AnswerProvenance:
    """The answers of every stage together."""
    known = [p for p in parts if p is not None]
    firsts = [p.first_answer_at for p in known if p.first_answer_at]
    lasts = [p.last_answer_at for p in known if p.last_answer_at]
    return AnswerProvenance(tokens=sum(p.tokens for p in known), attempts=sum(p.attempts for p in known),
                            first_answer_at=min(firsts) if firsts else None, last_answer_at=max(lasts) if lasts else None,
                            cost_usd=_sum([p.cost_usd for p in known]))
