"""``annotator validate --estimate`` of a cascade: each stage's tokens and cost on the rows it will be asked about.

Every row's prompt is rendered once and priced for each stage (:class:`annotator.costs.RunEstimate`: prompt tokens
as characters / 4, completion tokens up to ``max_tokens`` per call, typically the mean of earlier answers). A stage
is asked about the share of rows that no earlier stage keeps: that share comes from the calibration (measured on
the human sample, weighted by its design); without a calibration that fits the pipeline, every stage is counted
on every row (an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from annotator.cascade.calibration import read_calibration, stale_reason
from annotator.cascade.stages import calibration_path, cascade_of
from annotator.config import PipelineConfig
from annotator.costs import RunEstimate


@dataclass
class CascadeEstimate:
    """Per stage: the estimate for every row, and the share of rows it will be asked about."""

    names: list[str]
    estimates: list[RunEstimate]
    reach: list[float]
    basis: str

    @classmethod
    def of(cls, cfg: PipelineConfig, estimates: list[RunEstimate]) -> CascadeEstimate:
        """The stages' estimates with the shares of the pipeline's calibration (all 1.0 without one)."""
        names = [s.name for s in cascade_of(cfg).stages]
        path = calibration_path(cfg)
        cal = read_calibration(path)
        why = "no calibration yet" if cal is None else stale_reason(cal, cfg)
        if cal is None or why is not None:
            return cls(
                names,
                estimates,
                [1.0] * len(names),
                f"{why}: every stage counted on every row (an upper bound); `annotator calibrate` measures the "
                "share of rows each stage is asked about",
            )
        return cls(
            names,
            estimates,
            cal.reach(),
            f"shares of rows each stage is asked about, measured on the {cal.used}-item human sample of {path}",
        )

    def _scaled(self, k: int, value: float | int | None) -> float | None:
        return None if value is None else value * self.reach[k]

    def summary(self) -> dict[str, Any]:
        """The estimate as plain numbers (``validate --estimate --json``)."""
        stages: list[dict[str, Any]] = [
            {
                "name": name,
                "share_asked": self.reach[k],
                "rows_asked": self._scaled(k, est.rows),
                "calls": self._scaled(k, est.calls),
                "prompt_tokens": self._scaled(k, est.prompt_tokens),
                "cost_max_usd": self._scaled(k, est.cost_max),
                "cost_typical_usd": self._scaled(k, est.cost_typical),
            }
            for k, (name, est) in enumerate(zip(self.names, self.estimates))
        ]
        maxes: list[float | None] = [s["cost_max_usd"] for s in stages]
        alone = self.estimates[-1].cost_max
        total = None if any(m is None for m in maxes) else sum(m or 0.0 for m in maxes)
        return {
            "basis": self.basis,
            "stages": stages,
            "cost_max_usd": total,
            "strongest_alone_cost_max_usd": alone,
            "ratio": None if total is None or not alone else total / alone,
        }

    def print(self, console: Console) -> None:
        s = self.summary()
        table = Table(title=f"cascade estimate ({self.basis})")
        for col in ("stage", "share of rows asked", "rows", "calls", "prompt tokens", "cost <=", "cost ~"):
            table.add_column(col, justify="left" if col == "stage" else "right")

        def money(v: float | None) -> str:
            return "unknown" if v is None else f"${v:,.4f}"

        for st in s["stages"]:
            table.add_row(
                st["name"],
                f"{st['share_asked']:.1%}",
                f"{st['rows_asked']:,.0f}",
                f"{st['calls']:,.0f}",
                f"{st['prompt_tokens']:,.0f}",
                money(st["cost_max_usd"]),
                money(st["cost_typical_usd"]),
            )
        console.print(table)
        line = (
            f"cascade <= {money(s['cost_max_usd'])}; {self.names[-1]} alone on every row <= "
            f"{money(s['strongest_alone_cost_max_usd'])}"
        )
        console.print(line + (f" (ratio {s['ratio']:.2f})" if s["ratio"] is not None else ""), soft_wrap=True)
