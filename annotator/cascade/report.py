"""The cascade report: ``report.md``, ``report.json`` and ``frontier.png`` in ``<output.dir>/cascade/``.

``annotator calibrate`` writes it from the human sample alone (costs projected to the corpus from what each stage
spent per sample item); ``annotator run`` rewrites it with what the run did. Per stage: the threshold, the share of
rows it is asked about and keeps, the agreement of the items it keeps with the human majority (95% Clopper-Pearson
interval, on the human sample), tokens and cost. Then the cascade's cost against the strongest (last) stage alone
on every row, the certified statement, and the cost-agreement frontier over every combination of thresholds on the
human sample (descriptive: only the chosen thresholds are certified).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from annotator.cascade import guarantee as g
from annotator.cascade.calibration import CalibrationFile, describe_weights
from annotator.records import RunManifest
from annotator.rundir import atomic_write_text, os_error

REPORT_DIR = "cascade"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
FRONTIER_PNG = "frontier.png"
MAX_FRONTIER_POINTS = 4000


def _unit(cal: CalibrationFile) -> str:
    """USD when every stage has a price, else tokens."""
    return "USD" if all(s.cost_per_item is not None for s in cal.stages) else "tokens"


def _per_item(cal: CalibrationFile, unit: str) -> list[float]:
    return [float((s.cost_per_item or 0.0) if unit == "USD" else s.tokens_per_item) for s in cal.stages]


def frontier(cal: CalibrationFile) -> list[dict[str, Any]]:
    """Coverage, agreement and expected cost per row of every combination of stage thresholds on the human sample;
    ``pareto`` marks the combinations no other beats on both cost and agreement."""
    conf, wrong, w = cal.arrays()
    unit = _unit(cal)
    per_item = _per_item(cal, unit)
    grids: list[list[float | None]] = [[*g.grid_of(c), None] for c in conf]
    while math.prod(len(x) for x in grids) > MAX_FRONTIER_POINTS:  # thin the longest grid
        longest = max(range(len(grids)), key=lambda j: len(grids[j]))
        if len(grids[longest]) <= 2:  # one threshold or none in every stage: nothing left to thin
            break
        grids[longest] = [t for t in grids[longest] if t is not None][::2] + [None]
    points: list[dict[str, Any]] = []
    # at most MAX_FRONTIER_POINTS combinations even when thinning cannot get there (many stages: 2**K of them)
    for combo in itertools.islice(itertools.product(*grids), MAX_FRONTIER_POINTS):
        kept_by = g.apply_thresholds(conf, combo)
        kept = kept_by >= 0
        reach = g.reach_shares(kept_by, w, combo)
        wrong_kept = np.choose(np.maximum(kept_by, 0), wrong)[kept]
        agreement = None if not kept.any() else 1.0 - float((w[kept] * wrong_kept).sum() / w[kept].sum())
        points.append(
            {
                "thresholds": list(combo),
                "coverage": float(w[kept].sum() / w.sum()),
                "agreement": agreement,
                "cost_per_row": float(sum(r * c for r, c in zip(reach, per_item))),
            }
        )
    best = -1.0
    for p in sorted(
        (p for p in points if p["agreement"] is not None), key=lambda p: (p["cost_per_row"], -p["agreement"])
    ):
        p["pareto"] = p["agreement"] > best  # cheapest first: on the frontier when it beats every cheaper one
        best = max(best, p["agreement"])
    return points


def build_report(cal: CalibrationFile, manifest: RunManifest | None, rows: int) -> dict[str, Any]:
    """The report's content (``report.json``): what the calibration certifies and, after a run, what it did."""
    unit = _unit(cal)
    per_item = _per_item(cal, unit)
    reach = cal.reach()
    run_stages = manifest.cascade.stages if manifest is not None and manifest.cascade is not None else None
    projected = [rows * reach[k] * per_item[k] for k in range(len(cal.stages))]
    actual: list[float | None] = []
    stages: list[dict[str, Any]] = []
    for k, s in enumerate(cal.stages):
        run = run_stages[k] if run_stages else None
        actual.append(None if run is None else run.cost_usd if unit == "USD" else float(run.tokens))
        stages.append(
            {
                "name": s.name,
                "model": s.model,
                "threshold": s.threshold,
                "delta": s.delta,
                "sample": {
                    "reached": s.reached,
                    "kept": s.kept,
                    "coverage": s.coverage,
                    "agreement": s.agreement,
                    "agreement_ci95": s.agreement_ci,
                    "tokens_per_item": s.tokens_per_item,
                    "cost_per_item_usd": s.cost_per_item,
                },
                "projected": {"rows_asked": round(rows * reach[k]), "cost": projected[k]},
                "run": None
                if run is None
                else {
                    "rows_asked": run.rows_asked,
                    "rows_kept": run.rows_kept,
                    "rows_failed": run.rows_failed,
                    "tokens": run.tokens,
                    "cost_usd": run.cost_usd,
                    "cost": actual[k],
                },
            }
        )
    strongest = cal.stages[-1]
    strongest_per_row = per_item[-1]
    last_run, last_cost = (run_stages[-1], actual[-1]) if run_stages else (None, None)
    if last_run is not None and last_run.rows_asked and last_cost is not None:
        strongest_per_row = last_cost / last_run.rows_asked
    cascade_cost = sum(c or 0.0 for c in actual) if run_stages else sum(projected)
    alone_cost = rows * strongest_per_row
    return {
        "statement": cal.statement,
        "assumption": cal.assumption,
        "certified": cal.certified,
        "target": cal.target,
        "delta": cal.delta,
        "human_sample": {
            "path": cal.humans,
            "items": cal.human_items,
            "used": cal.used,
            "no_majority": cal.no_majority,
            "not_in_input": cal.not_in_input,
            "not_sendable": cal.not_sendable,
            "weights": describe_weights([it.weight for it in cal.items]),
        },
        "sample": {"coverage": cal.coverage, "agreement": cal.agreement, "agreement_ci95": cal.agreement_ci},
        "stages": stages,
        "rows": rows,
        "run": None
        if manifest is None or manifest.cascade is None
        else {
            "kept": manifest.rows_ok,
            "failed": manifest.rows_failed,
            "to_humans": manifest.cascade.rows_to_humans,
            "human_queue": manifest.cascade.human_queue,
        },
        "cost": {
            "unit": unit,
            "basis": "run" if run_stages else "projected from the human sample",
            "cascade": cascade_cost,
            "strongest_alone": alone_cost,
            "ratio": cascade_cost / alone_cost if alone_cost else None,
        },
        "strongest_alone": {"name": strongest.name, **cal.strongest_alone.model_dump(exclude={"name"})},
        "items_needed": cal.items_needed,
        "frontier": frontier(cal),
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _ci(ci: Any) -> str:
    return "" if not ci else f" [{ci[0]:.1%}, {ci[1]:.1%}]"


def _threshold(t: float | None) -> str:
    return "none (not asked)" if t is None else f"{t:.3g}"


def _money(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit != "USD":
        return f"{v:,.0f} tok" if abs(v) >= 10 else f"{v:.3g} tok"
    return f"${v:,.4f}" if abs(v) >= 0.01 else f"${v:.3g}"


def render_markdown(r: dict[str, Any]) -> str:
    """``report.md``."""
    unit = r["cost"]["unit"]
    lines = [
        "# Cascade report",
        "",
        f"**{r['statement']}**",
        "",
        f"Assumption: {r['assumption']}",
        "",
        f"Human sample: `{r['human_sample']['path']}`: {r['human_sample']['used']} items used of "
        f"{r['human_sample']['items']} ({r['human_sample']['no_majority']} without a human majority, "
        f"{r['human_sample']['not_in_input']} not in the input, {r['human_sample']['not_sendable']} not "
        f"sendable); {r['human_sample']['weights']}.",
        "",
        "## Stages",
        "",
        "| stage | model | threshold | delta | asked (sample) | kept (sample) | agreement of kept, 95% CI | "
        "tokens/item | rows asked | rows kept | cost |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["stages"]:
        smp, run = s["sample"], s["run"]
        asked = run["rows_asked"] if run else f"~{s['projected']['rows_asked']}"
        cost = _money(run["cost"] if run else s["projected"]["cost"], unit) + ("" if run else " (projected)")
        lines.append(
            f"| {s['name']} | {s['model']} | {_threshold(s['threshold'])} "
            f"| {s['delta']:.3g} | {smp['reached']} | {smp['kept']} ({smp['coverage']:.1%}) | "
            f"{_pct(smp['agreement'])}{_ci(smp['agreement_ci95'])} | {smp['tokens_per_item']:.0f} | {asked} | "
            f"{run['rows_kept'] if run else '-'} | {cost} |"
        )
    c = r["cost"]
    lines += [
        "",
        "## Cost",
        "",
        f"Cascade: {_money(c['cascade'], unit)} ({c['basis']}); the strongest stage "
        f"({r['strongest_alone']['name']}) alone on all {r['rows']:,} rows: {_money(c['strongest_alone'], unit)}"
        + (f"; ratio **{c['ratio']:.2f}**." if c["ratio"] is not None else "."),
        "",
        f"The strongest stage alone, calibrated the same way at the same target, would keep "
        f"{r['strongest_alone']['coverage']:.1%} of the sample (agreement {_pct(r['strongest_alone']['agreement'])}); "
        f"the cascade keeps {r['sample']['coverage']:.1%} (agreement {_pct(r['sample']['agreement'])}"
        f"{_ci(r['sample']['agreement_ci95'])}).",
        "",
    ]
    if r["run"]:
        lines += [
            "## This run",
            "",
            f"{r['run']['kept']:,} rows kept, {r['run']['failed']:,} failed, "
            f"{r['run']['to_humans']:,} left to humans (sheets in `{r['run']['human_queue']}`).",
            "",
        ]
    if r["items_needed"]:
        about = "More than" if r["items_needed"] >= g.ITEMS_LIMIT else "About"
        lines += [
            f"{about} {r['items_needed']:,} human items in all would make the target certifiable (if they agree "
            "as these do).",
            "",
        ]
    pareto = sorted((p for p in r["frontier"] if p.get("pareto")), key=lambda p: p["cost_per_row"])
    lines += [
        "## Cost-agreement frontier (human sample; descriptive, only the chosen thresholds are certified)",
        "",
        "| thresholds | coverage | agreement | cost per row |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {', '.join(_threshold(t) for t in p['thresholds'])} | {p['coverage']:.1%} | "
        f"{_pct(p['agreement'])} | {_money(p['cost_per_row'], unit)} |"
        for p in pareto
    ]
    lines += ["", f"![frontier]({FRONTIER_PNG})", ""]
    return "\n".join(lines)


def frontier_png(r: dict[str, Any], path: Path) -> None:
    """Agreement against cost per row for every threshold combination; the chosen one and the target marked."""
    from annotator.audit.plots import _plt, save_png

    plt = _plt()
    pts = [p for p in r["frontier"] if p["agreement"] is not None]
    chosen = [s["threshold"] for s in r["stages"]]
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    if pts:
        sc = ax.scatter(
            [p["cost_per_row"] for p in pts],
            [p["agreement"] for p in pts],
            c=[p["coverage"] for p in pts],
            cmap="viridis",
            vmin=0,
            vmax=1,
            s=22,
            alpha=0.8,
        )
        fig.colorbar(sc, ax=ax, label="coverage (share of rows kept)")
        front = sorted((p for p in pts if p.get("pareto")), key=lambda p: p["cost_per_row"])
        ax.plot(
            [p["cost_per_row"] for p in front],
            [p["agreement"] for p in front],
            color="#C44E52",
            lw=1.2,
            label="frontier",
        )
        mine = [p for p in pts if p["thresholds"] == chosen]
        if mine:
            ax.scatter(
                [mine[0]["cost_per_row"]],
                [mine[0]["agreement"]],
                marker="*",
                s=220,
                color="#DD8452",
                edgecolor="black",
                zorder=5,
                label="chosen (certified)" if r["certified"] else "chosen",
            )
    ax.axhline(r["target"], ls="--", color="grey", lw=1, label=f"target {r['target']:g}")
    ax.set_xlabel(f"LLM cost per row ({r['cost']['unit']})")
    ax.set_ylabel("agreement with human majority (kept rows)")
    ax.set_title("Cascade thresholds on the human sample")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def write_report(out: Path, cal: CalibrationFile, manifest: RunManifest | None, rows: int) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``frontier.png`` into ``out`` (each atomically; a failed write is
    one line); return their paths."""
    report = build_report(cal, manifest, rows)
    files = {"json": out / REPORT_JSON, "md": out / REPORT_MD, "plot": out / FRONTIER_PNG}
    tmp = files["plot"].with_name(files["plot"].name + ".tmp.png")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(files["json"], json.dumps(report, indent=2, allow_nan=False))
        frontier_png(report, tmp)
        tmp.replace(files["plot"])
        atomic_write_text(files["md"], render_markdown(report))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(exc, exc.filename or out) from None
    return files
