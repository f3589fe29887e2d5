"""A simple baseline beside every student: TF-IDF + logistic regression fit on the same teacher labels.

A transformer student costs minutes of training; a bag-of-words linear model costs seconds on a CPU. When the
student does not beat it on the held-out items, the transformer has earned nothing yet (more labels, cleaner labels
or another base model are needed), and ``train-student`` says so in one plain sentence
(:attr:`annotator.student.metrics.BaselineReport.verdict`).

The baseline: word uni- and bigrams, lower-cased, sublinear term frequency (scikit-learn's ``TfidfVectorizer``),
then ``LogisticRegression`` (lbfgs; the labels weighed as the student's are, ``--class-weights``); its
regularisation ``C`` is chosen among :data:`C_GRID` by accuracy against the teacher's labels on the validation
items (ties: the smaller C; no validation items: C = 1). It is scored exactly like the student: against the human
gold on the held-out items, and against the teacher's labels. Single-label tasks only (a multi-label export gets no
baseline, and a note says so).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from annotator.student.data import Setup
from annotator.student.evaluate import EvalBlock, Scores, score
from annotator.student.metrics import BASELINE_METHOD as METHOD
from annotator.student.metrics import BaselineReport, BaselineScope

C_GRID = (0.1, 1.0, 10.0)


def fit_predict(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    texts: Sequence[str],
    balanced: bool = False,
) -> tuple[list[str], float]:
    """Fit the baseline on the training labels (C chosen on validation); its labels for ``texts`` and the C.
    ``balanced``: each label weighs the same (``class_weight="balanced"``), as the student's ``--class-weights``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    classes = sorted(set(train_labels))
    if len(classes) == 1:  # a classifier needs two classes: the baseline is then "always that label"
        return [classes[0]] * len(texts), 1.0
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    x_train = vec.fit_transform(train_texts)
    weights = "balanced" if balanced else None

    def fit(c: float) -> Any:
        return LogisticRegression(C=c, max_iter=2000, class_weight=weights).fit(x_train, list(train_labels))

    best_c, best_model = 1.0, None
    if val_texts:
        x_val = vec.transform(val_texts)
        best_acc = -1.0
        for c in C_GRID:
            model = fit(c)
            acc = float((model.predict(x_val) == list(val_labels)).mean())
            if acc > best_acc:
                best_acc, best_c, best_model = acc, c, model
    model = best_model or fit(best_c)
    return [str(x) for x in model.predict(vec.transform(texts))] if texts else [], best_c


def _scope(setup: Setup, idx: list[int], pred: list[str]) -> BaselineScope:
    items, gold = setup.items, setup.gold_map
    out = BaselineScope(items=len(idx))
    if idx:
        out.baseline_vs_teacher = score(
            [items[i].teacher for i in idx], [pred[i] for i in idx], setup.label_names, False
        )
    with_gold = [i for i in idx if gold is not None and items[i].id in gold]
    out.with_gold = len(with_gold)
    if gold is not None and with_gold:
        out.baseline = score(
            [gold[items[i].id] for i in with_gold], [pred[i] for i in with_gold], setup.label_names, False
        )
    return out


def _verdict(report: BaselineReport, student: EvalBlock | None, scope_name: str) -> None:
    """Compare on the held-out scope (vs gold when it has gold, else vs the teacher); the sentence when the student
    does not beat the baseline on both accuracy and macro-F1."""
    base = report.evaluation.get("test")
    if student is None or base is None or not student.items:
        return
    s: Scores | None
    b: Scores | None
    if student.with_gold and student.student is not None and base.baseline is not None:
        s, b, ref = student.student, base.baseline, "gold"
    else:
        s, b, ref = student.student_vs_teacher, base.baseline_vs_teacher, "teacher labels"
    if s is None or b is None or s.accuracy is None or b.accuracy is None or s.macro_f1 is None or b.macro_f1 is None:
        return
    report.compared_on = f"{scope_name} vs {ref}"
    report.student_beats_baseline = s.accuracy > b.accuracy and s.macro_f1 > b.macro_f1
    if not report.student_beats_baseline:
        report.verdict = (
            f"The student does not beat a {METHOD} baseline fit in {report.seconds:.1f}s on the same "
            f"{report.train_items} labels ({scope_name} items vs {ref}: student accuracy {s.accuracy:.3f} / macro-F1 "
            f"{s.macro_f1:.3f}, baseline {b.accuracy:.3f} / {b.macro_f1:.3f}): the transformer has earned nothing yet. "
            "More (or cleaner) labels are needed, or keep the baseline."
        )


def compare_baseline(setup: Setup, evaluation: dict[str, EvalBlock], balanced: bool = False) -> BaselineReport | None:
    """Fit the baseline on ``setup``'s train items, score it on the student's scopes ('test': the held-out items,
    'all': every item) and compare it with the student (None for a multi-label export: a note says so);
    ``balanced``: weigh the labels as the student does (``--class-weights balanced``)."""
    if setup.multi_label:
        setup.notes.append("no TF-IDF + logistic regression baseline for multi-label exports")
        return None
    t0 = time.perf_counter()
    items, roles = setup.items, setup.roles
    pred, c = fit_predict(
        [items[i].text for i in roles.train],
        [items[i].teacher for i in roles.train],
        [items[i].text for i in roles.validation],
        [items[i].teacher for i in roles.validation],
        [it.text for it in items],
        balanced,
    )
    report = BaselineReport(c=c, train_items=len(roles.train), seconds=round(time.perf_counter() - t0, 2))
    if roles.validation:
        report.validation = score(
            [items[i].teacher for i in roles.validation], [pred[i] for i in roles.validation], setup.label_names, False
        )
    if "test" in evaluation:
        report.evaluation["test"] = _scope(setup, roles.held, pred)
    report.evaluation["all"] = _scope(setup, list(range(len(items))), pred)
    _verdict(report, evaluation.get("test"), roles.held_name or "test")
    return report
