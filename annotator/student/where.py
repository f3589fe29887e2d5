"""``train-student --train-where / --test-where``: a small row filter on slice columns, parsed by hand (no eval).

Grammar (keywords in lower case)::

    EXPR  := COND ("and" COND)*
    COND  := COLUMN "==" VALUE | COLUMN "!=" VALUE
           | COLUMN "in" "[" VALUE ("," VALUE)* "]" | COLUMN "not" "in" "[" VALUE ("," VALUE)* "]"
    COLUMN := a letter (any script) or _, then letters, digits, _ . -
    VALUE := a bare word (no spaces, quotes, brackets, commas, = or !) or a 'quoted' / "quoted" string

Examples: ``language != el``, ``language in [de, fr]``, ``language == el and source != 'web forum'``.
Values are compared as text, surrounding spaces removed; the column's cells follow the id/label cell rule (a
number 2024.0 in a JSONL or Parquet input is ``2024``). A row without a value in a column matches no condition on
that column (``language != el`` leaves it out too).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from annotator.audit.slices import MISSING
from annotator.errors import AnnotatorError
from annotator.records import normalize_id

FORM = "COLUMN == V, COLUMN != V, COLUMN in [a, b], COLUMN not in [a, b], joined by 'and'"
_TOKEN = re.compile(r"\s*(==|!=|\[|\]|,|'[^']*'|\"[^\"]*\"|[^\s\[\],=!'\"]+|\S)")
_COLUMN = re.compile(r"[^\W\d][\w.\-]*\Z")  # a letter (any script) or _, then letters, digits, _ . -


class WhereError(AnnotatorError):
    """A --train-where / --test-where expression is malformed or selects nothing."""


@dataclass(frozen=True)
class Condition:
    column: str
    values: tuple[str, ...]
    negated: bool = False  # != / not in

    def matches(self, value: str | None) -> bool:
        return value is not None and (value in self.values) != self.negated


@dataclass(frozen=True)
class Where:
    """A parsed expression: every condition must hold."""

    option: str  # the option it came from, for messages (--train-where)
    text: str
    conditions: tuple[Condition, ...]

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c.column for c in self.conditions))

    def matches(self, row: Mapping[str, str | None]) -> bool:
        """``row``: column -> value of one item (None or absent: no value)."""
        return all(c.matches(row.get(c.column)) for c in self.conditions)

    def select(self, rows: Sequence[Mapping[str, str | None]], what: str = "rows") -> list[int]:
        """Positions of the rows that match; a :class:`WhereError` naming each value's count when none does."""
        hits = [k for k, row in enumerate(rows) if self.matches(row)]
        if not hits:
            counts = "; ".join(f"{col}: {value_counts(rows, col)}" for col in self.columns)
            raise WhereError(f"{self.option} {self.text!r} selects 0 of the {len(rows)} {what} ({counts})")
        return hits


def value_counts(rows: Sequence[Mapping[str, str | None]], column: str) -> str:
    """``en 12, el 3, (missing) 1``: the values of ``column`` in ``rows``, most frequent first."""
    counts = Counter(row.get(column) or MISSING for row in rows)
    return ", ".join(f"{v} {n}" for v, n in counts.most_common()) or "no rows"


class _Tokens:
    def __init__(self, option: str, text: str) -> None:
        self.option, self.text = option, text
        self.items = _TOKEN.findall(text)
        self.pos = 0

    def fail(self, expected: str, hint: str = "") -> WhereError:
        got = f"{self.items[self.pos]!r}" if self.pos < len(self.items) else "the end"
        hint = f" ({hint})" if hint else ""
        return WhereError(f"bad {self.option} {self.text!r}: expected {expected}, got {got}{hint} (form: {FORM})")

    def peek(self) -> str | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self, expected: str, *allowed: str) -> str:
        tok = self.peek()
        if tok is None or (allowed and tok not in allowed):
            raise self.fail(expected)
        self.pos += 1
        return tok

    def value(self) -> str:
        tok = self.take("a value")
        if tok in ("'", '"'):
            self.pos -= 1
            raise self.fail("a value", f"its closing {tok} is missing")
        if tok[0] in "'\"":
            tok = tok[1:-1]
        elif tok in ("[", "]", ",", "==", "!=") or not re.match(r"[^\s\[\],=!'\"]", tok):
            self.pos -= 1
            raise self.fail("a value")
        value = normalize_id(tok)
        if value is None:
            self.pos -= 1
            raise self.fail("a non-blank value")
        return value


def _condition(toks: _Tokens) -> Condition:
    column = toks.take("a column name")
    if not _COLUMN.match(column):
        toks.pos -= 1
        raise toks.fail("a column name")
    tok = toks.peek()
    if tok is not None and tok.lower() in ("in", "not") and tok not in ("in", "not"):
        raise toks.fail("==, !=, in or not in", "keywords are lower case")
    op = toks.take("==, !=, in or not in", "==", "!=", "in", "not")
    if op in ("==", "!="):
        return Condition(column, (toks.value(),), op == "!=")
    if op == "not":
        toks.take("'in' after 'not'", "in")
    toks.take("'[' opening the value list", "[")
    values = [toks.value()]
    while toks.take("',' or ']'", ",", "]") == ",":
        values.append(toks.value())
    return Condition(column, tuple(dict.fromkeys(values)), op == "not")


def parse_where(text: str, option: str) -> Where:
    """Parse ``text`` (see the module docstring); a :class:`WhereError` in one line on bad syntax."""
    toks = _Tokens(option, text)
    if not toks.items:
        raise WhereError(f"{option} is empty (form: {FORM})")
    conditions = [_condition(toks)]
    while (tok := toks.peek()) is not None:
        if tok != "and":
            hint = (
                "keywords are lower case"
                if tok.lower() == "and"
                else ""
                if tok.lower() == "or"
                else "a value with spaces goes in quotes: 'a b'"
            )
            raise toks.fail("'and' between conditions ('or' is not supported)", hint)
        toks.pos += 1
        conditions.append(_condition(toks))
    return Where(option, text.strip(), tuple(conditions))
