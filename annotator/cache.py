"""Crash-safe result store and cache (SQLite, WAL).

* ``samples``: one row per teacher answer, keyed by a hash of everything that shapes it (rendered prompt, model,
  sampling params, schema, structured-output mode, sample index). Written and committed the moment an answer is
  final, so a killed run loses nothing that finished and a rerun never asks the teacher twice.
* ``results``: the per-row records of the current run, written as rows finish (any order) and streamed out in
  input order at the end. Rebuilt on every run from ``samples`` (cache hits are free).
* ``meta``: small facts about the run directory (its binding to one pipeline and input, see
  :mod:`annotator.rundir`).
* ``batches`` / ``batch_items``: Batch API input files and batches submitted (``teacher.mode: batch``) and the
  requests in each, committed before and right after each batch is created, so a rerun re-attaches to them.
* ``sample_usage``: tokens (prompt, cached prompt, completion) and USD cost per sample, over every call made for
  it (the engine carries a failed sample's usage forward when ``--retry-failed`` asks it again), so
  :meth:`ResultStore.spent` is what the output directory has cost in all.

Durability (:data:`SYNCHRONOUS`): WAL with ``synchronous=NORMAL``. A committed answer survives a crash, ``kill -9``
or Ctrl-C of the process. A power cut or an OS crash can lose the commits since the last WAL checkpoint (SQLite
checkpoints every 1000 pages, about 4 MB: the last few thousand answers at most); the database stays consistent
and those rows are asked again by the next run. ``synchronous=FULL`` (an fsync per answer) would close that gap
at a measured cost of ~5x fewer rows/s with a fast teacher (``make bench``, durability section), so it is not the
default. Every SQLite failure (damaged file, full disk, read-only location) becomes one
:class:`~annotator.errors.RunDirError` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel, Field

from annotator.errors import RunDirError

log = logging.getLogger(__name__)

SYNCHRONOUS = "NORMAL"  # "FULL" also survives power loss, at a cost measured by `make bench` (see above)


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
    transport: bool = False  # the teacher call failed for good (never cached, so never read back as True)


def cache_key(payload: dict[str, Any]) -> str:
    """Stable hash of a JSON-able payload."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def sample_key(
    *,
    messages: list[dict[str, str]],
    model: str,
    mode: str,
    schema: dict[str, Any] | None,
    temperature: float,
    max_tokens: int,
    seed: int,
    sample: int,
    task: str,
) -> str:
    """The cache key of one sample: a hash of everything that shapes its answer.

    ``messages`` is the rendered prompt (a re-ask's extra turns are not part of it: a sample is stored once, with
    the outcome of all its tries), ``model`` the backend's model id, ``mode`` how the schema is enforced,
    ``temperature``/``seed`` those of the sample's first try, ``sample`` its index (``teacher.samples``) and
    ``task`` the fingerprint of the task config (:func:`task_fingerprint`). Validation settings
    (``validation.*``) are not part of it: they decide how often to ask, not what an answer means.
    """
    payload = {
        "messages": messages,
        "model": model,
        "mode": mode,
        "schema": schema,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "seed": seed,
        "sample": sample,
        "task": task,
    }
    key = cache_key(payload)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "sample key %s: model=%s mode=%s temperature=%s max_tokens=%s seed=%s sample=%s task=%s "
            "prompt=%s schema=%s",
            key[:16],
            model,
            mode,
            temperature,
            max_tokens,
            seed,
            sample,
            task[:16],
            prompt_hash(messages),
            cache_key({"schema": schema})[:16],
        )
    return key


def task_fingerprint(task: BaseModel) -> str:
    """The ``task`` part of :func:`sample_key`: a hash of the task config (without ``few_shot``, whose examples
    are already in the rendered prompt)."""
    return cache_key(task.model_dump(mode="json", exclude={"few_shot"}))


