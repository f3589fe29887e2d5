"""When `annotator distill` stops asking the teacher: pure functions of the finished rounds and the options.

Checked after every round, in this order (the first that holds is the reason):

* ``matched``: with ``--gold``, the student's macro-F1 against the human gold is at least the teacher's minus
  ``match_margin`` (on the same human-labelled rows, which are never trained on);
* ``plateau``: the student's macro-F1 against the teacher on the validation rows has not risen by more than
  ``min_delta`` above its best for ``patience`` rounds (0: never);
* ``budget``: the teacher-call budget cannot pay for one more row;
* ``cost``: the money budget is spent;
* ``pool``: every row of the corpus has a teacher label (or was asked).

Rerunning with looser options (a larger budget, more patience) re-checks them and continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from annotator.distill.state import RoundRecord, Stop


@dataclass(frozen=True)
class StopRules:
    budget: int | None = None  # teacher calls (rows x samples, rechecks x their samples)
    max_cost: float | None = None  # USD
    patience: int = 2  # rounds without validation progress (0: never stop for that)
    min_delta: float = 0.005
    match_margin: float | None = None  # None: no --gold, no "matched" rule
    samples: int = 1  # teacher calls per row


def rounds_without_progress(rounds: Sequence[RoundRecord], min_delta: float) -> int:
    """Rounds since the validation macro-F1 last rose more than ``min_delta`` above its best so far."""
    best, since = None, 0
    for r in rounds:
        f1 = r.student_validation.macro_f1 if r.student_validation else None
        if f1 is None:
            since += 1
        elif best is None or f1 > best + min_delta:
            best, since = f1, 0
        else:
            since += 1
    return since


def stop_rule(
    rounds: Sequence[RoundRecord], rules: StopRules, planned_calls: int, spent: float, pool_left: int
) -> Stop | None:
    """Why to stop after ``rounds`` (see the module docstring), or None to go on."""
    last = rounds[-1]
    s, t = last.student_test, last.teacher_test
    if (
        rules.match_margin is not None
        and s
        and t
        and s.macro_f1 is not None
        and t.macro_f1 is not None
        and s.macro_f1 >= t.macro_f1 - rules.match_margin
    ):
        return Stop(
            reason="matched",
            detail=f"the student matches the teacher on the human sample (macro-F1 "
            f"{s.macro_f1:.3f} vs {t.macro_f1:.3f}, margin {rules.match_margin:g})",
        )
    idle = rounds_without_progress(rounds, rules.min_delta)
    if rules.patience and idle >= rules.patience:
        return Stop(
            reason="plateau",
            detail=f"the student's validation macro-F1 has not improved by more than "
            f"{rules.min_delta:g} for {idle} round(s) (--patience {rules.patience})",
        )
    if rules.budget is not None and rules.budget - planned_calls < rules.samples:
        return Stop(reason="budget", detail=f"{planned_calls} of the {rules.budget} teacher calls of --budget are used")
    if rules.max_cost is not None and spent >= rules.max_cost:
        return Stop(reason="cost", detail=f"${spent:.4f} of --max-cost ${rules.max_cost:g} is spent")
    if pool_left <= 0:
        return Stop(reason="pool", detail="every row of the corpus has been asked of the teacher")
    return None
