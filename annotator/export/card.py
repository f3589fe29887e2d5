"""The dataset card (README.md) written next to an export: YAML front matter + provenance in Markdown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from annotator.tasks import get_task_class

if TYPE_CHECKING:
    from annotator.export.summary import ExportSummary


def _feature_yaml(name: str, feature: Any) -> dict[str, Any]:
    """One entry of ``dataset_info.features`` in the Hub's card format."""
    from datasets import ClassLabel, Value

    def dtype(f: Any) -> Any:
        if isinstance(f, ClassLabel):
            return {"class_label": {"names": {str(i): n for i, n in enumerate(f.names)}}}
        if isinstance(f, Value):
            return f.dtype
        if isinstance(f, dict):
            return {"struct": [{"name": k, "dtype": dtype(v)} for k, v in f.items()]}
        if isinstance(f, list) and f:
            return {"list": dtype(f[0])}
        inner = getattr(f, "feature", None)  # Sequence / List
        if inner is not None:
            return {"list": dtype(inner)}
        return str(f)

    return {"name": name, "dtype": dtype(feature)}


def features_yaml(features: Any) -> list[dict[str, Any]]:
    """``dataset_info.features`` as the Hub writes it (datasets' own serializer when it has one)."""
    to_yaml = getattr(features, "_to_yaml_list", None)
    if to_yaml is not None:
        try:
            return to_yaml()
        except Exception:  # noqa: BLE001, S110 - private API: fall back to our own rendering
            pass
    return [_feature_yaml(k, v) for k, v in features.items()]


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "n>1M"


def front_matter(summary: ExportSummary, features: Any) -> dict[str, Any]:
    """The card's YAML header: the Hub's metadata (task category declared by the task, features, splits)."""
    splits = list(summary.counts.per_split)
    meta: dict[str, Any] = {
        "pretty_name": summary.pipeline_name or "annotator export",
        "task_categories": [get_task_class(summary.task).hub_category],
        "size_categories": [_size_category(summary.counts.exported_rows)],
        "tags": ["annotator", "llm-annotated", "synthetic-labels"],
        "dataset_info": {
            "features": features_yaml(features),
            "splits": [
                {
                    "name": s,
                    "num_bytes": int(summary.split_bytes.get(s, 0)),
                    "num_examples": summary.counts.per_split[s],
                }
                for s in splits
            ],
        },
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"parquet/{s}.parquet"} for s in splits],
            }
        ],
        "annotator": {
            "teacher_model": summary.teacher_model,
            "backend": summary.backend,
            "template_sha256": summary.template_sha256,
            "pipeline": summary.pipeline_name,
            "task": summary.task,
            "format": summary.format,
            "seed": summary.seed,
            "min_confidence": summary.min_confidence,
        },
    }
    if summary.cascade is not None:
        c = summary.cascade
        meta["annotator"]["cascade"] = {
            "target": c.target,
            "delta": c.delta,
            "certified": c.certified,
            "stages": [s.name for s in c.stages],
        }
    return meta


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows if row[-1] is not None]
    return "\n".join(lines)


def _answer_rows(summary: ExportSummary) -> list[list[Any]]:
    """Provenance of the answers (not of the last `annotator run`, which may have been a cached rerun)."""
    a = summary.answers
    if a is None:
        rows: list[list[Any]] = [["answers obtained", "not recorded (run.json written by an older version)"]]
    else:
        when = (
            a.first_answer_at if a.first_answer_at == a.last_answer_at else f"{a.first_answer_at} to {a.last_answer_at}"
        )
        rows = [
            ["answers obtained", when],
            ["teacher calls behind the answers", a.attempts],
            ["teacher tokens behind the answers", a.tokens],
        ]
    if summary.history:
        shown = [f"{h.kind} {h.started_at}" for h in summary.history]
        kinds = ", ".join(shown if len(shown) <= 4 else [shown[0], "...", *shown[-2:]])
        rows.append(["`annotator run` invocations", f"{len(summary.history)} ({kinds})"])
    return rows


