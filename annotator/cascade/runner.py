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
``stages/<name>/`` (see :mod:`annotator.cascade.stages`); the top directory is locked for the whole run and
bound to the pipeline like any run directory.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import annotator
from annotator.backends import Backend
from annotator.cache import ResultStore
from annotator.cascade.calibration import CalibrationFile, fresh_calibration
from annotator.cascade.stages import StageHook, StageRun, cascade_of, run_stage, stage_config, stage_dir
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
from annotator.redact import redact_data
from annotator.rundir import RunDirLock, bind_run_dir, os_error, verify_outputs, write_run_outputs
from annotator.tasks import build_task

log = logging.getLogger(__name__)

QUEUE_DIR = "human_queue"
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
        return rec.model_copy(
            update={**self.usage, "cost": self.cost, "stage": stage, "stages": dict(self.confidences)}
        )


class CascadeRun:
    """One cascade run. ``await CascadeRun(cfg).run()`` labels every row once (see the module docstring).

    ``backends`` (by stage name) replaces stages' teachers (tests, benchmarks); ``hook`` is called before each stage
    runs (progress bars)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        backends: dict[str, Backend] | None = None,
        retry_failed: bool = False,
        hook: StageHook | None = None,
    ):
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
        """Run the stages in turn, write the queue, the outputs and the report; return the run's manifest. The
        calibration is read, and every file written, while the output directory is locked."""
        from annotator.cascade.report import REPORT_DIR, write_report

        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with RunDirLock(self.out_dir):
            cal = fresh_calibration(self.cfg)
            rows = count_rows(self.cfg.input)
            if self.cfg.input.limit is None and rows != cal.input_rows:
                log.warning(
                    "the input has %d rows, %d when the human sample was calibrated: the guarantee assumes "
                    "that sample is a random draw of the rows labelled now (recalibrate on a new sample if "
                    "the added rows differ)",
                    rows,
                    cal.input_rows,
                )
            check_ids(self.cfg.input)
            Pipeline(stage_config(self.cfg, 0)).preview()  # a template error before any teacher call
            store = ResultStore(self.out_dir / CACHE_FILE)
            try:
                bind_run_dir(store, self.cfg.binding(), self.cfg.source_path)
                store.start_run()
                queue = await self._stages(store, cal, rows)
                self.queue_dir = self._write_queue(queue)
                manifest = self._manifest(cal, started_at, len(queue))
                write_run_outputs(self.out_dir, store, manifest)
                verify_outputs(self.out_dir, store)
            finally:
                store.close()
            write_report(self.out_dir / REPORT_DIR, cal, manifest, rows)
        return manifest

    # -- the stages -------------------------------------------------------------------------------------
    async def _stages(self, store: ResultStore, cal: CalibrationFile, rows: int) -> dict[int, _Open]:
        """Every stage in turn; returns the rows left for humans (by input position)."""
        open_rows: dict[int, _Open] | None = None  # None: every row, none asked yet
        for k, stage in enumerate(self.cascade.stages):
            threshold = cal.stages[k].threshold
            summary = StageSummary(
                name=stage.name, model=cal.stages[k].model, threshold=threshold, run_dir=str(stage_dir(self.cfg, k))
            )
            self.stages.append(summary)
            if threshold is None:
                log.info("stage %s keeps nothing (threshold None): not asked", stage.name)
                continue
            if open_rows is not None and not open_rows:
                continue
            only = None if open_rows is None else set(open_rows)
            run = await run_stage(
                self.cfg,
                k,
                only if only is not None else range(rows),
                self.backends.get(stage.name),
                self.retry_failed,
                self.hook,
            )
            self.runs.append(run)
            open_rows = self._sort(run, summary, threshold, open_rows, store)
        if open_rows is None:
            open_rows = {row.index: _Open(row.id or "", row.text or "") for row in iter_rows(self.cfg.input)}
        return open_rows

    def _sort(
        self,
        run: StageRun,
        summary: StageSummary,
        threshold: float,
        before: dict[int, _Open] | None,
        store: ResultStore,
    ) -> dict[int, _Open]:
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
            if rec.id != row.id:
                raise InputDataError(
                    f"input {self.cfg.input.path} changed during the run: row {idx + 1} was {row.id!r} for the stage "
                    f"before {summary.name} and is {rec.id!r} now. Leave the input alone while a run is going and run "
                    "the same command again (every answer is cached)"
                )
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
            raise InconsistentOutputs(
                f"{run.dir}: annotations.jsonl holds {seen} rows, run.json {m.rows_total}; run "
                "the same command again to rebuild the stage"
            )
        return still

    def _keep(self, store: ResultStore, idx: int, record: AnnotationRecord) -> None:
        store.put_result(idx, record.id, record.model_dump_json())
        self.stats.count(record)

    # -- the human queue --------------------------------------------------------------------------------
    def _write_queue(self, queue: dict[int, _Open]) -> Path:
        """Blank sheets for the rows no stage kept. Sheets that already hold exactly these rows are left alone, filled
        or not; any other state (a sheet missing, or left over from another queue by a run killed while writing) is
        written again: the audit reads the queue from the wide sheet."""
        from annotator.audit import sampling as sp

        out = self.out_dir / QUEUE_DIR
        ids = [queue[i].id for i in sorted(queue)]
        if _queue_sheets_hold(out, ids):
            return out
        hq = self.cascade.human_queue
        names = sp.annotator_names(hq.annotators, None)
        items = [sp.Candidate(queue[i].id, queue[i].text, "", None) for i in sorted(queue)]
        design = {
            "pipeline": self.cfg.name,
            "purpose": "rows no cascade stage kept: label them (teacher labels are not shown)",
            "strategy": "cascade human queue (not a random sample: no calibration on it)",
            "n": len(items),
            "annotators": names,
            "per_item": hq.per_item,
        }
        labels = [lab.name for lab in build_task(self.cfg.task).manifest_labels()[0]]
        try:
            sp.write_sheets(out, items, sp.assign(len(items), names, hq.per_item), names, labels, design=design)
        except InputDataError:
            raise InputDataError(
                f"{out} holds filled-in sheets of an earlier human queue, and the queue has changed: move {out} away "
                "(its labels stay there) and run the same command again (every answer is cached)"
            ) from None
        except OSError as exc:
            raise os_error(exc, exc.filename or out) from None
        return out

    # -- the manifest -----------------------------------------------------------------------------------
    def _manifest(self, cal: CalibrationFile, started_at: str, to_humans: int) -> RunManifest:
        manifests = [r.manifest for r in self.runs]
        counts = {k: sum(getattr(m, k) for m in manifests) for k in RunCounts.model_fields if k != "cost_usd"}
        labels, multi_label = build_task(self.cfg.task).manifest_labels()
        template = load_template(self.cfg)
        manifest = RunManifest(
            pipeline_name=self.cfg.name,
            pipeline_path=str(self.cfg.source_path or ""),
            config=redact_data(self.cfg.model_dump(mode="json")),  # a key in a stage's base_url stays out
            task=self.cfg.task.type,
            labels=labels,
            multi_label=multi_label,
            template_path=template.name,
            template_sha256=template.sha256,
            backend="cascade",
            model=" > ".join(s.model for s in self.stages),
            **{
                **counts,
                "rows_total": self.stats.rows_done,
                "rows_ok": self.stats.rows_ok,
                "rows_failed": self.stats.rows_failed,
            },
            cost_usd=_sum([m.cost_usd for m in manifests]),
            cost_total_usd=_sum([m.cost_total_usd for m in manifests]),
            started_at=started_at,
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            annotator_version=annotator.__version__,
            overrides=self.cfg.overrides,
            retry_failed=self.retry_failed,
            env_vars=self.cfg.env_vars,
            answers=_provenance([m.answers for m in manifests]),
            cascade=CascadeSummary(
                target=cal.target,
                delta=cal.delta,
                calibration=str(cascade_of(self.cfg).calibration),
                certified=cal.certified,
                statement=cal.statement,
                assumption=cal.assumption,
                stages=self.stages,
                rows_to_humans=to_humans,
                human_queue=str(self.queue_dir) if self.queue_dir else None,
            ),
        )
        manifest.history = [*earlier_invocations(self.out_dir), manifest.invocation()]
        return manifest


def _queue_sheets_hold(out: Path, ids: list[str]) -> bool:
    """Whether the long and wide sheets and the Label Studio tasks in ``out`` are all of exactly ``ids``."""
    from annotator.audit import sampling as sp

    try:
        with (out / sp.LONG_SHEET).open(newline="", encoding="utf-8") as fh:
            long_ids = list(dict.fromkeys(row["item_id"] for row in csv.DictReader(fh)))
        with (out / sp.WIDE_SHEET).open(newline="", encoding="utf-8") as fh:
            wide_ids = [row["item_id"] for row in csv.DictReader(fh)]
        tasks = json.loads((out / sp.LS_TASKS).read_text(encoding="utf-8"))
        task_ids = [str(t["data"]["item_id"]) for t in tasks]
    except (OSError, ValueError, KeyError, TypeError, csv.Error):
        return False
    return long_ids == wide_ids == task_ids == ids


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _provenance(parts: list[AnswerProvenance | None]) -> AnswerProvenance:
    """The answers of every stage together."""
    known = [p for p in parts if p is not None]
    firsts = [p.first_answer_at for p in known if p.first_answer_at]
    lasts = [p.last_answer_at for p in known if p.last_answer_at]
    return AnswerProvenance(
        tokens=sum(p.tokens for p in known),
        attempts=sum(p.attempts for p in known),
        first_answer_at=min(firsts) if firsts else None,
        last_answer_at=max(lasts) if lasts else None,
        cost_usd=_sum([p.cost_usd for p in known]),
    )
