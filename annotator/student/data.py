"""What a student is trained on: the exported dataset (its splits, label set and items), the human gold, the
roles of the items (``--train-where`` / ``--test-where``) and the slice columns, read once into a :class:`Setup`;
and the parsing of ``--sizes`` / ``--thresholds``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotator.errors import InputDataError
from annotator.student.calibration import MIN_FIT_ITEMS
from annotator.student.loop import EvalSet, TrainConfig
from annotator.student.metrics import StudentError
from annotator.student.slices import Roles, Selection, SliceColumn, assign_roles, read_column, selection
from annotator.student.where import parse_where

DEFAULT_THRESHOLDS = (0.5, 0.7, 0.9, 1.0)


@dataclass
class StudentOptions:
    out: Path
    gold: Path | None = None
    model: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    sizes: str | None = None  # --sizes as given; parsed once the train split's size is known
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    show_progress: bool = True
    eval_by: str | None = None  # also evaluate per value of this input column (``SliceEvaluation``)
    train_where: str | None = None  # keep only matching train/validation items (``annotator.student.where``)
    test_where: str | None = None  # the held-out scope: every matching item not trained on
    min_calibration_items: int = MIN_FIT_ITEMS  # fewer validation items: no temperature is fit (T = 1)


def resolve_dataset_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputDataError(f"dataset not found: {p} (run `annotator export RUN_DIR` first)")
    for cand in (p, p / "dataset"):
        if (cand / "dataset_dict.json").is_file():
            return cand
    raise InputDataError(
        f"{p} is not an exported dataset (no dataset_dict.json); run `annotator export RUN_DIR --out {p}`"
    )


def label_schema(dsd) -> tuple[str, list[str], bool]:
    """(column, label names, multi_label) of a classification export."""
    from datasets import ClassLabel

    first = next(iter(dsd.values()))
    feats = first.features
    if isinstance(feats.get("label"), ClassLabel):
        return "label", list(feats["label"].names), False
    inner = getattr(feats.get("labels"), "feature", None)
    if isinstance(inner, ClassLabel):
        return "labels", list(inner.names), True
    raise StudentError(
        "train-student needs a classification export (a 'label' ClassLabel or 'labels' list of ClassLabel column); "
        "export a label task with --format classification"
    )


def parse_sizes(spec: str | None, n_train: int) -> list[tuple[str, int]]:
    """``--sizes``: counts (250), fractions of the train split (0.25 or 25%) and ``all`` -> (as given, count).

    Counts above the train split are clipped to it by the caller (and reported).
    """
    if not spec:
        return []
    hint = f"give sizes like 250,1000,all or fractions like 0.25 (the train split has {n_train} items)"
    out: list[tuple[str, int]] = []
    for part in (x for x in spec.replace(" ", "").split(",") if x):
        if part.lower() == "all":
            out.append((part, n_train))
            continue
        try:
            if part.endswith("%") or "." in part:
                frac = float(part.rstrip("%")) / (100 if part.endswith("%") else 1)
                if not 0 < frac <= 1:
                    raise StudentError(f"bad --sizes {spec!r}: fraction {part} must be in (0, 1]; {hint}")
                out.append((part, max(1, round(frac * n_train))))
            else:
                out.append((part, int(part)))
        except ValueError:
            raise StudentError(f"bad --sizes {spec!r}: {hint}") from None
        if out[-1][1] <= 0:
            raise StudentError(f"bad --sizes {spec!r}: sizes must be positive; {hint}")
    if not out:
        raise StudentError(f"bad --sizes {spec!r}: {hint}")
    return out


def parse_thresholds(spec: str | None) -> list[float]:
    if not spec:
        return list(DEFAULT_THRESHOLDS)
    try:
        ts = [float(x) for x in spec.replace(" ", "").split(",") if x]
    except ValueError:
        raise StudentError(f"bad --thresholds {spec!r}: give confidences like 0.5,0.7,0.9") from None
    if not ts or any(not 0 <= t <= 1 for t in ts):
        raise StudentError(f"bad --thresholds {spec!r}: values must be between 0 and 1")
    return sorted(set(ts))


@dataclass(frozen=True)
class Item:
    """One exported item."""

    id: str
    split: str
    text: str
    target: Any  # the teacher's label id (or list of ids): the training target
    teacher: Any  # the teacher's label name (or list of names)
    teacher_conf: float | None


@dataclass
class Setup:
    """Everything known before training: the items, their roles, the gold labels and the slice columns."""

    ds_dir: Path
    label_names: list[str]
    multi_label: bool
    items: list[Item]
    roles: Roles
    gold_map: dict[str, Any] | None
    gold_info: dict[str, Any]
    eval_by: SliceColumn | None
    selection: Selection | None
    sizes: list[tuple[str, int]]
    notes: list[str]

    def texts(self, idx: list[int]) -> list[str]:
        return [self.items[i].text for i in idx]

    def targets(self, idx: list[int]) -> list[Any]:
        return [self.items[i].target for i in idx]

    def validation_set(self) -> EvalSet | None:
        idx = self.roles.validation
        return EvalSet(self.texts(idx), self.targets(idx)) if idx else None


def _load_export(dataset: str | Path):
    from datasets import load_from_disk

    ds_dir = resolve_dataset_dir(dataset)
    dsd = load_from_disk(str(ds_dir))
    if not hasattr(dsd, "keys"):
        raise StudentError(f"{ds_dir} holds a single Dataset, expected a DatasetDict with a train split")
    col, label_names, multi_label = label_schema(dsd)
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise StudentError(f"{ds_dir} has no (non-empty) train split")
    return ds_dir, dsd, col, label_names, multi_label


def _items(dsd, col: str, label_names: list[str], multi_label: bool) -> list[Item]:
    items: list[Item] = []
    for s in dsd:
        d = dsd[s]
        conf = list(d["confidence"]) if "confidence" in d.column_names else [None] * len(d)
        for id_, text, target, c in zip(d["id"], d["text"], d[col], conf):
            teacher = [label_names[i] for i in target] if multi_label else label_names[target]
            items.append(Item(id_, s, text, target, teacher, c))
    return items


def _load_gold_map(
    path: Path | None, label_names: list[str], multi_label: bool, all_ids: list[str], notes: list[str]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    from annotator.student.gold import load_gold

    if path is None:
        notes.append("no --gold: only student-vs-teacher agreement is reported")
        return None, {}
    g = load_gold(path, label_names, multi_label)
    gold_map: dict[str, Any] = g.labels if multi_label else g.single()
    matched = sum(1 for i in all_ids if i in gold_map)
    if matched == 0:
        raise StudentError(
            f"none of the {len(gold_map)} gold items in {path} matches a dataset id "
            f"(gold e.g. {next(iter(gold_map))!r}, dataset e.g. {all_ids[0]!r})"
        )
    if g.unknown_labels:
        notes.append(f"gold labels outside the label set (count as errors): {g.unknown_labels}")
    if g.ties:
        notes.append(f"{g.ties} gold item(s) have a tied human vote: no gold label, left out of gold scores")
    info = {
        "path": str(path),
        "format": g.format,
        "annotators": g.n_annotators,
        "items": len(gold_map),
        "matched_items": matched,
        "tied_items_without_gold": g.ties,
        "labels_outside_label_set": g.unknown_labels,
    }
    return gold_map, info


def _eval_split(dsd, notes: list[str]) -> str | None:
    split = next((s for s in ("test", "validation") if s in dsd and len(dsd[s]) > 0), None)
    if split is None:
        notes.append("no non-empty test/validation split: held-out scores are missing")
    elif split != "test":
        notes.append("no non-empty test split: the validation split is the held-out scope (and fits the calibration)")
    return split


def _roles(
    opts: StudentOptions, ds_dir: Path, dsd, items: list[Item], notes: list[str]
) -> tuple[Roles, SliceColumn | None, Selection | None]:
    """Parse the where options, read every slice column once, assign the items' roles."""
    wheres = [
        None if text is None else parse_where(text, option)
        for option, text in (("--train-where", opts.train_where), ("--test-where", opts.test_where))
    ]
    train_where, test_where = wheres
    columns: dict[str, SliceColumn] = {}
    for option, w in zip(("--train-where", "--test-where"), wheres):
        for c in [] if w is None else w.columns:
            columns[c] = columns.get(c) or read_column(c, ds_dir, opts.gold, option)
    eval_by = None
    if opts.eval_by:
        eval_by = columns.get(opts.eval_by) or read_column(opts.eval_by, ds_dir, opts.gold, "--eval-by")
    eval_split = _eval_split(dsd, [] if test_where else notes)
    ids = [it.id for it in items]
    roles = assign_roles(ids, [it.split for it in items], eval_split, train_where, test_where, columns)
    chosen = selection(roles, ids, train_where, test_where, columns) if columns else None
    return roles, eval_by, chosen


def load_setup(dataset: str | Path, opts: StudentOptions) -> Setup:
    """Load the export and the gold, apply --train-where/--test-where, parse --sizes."""
    ds_dir, dsd, col, label_names, multi_label = _load_export(dataset)
    notes: list[str] = []
    items = _items(dsd, col, label_names, multi_label)
    gold_map, gold_info = _load_gold_map(opts.gold, label_names, multi_label, [it.id for it in items], notes)
    roles, eval_by, chosen = _roles(opts, ds_dir, dsd, items, notes)
    if not roles.validation:
        what = "validation split" if opts.train_where is None else "validation item matches --train-where"
        notes.append(f"no {what}: every epoch is trained (no model selection) and no calibration")
    if roles.held_name is not None and not roles.held:
        notes.append(f"no {roles.held_name} item matches --train-where: held-out scores are empty")
    sizes = parse_sizes(opts.sizes, len(roles.train))
    return Setup(ds_dir, label_names, multi_label, items, roles, gold_map, gold_info, eval_by, chosen, sizes, notes)
