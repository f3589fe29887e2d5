"""Crash-safe result store and cache (SQLite, WAL).

* ``samples``: one row per teacher answer, keyed by a hash of everything that shapes it (rendered prompt, model,
  sampling params, schema, structured-output mode, sample index). Written and committed the moment an answer is
  final, so a killed run loses nothing that finished and a rerun never asks the teacher twice.
* ``results``: the per-row records of the current run, written as rows finish (any order) and streamed out in
  input order at the end. Rebuilt on every run from ``samples`` (cache hits are free).
* ``seen``: ids of the current run, to catch duplicate ids without holding them in memory.
* ``batches`` / ``batch_items``: Batch API input files and batches submitted (``teacher.mode: batch``) and the
  requests in each, committed before and right after each batch is created, so a rerun re-attaches to them.
* ``sample_usage``: tokens (prompt, cached prompt, completion) and USD cost per sample, over every call made for
  it (the engine carries a failed sample's usage forward when ``--retry-failed`` asks it again), so
  :meth:`ResultStore.spent` is what the output directory has cost in all.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class SampleResult(BaseModel):
    """The final outcome of one sample (after validation retries)."""

    ok: bool
    output: dict[str, Any] | None = None
    raw: str | None = None
    error: str | None = None
    attempts: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None  # USD, None without teacher.price
    created: float | None = Field(default=None, description="When the answer was obtained (Unix time).")


def cache_key(payload: dict[str, Any]) -> str:
    """Stable hash of a JSON-able payload."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    key TEXT PRIMARY KEY, ok INTEGER NOT NULL, output TEXT, raw TEXT, error TEXT,
    attempts INTEGER NOT NULL, tokens INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS results (idx INTEGER PRIMARY KEY, id TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (file_id TEXT PRIMARY KEY, batch_id TEXT, done INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS batch_items (custom_id TEXT PRIMARY KEY, file_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sample_usage (
    key TEXT PRIMARY KEY, prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, cost REAL);
"""


class ResultStore:
    """SQLite-backed cache + result log for one output directory."""

    def __init__(self, path: Path, result_commit_every: int = 256):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        self.conn.executescript(_SCHEMA)
        self._pending_results = 0
        self._commit_every = result_commit_every
        self._in_tx = False

    # -- samples (the cache) -------------------------------------------------------------------------
    def get_sample(self, key: str) -> SampleResult | None:
        row = self.conn.execute(
            "SELECT ok, output, raw, error, attempts, tokens, created, prompt_tokens, cached_tokens, completion_tokens, "
            "cost FROM samples LEFT JOIN sample_usage USING (key) WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return SampleResult(
            ok=bool(row[0]), output=json.loads(row[1]) if row[1] else None, raw=row[2], error=row[3],
            attempts=row[4], tokens=row[5], created=row[6], prompt_tokens=row[7] or 0, cached_tokens=row[8] or 0,
            completion_tokens=row[9] or 0, cost=row[10],
        )

    def put_sample(self, key: str, result: SampleResult) -> None:
        """Persist one teacher answer with its usage and commit immediately (stamping ``result.created`` if
        unset)."""
        self._end_tx()
        if result.created is None:
            result.created = time.time()
        self.conn.execute("BEGIN")
        self.conn.execute(
            "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, int(result.ok), json.dumps(result.output) if result.output is not None else None, result.raw,
             result.error, result.attempts, result.tokens, result.created),
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO sample_usage VALUES (?, ?, ?, ?, ?)",
            (key, result.prompt_tokens, result.cached_tokens, result.completion_tokens, result.cost),
        )
        self.conn.execute("COMMIT")

    # -- Batch API ------------------------------------------------------------------------------------
    def add_batch_file(self, file_id: str, custom_ids: list[str]) -> None:
        """Record an uploaded batch input file and its requests (before the batch is created)."""
        self._end_tx()
        self.conn.execute("BEGIN")
        self.conn.execute("INSERT INTO batches (file_id) VALUES (?)", (file_id,))
        self.conn.executemany("INSERT OR REPLACE INTO batch_items VALUES (?, ?)", [(c, file_id) for c in custom_ids])
        self.conn.execute("COMMIT")

    def set_batch_id(self, file_id: str, batch_id: str) -> None:
        self._end_tx()
        self.conn.execute("UPDATE batches SET batch_id = ? WHERE file_id = ?", (batch_id, file_id))

    def finish_batch(self, file_id: str) -> None:
        self._end_tx()
        self.conn.execute("UPDATE batches SET done = 1 WHERE file_id = ?", (file_id,))

    def open_batches(self) -> list[tuple[str, str | None]]:
        """``(file_id, batch_id or None)`` of batches not processed yet."""
        return [(r[0], r[1]) for r in self.conn.execute("SELECT file_id, batch_id FROM batches WHERE done = 0")]

    def open_batch_items(self) -> dict[str, str]:
        """custom_id -> file_id of the requests in batches not processed yet."""
        return dict(self.conn.execute(
            "SELECT custom_id, file_id FROM batch_items JOIN batches USING (file_id) WHERE done = 0"
        ).fetchall())

    def spent(self) -> float:
        """USD spent on every teacher answer stored here (0.0 when no price was ever set)."""
        return float(self.conn.execute("SELECT COALESCE(SUM(cost), 0) FROM sample_usage").fetchone()[0])

    # -- the current run -----------------------------------------------------------------------------
    def start_run(self) -> None:
        self._end_tx()
        self.conn.execute("DELETE FROM results")
        self.conn.execute("DELETE FROM seen")

    def mark_seen(self, row_id: str, idx: int) -> int | None:
        """Remember an id; return the index it was first seen at when it is a duplicate."""
        self._begin_tx()
        try:
            self.conn.execute("INSERT INTO seen VALUES (?, ?)", (row_id, idx))
        except sqlite3.IntegrityError:
            row = self.conn.execute("SELECT idx FROM seen WHERE id = ?", (row_id,)).fetchone()
            return int(row[0])
        return None

    def put_result(self, idx: int, row_id: str, record_json: str) -> None:
        self._begin_tx()
        self.conn.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (idx, row_id, record_json))
        self._pending_results += 1
        if self._pending_results >= self._commit_every:
            self._end_tx()

    def iter_results(self) -> Iterator[str]:
        self._end_tx()
        cur = self.conn.execute("SELECT record FROM results ORDER BY idx")
        while True:
            rows = cur.fetchmany(1024)
            if not rows:
                return
            for (rec,) in rows:
                yield rec

    def count_samples(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    # -- transactions --------------------------------------------------------------------------------
    def _begin_tx(self) -> None:
        if not self._in_tx:
            self.conn.execute("BEGIN")
            self._in_tx = True

    def _end_tx(self) -> None:
        if self._in_tx:
            self.conn.execute("COMMIT")
            self._in_tx = False
            self._pending_results = 0

    def close(self) -> None:
        self._end_tx()
        self.conn.close()


def typical_completion_tokens(path: Path) -> tuple[float, int] | None:
    """Mean completion tokens per teacher call over the answers stored in the cache file ``path`` (opened
    read-only), and over how many calls; None when there is no such file or no answer with usage."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT SUM(completion_tokens), SUM(attempts) FROM samples JOIN sample_usage USING (key) "
            "WHERE completion_tokens > 0"
        ).fetchone()
    except sqlite3.Error:  # an older cache without usage, or not ours
        return None
    finally:
        conn.close()
    if not row or not row[1]:
        return None
    return row[0] / row[1], int(row[1])
