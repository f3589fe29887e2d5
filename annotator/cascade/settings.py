"""The ``cascade:`` section of a pipeline (see docs/cascade.md): its stages, each with a whole teacher section, the
agreement target and the human queue. Owned here, beside the cascade; :mod:`annotator.config` assembles it into the
pipeline and checks it against the task (``_check_cascade``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from annotator.backends.registry import TeacherConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CascadeStageConfig(_Strict):
    """One stage of a cascade: a name (its run directory is ``<output.dir>/stages/<name>``) and a whole teacher
    section (any backend, ``samples`` >= 3: the stage's confidence is its vote share)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=64,
        description="Letters, digits, '_', '.', '-' (it names a directory).",
    )
    teacher: TeacherConfig


class HumanQueueConfig(_Strict):
    """The sheets of the rows no stage keeps (written like ``annotator sample``'s)."""

    annotators: int = Field(
        default=1,
        ge=1,
        le=1000,  # annotator.audit.sampling.MAX_ANNOTATORS
        description="Annotators the queue is shared between (a sheet column each).",
    )
    per_item: int = Field(default=1, ge=1, description="Annotators per row (<= annotators).")

    @model_validator(mode="after")
    def _per_item_fits(self) -> HumanQueueConfig:
        if self.per_item > self.annotators:
            raise ValueError(f"per_item ({self.per_item}) cannot exceed annotators ({self.annotators})")
        return self


class CascadeConfig(_Strict):
    """``cascade:`` teachers in order, cheapest first; each keeps the rows it is sure of (confidence >= its
    threshold, chosen by ``annotator calibrate``), passes the others on; the last one's leftovers go to humans.
    See docs/cascade.md."""

    stages: list[CascadeStageConfig] = Field(
        max_length=16, description="2 to 16 stages (each is tested at delta / number of stages)."
    )
    target: float = Field(
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Agreement with the human majority the kept labels must reach, below 1.",
    )
    delta: float = Field(
        default=0.1,
        gt=0.0,
        le=0.5,
        allow_inf_nan=False,
        description="Allowed chance that the guarantee fails (over the draw of the human sample).",
    )
    calibration: Path | None = Field(
        default=None,
        description="The thresholds file `annotator calibrate` writes and `run` reads "
        "(default: <output.dir>/calibration.json).",
    )
    human_queue: HumanQueueConfig = HumanQueueConfig()