def prompt_hash(messages: list[dict[str, str]]) -> str:
    """A short hash of a rendered prompt (a record's ``prompt_hash``)."""
    return cache_key({"messages": messages})[:16]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    key TEXT PRIMARY KEY, ok INTEGER NOT NULL, output TEXT, raw TEXT, error TEXT,
    attempts INTEGER NOT NULL, tokens INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS results (idx INTEGER PRIMARY KEY, id TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (file_id TEXT PRIMARY KEY, batch_id TEXT, done INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS batch_items (custom_id TEXT PRIMARY KEY, file_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sample_usage (
    key TEXT PRIMARY KEY, prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, cost REAL);
"""
_P = ParamSpec("_P")
_R = TypeVar("_R")


def explain_sqlite_error(exc: sqlite3.Error, path: Path) -> RunDirError:
    """One clear line for an SQLite failure on the cache file ``path``."""
    msg = str(exc)
    low = msg.lower()
    if "full" in low:
        return RunDirError(
            f"no space left on the device of {path}: free some space and run the same command again "
            "(every answer saved so far is kept)"
        )
    if "readonly" in low or "read-only" in low or "unable to open" in low or "permission" in low:
        return RunDirError(f"cannot write {path} ({msg}): make the output location writable or set another output.dir")
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return RunDirError(
            f"{path} is damaged ({msg}). Delete it to start this output directory from scratch "
            "(answers saved in it will be asked again)"
        )
    return RunDirError(f"cache {path} failed: {msg}")


def _sqlite_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn an SQLite error raised by a :class:`ResultStore` method into a :class:`RunDirError`."""

    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            store = args[0]
            assert isinstance(store, ResultStore)
            raise explain_sqlite_error(exc, store.path) from None

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class ResultStore:
    """SQLite-backed cache + result log for one output directory."""

    @_sqlite_errors
    def __init__(self, path: Path, result_commit_every: int = 256):
        self.path = path
        self._pending_results = 0
        self._commit_every = result_commit_every
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
            self.conn.executescript(_SCHEMA)
        except sqlite3.Error:
            self.conn.close()
            raise

    # -- samples (the cache) -------------------------------------------------------------------------
    @_sqlite_errors
    def get_sample(self, key: str) -> SampleResult | None:
        row = self.conn.execute(
            "SELECT ok, output, raw, error, attempts, tokens, created, prompt_tokens, cached_tokens, "
            "completion_tokens, "
            "cost FROM samples LEFT JOIN sample_usage USING (key) WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return SampleResult(
            ok=bool(row[0]),
            output=json.loads(row[1]) if row[1] else None,
            raw=row[2],
            error=row[3],
            attempts=row[4],
            tokens=row[5],
            created=row[6],
            prompt_tokens=row[7] or 0,
            cached_tokens=row[8] or 0,
            completion_tokens=row[9] or 0,
            cost=row[10],
        )

    @_sqlite_errors
    def put_sample(self, key: str, result: SampleResult) -> None:
        """Persist one teacher answer with its usage and commit immediately (stamping ``result.created`` if
        unset)."""
        self._end_tx()
        if result.created is None:
            result.created = time.time()
        self.conn.execute("BEGIN")
        self.conn.execute(
            "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                int(result.ok),
                json.dumps(result.output) if result.output is not None else None,
                result.raw,
                result.error,
                result.attempts,
                result.tokens,
                result.created,
            ),
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO sample_usage VALUES (?, ?, ?, ?, ?)",
            (key, result.prompt_tokens, result.cached_tokens, result.completion_tokens, result.cost),
        )
        self.conn.execute("COMMIT")

    # -- Batch API ------------------------------------------------------------------------------------
    @_sqlite_errors
    def add_batch_file(self, file_id: str, custom_ids: list[str]) -> None:
        """Record an uploaded batch input file and its requests (before the batch is created)."""
        self._end_tx()
        self.conn.execute("BEGIN")
        self.conn.execute("INSERT INTO batches (file_id) VALUES (?)", (file_id,))
        self.conn.executemany("INSERT OR REPLACE INTO batch_items VALUES (?, ?)", [(c, file_id) for c in custom_ids])
        self.conn.execute("COMMIT")

    @_sqlite_errors
    def set_batch_id(self, file_id: str, batch_id: str) -> None:
        self._end_tx()
        self.conn.execute("UPDATE batches SET batch_id = ? WHERE file_id = ?", (batch_id, file_id))

    @_sqlite_errors
    def finish_batch(self, file_id: str) -> None:
        self._end_tx()
        self.conn.execute("UPDATE batches SET done = 1 WHERE file_id = ?", (file_id,))

    @_sqlite_errors
    def open_batches(self) -> list[tuple[str, str | None]]:
        """``(file_id, batch_id or None)`` of batches not processed yet."""
        return [(r[0], r[1]) for r in self.conn.execute("SELECT file_id, batch_id FROM batches WHERE done = 0")]

    @_sqlite_errors
    def open_batch_items(self) -> dict[str, str]:
        """custom_id -> file_id of the requests in batches not processed yet."""
        return dict(
            self.conn.execute(
                "SELECT custom_id, file_id FROM batch_items JOIN batches USING (file_id) WHERE done = 0"
            ).fetchall()
        )

    @_sqlite_errors
    def spent(self) -> float:
        """USD spent on every teacher answer stored here (0.0 when no price was ever set)."""
        return float(self.conn.execute("SELECT COALESCE(SUM(cost), 0) FROM sample_usage").fetchone()[0])

    # -- facts about the run directory ---------------------------------------------------------------
    @_sqlite_errors
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_sqlite_errors
    def set_meta(self, key: str, value: str) -> None:
        self._end_tx()
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- the current run -----------------------------------------------------------------------------
    @_sqlite_errors
    def start_run(self) -> None:
        self._end_tx()
        self.conn.execute("DELETE FROM results")

    @_sqlite_errors
    def put_result(self, idx: int, row_id: str, record_json: str) -> None:
        self._begin_tx()
        self.conn.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (idx, row_id, record_json))
        self._pending_results += 1
        if self._pending_results >= self._commit_every:
            self._end_tx()

    def iter_results(self) -> Iterator[str]:
        """Every record of the current run, in input order (streamed)."""
        try:
            self._end_tx()
            cur = self.conn.execute("SELECT record FROM results ORDER BY idx")
            while rows := cur.fetchmany(1024):
                for (rec,) in rows:
                    yield rec
        except sqlite3.Error as exc:
            raise explain_sqlite_error(exc, self.path) from None

    # -- transactions --------------------------------------------------------------------------------
    def _begin_tx(self) -> None:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN")

    def _end_tx(self) -> None:
        # in_transaction, not a flag of ours: SQLite rolls a transaction back by itself on some errors (full disk)
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
        self._pending_results = 0

    def close(self) -> None:
        """Commit what is pending and close. On an error path the commit may fail too: that is logged, and the
        connection is closed anyway (the first error is the one the user needs)."""
        try:
            self._end_tx()
        except sqlite3.Error as exc:
            log.warning("could not commit the last results to %s: %s", self.path, exc)
        finally:
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