def _header(summary: ExportSummary, features: Any) -> list[str]:
    """The YAML front matter, the title and the one-line description."""
    title = summary.pipeline_name or "Annotated dataset"
    return [
        "---",
        yaml.safe_dump(front_matter(summary, features), sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {title}",
        "",
        (
            f"Labels produced by the teacher model **{summary.teacher_model}** with `annotator` "
            f"({summary.task} task), exported as `{summary.format}` rows."
        ),
        "",
    ]


def _provenance_section(summary: ExportSummary) -> list[str]:
    """Where the labels come from: teacher, cost, template, pipeline, answers, split."""
    cost = (
        f"${summary.teacher_cost_usd:,.4f} in all, ${summary.teacher_cost_per_item_usd:.6f} per item "
        "(teacher.price x the usage each answer reported)"
        if summary.teacher_cost_usd is not None and summary.teacher_cost_per_item_usd is not None
        else None
    )
    rows: list[list[Any]] = [
        ["teacher model", summary.teacher_model],
        ["backend", summary.backend],
        ["teacher cost", cost],
        ["prompt template", summary.template_path],
        ["template sha256", f"`{summary.template_sha256}`" if summary.template_sha256 else None],
        ["pipeline", summary.pipeline_path],
        ["annotator version", summary.annotator_version],
        *_answer_rows(summary),
        ["exported", summary.created_at],
        [
            "split (seed)",
            ", ".join(f"{k} {v:g}" for k, v in summary.split_fractions.items()) + f" (seed {summary.seed})",
        ],
        ["min confidence", summary.min_confidence],
    ]
    return ["## Provenance", "", _table(["field", "value"], rows), ""]


def _counts_section(summary: ExportSummary) -> list[str]:
    """Rows annotated, excluded (per reason), exported, and per split."""
    c = summary.counts
    rows: list[list[Any]] = [
        ["annotated rows", c.total],
        ["failed (excluded)", c.failed_excluded],
        ["below confidence threshold (excluded)", c.below_threshold_excluded],
        ["no valid label (excluded)", c.invalid_label_excluded],
        ["empty output (excluded)", c.empty_output_excluded],
        ["exported input rows", c.exported_items],
        ["dataset rows", c.exported_rows],
        *[[f"split `{s}`", c.per_split[s]] for s in c.per_split],
    ]
    return ["## Counts", "", _table(["", "rows"], rows), ""]


def _distribution_sections(summary: ExportSummary, descriptions: dict[str, str]) -> list[str]:
    """Label distribution (with descriptions and mean confidence) and style distribution, per split."""
    cols = [*summary.counts.per_split, "all"]
    parts: list[str] = []
    if summary.label_distribution:
        rows = [
            [f"`{name}`", descriptions.get(name, ""), *[summary.label_distribution[s].get(name, 0) for s in cols]]
            for name in summary.label_names
        ]
        parts += ["## Label distribution", "", _table(["label", "description", *cols], rows), ""]
        if any(v is not None for v in summary.mean_confidence.values()):
            parts += [
                "Mean teacher confidence (share of the requested samples agreeing with the stored label): "
                + ", ".join(f"{k} {v:.3f}" for k, v in summary.mean_confidence.items() if v is not None),
                "",
            ]
    if summary.style_distribution:
        styles = sorted({st for d in summary.style_distribution.values() for st in d})
        rows = [[st, *[summary.style_distribution[s].get(st, 0) for s in cols]] for st in styles]
        parts += ["## Style distribution", "", _table(["style", *cols], rows), ""]
    return parts


def _audit_section(summary: ExportSummary) -> list[str]:
    """The audit's summary metrics, or a line saying there is no audit."""
    if not summary.audit_summary:
        return [
            "## Audit",
            "",
            "No audit report was found for this run (`annotator audit` writes `<run>/audit/report.json`).",
            "",
        ]
    return [
        "## Audit",
        "",
        f"From `{summary.audit_report}` (teacher vs human agreement):",
        "",
        _table(["metric", "value"], [[k, v] for k, v in summary.audit_summary.items()]),
        "",
    ]


def _cascade_section(summary: ExportSummary) -> list[str]:
    """A cascade run: the guarantee and its assumption, what each stage kept, what was left to humans."""
    c = summary.cascade
    if c is None:
        return []
    rows = [
        [st.name, st.model, "none (not asked)" if st.threshold is None else st.threshold, st.rows_asked, st.rows_kept]
        for st in c.stages
    ]
    return [
        "## Cascade",
        "",
        f"**{c.statement}**",  # a statement that certifies nothing starts with "Not certified:"
        "",
        f"Assumption: {c.assumption}",
        "",
        "Each row's label comes from the first teacher (stage) whose confidence, the share of its samples agreeing, "
        "reached that stage's threshold; the `stage` column says which. Thresholds were chosen by `annotator "
        f"calibrate` on a human sample ({c.calibration}).",
        "",
        _table(["stage", "teacher", "threshold", "rows asked", "rows kept"], rows),
        "",
        f"{c.rows_to_humans} row(s) no stage kept were left to humans and are **not** in this dataset (their sheets: "
        f"`{c.human_queue}`).",
        "",
    ]


def _config_and_notes_sections(summary: ExportSummary) -> list[str]:
    """The pipeline config as YAML and the export's notes, where there are any."""
    parts: list[str] = []
    if summary.pipeline_config:
        parts += [
            "## Pipeline config",
            "",
            "```yaml",
            yaml.safe_dump(summary.pipeline_config, sort_keys=False, allow_unicode=True).rstrip(),
            "```",
            "",
        ]
    if summary.notes:
        parts += ["## Notes", "", *[f"- {n}" for n in summary.notes], ""]
    return parts


_USAGE_SECTION = [
    "## Usage",
    "",
    "```python",
    "from datasets import load_from_disk, load_dataset",
    'ds = load_from_disk("path/to/this/folder")          # Arrow copy',
    'ds = load_dataset("path/to/this/folder")            # or the Parquet files via this card',
    "```",
    "",
    "Labels come from an LLM teacher, not from humans: check the audit before trusting them.",
    "",
]


def render_card(summary: ExportSummary, features: Any, descriptions: dict[str, str] | None = None) -> str:
    """The whole card: front matter, then provenance, counts, distributions, audit, config, notes and usage."""
    parts = [
        *_header(summary, features),
        *_provenance_section(summary),
        *_counts_section(summary),
        *_distribution_sections(summary, descriptions or {}),
        *_cascade_section(summary),
        *_audit_section(summary),
        *_config_and_notes_sections(summary),
        *_USAGE_SECTION,
    ]
    return "\n".join(parts)
