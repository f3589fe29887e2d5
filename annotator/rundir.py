"""The run directory's guarantees: one process at a time, one pipeline and input per directory, honest counts.

* :class:`RunDirLock`: an exclusive ``fcntl.flock`` on ``OUTPUT_DIR/run.lock``, which holds the owner's pid. A
  second process fails at once naming that pid; the kernel drops the lock when its owner dies, so a lock left by a
  killed run is simply taken over.
* :func:`bind_run_dir`: the first run records which pipeline and input the directory belongs to (in the cache's
  ``meta`` table); a run of another pipeline or input is refused. Edits of labels, prompts or the teacher are the
  same binding (the cache key already covers them), and so is ``--limit``.
* :func:`verify_outputs`: before a run reports success, ``run.json``'s counts are checked against what
  ``annotations.jsonl`` really holds.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sqlite3
from pathlib import Path
from types import TracebackType

from annotator.cache import ResultStore, explain_sqlite_error
from annotator.config import PipelineConfig
from annotator.errors import InconsistentOutputs, RunDirBusy, RunDirError
from annotator.records import ANNOTATIONS_FILE, MANIFEST_FILE, RunManifest, read_manifest

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
_BINDING_KEY = "binding"


def os_error(exc: OSError, path: Path | str) -> RunDirError:
    """One clear line for a failed write in the run directory."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return RunDirError(f"no space left writing {path} ({exc.strerror}): free some space and run the same "
                           "command again (every answer saved so far is kept)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RunDirError(f"cannot write {path} ({exc.strerror}): make it writable or set another output.dir")
    return RunDirError(f"cannot write {path}: {exc.strerror or exc}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, fsynced, then renamed over it (a failed
    write, e.g. a full disk, removes the temporary file and leaves ``path`` as it was)."""
    atomic_write_files({path: text})


def atomic_write_files(files: dict[Path, str]) -> None:
    """Write a set of files whole or not at all: every one to a temporary file first (fsynced), then all renamed
    into place in the given order. A failed write removes the temporary files and leaves every target as it was."""
    tmps = {path: path.with_name(path.name + ".tmp") for path in files}
    try:
        for path, text in files.items():
            try:
                with tmps[path].open("w", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:  # a failed write() does not say which file: name it
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        raise
    for path, tmp in tmps.items():
        os.replace(tmp, path)


def write_run_outputs(run_dir: Path, store: ResultStore, manifest: RunManifest) -> None:
    """``annotations.jsonl`` (input order, from the store's result log), then ``run.json``; each atomically and
    fsynced, then the directory (so the renames survive a power cut too)."""
    target = run_dir / ANNOTATIONS_FILE
    tmp = target.with_suffix(".jsonl.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for rec in store.iter_results():
                fh.write(rec)
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        atomic_write_text(run_dir / MANIFEST_FILE, manifest.model_dump_json(indent=2))
        fsync_dir(run_dir)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(exc, exc.filename or run_dir) from None


def fsync_dir(path: Path) -> None:
    """Make the renames inside ``path`` durable (a power cut after this keeps them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_run_dir(path: Path) -> None:
    """Create the output directory (and parents) or say in one line why it cannot be used."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output.dir {path} is a file, not a directory: set output.dir to a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"output.dir {path}: a parent of it is a file, not a directory") from None
    except NotADirectoryError:
        raise RunDirError(f"output.dir {path}: a parent of it is a file, not a directory") from None
    except OSError as exc:
        raise os_error(exc, path) from None


class RunDirLock:
    """``with RunDirLock(dir):`` - hold the run directory exclusively (see the module docstring)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        prepare_run_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise os_error(exc, self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise RunDirBusy(
                f"{self.path.parent} is in use by another annotator process (pid {holder or 'unknown'}): wait for "
                "it to finish, or set another output.dir"
            ) from None
        previous = _read_pid(fd)
        if previous:  # written by a process that died without releasing (a clean exit empties the file)
            log.warning("%s: taking over the lock of pid %s, which is no longer running", self.path.parent, previous)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise os_error(exc, self.path) from None
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:  # a full disk cannot stop the release; the next owner just logs a takeover
            pass
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def binding_of(cfg: PipelineConfig) -> dict[str, str]:
    """What a run directory is bound to: the pipeline's name, its input file and columns, and the task type."""
    return {"pipeline": cfg.name, "input": str(cfg.input.path), "id_column": cfg.input.id_column,
            "text_column": cfg.input.text_column, "task": cfg.task.type}


def bind_run_dir(store: ResultStore, cfg: PipelineConfig) -> None:
    """Record the binding on first use; refuse a run of another pipeline or input in a used directory."""
    wanted = binding_of(cfg)
    stored = store.get_meta(_BINDING_KEY)
    if stored is None:
        store.set_meta(_BINDING_KEY, json.dumps(wanted, sort_keys=True))
        return
    bound = json.loads(stored)
    differs = [k for k in wanted if bound.get(k) != wanted[k]]
    if differs:
        was = ", ".join(f"{k}={bound.get(k)!r}" for k in differs)
        now = ", ".join(f"{k}={wanted[k]!r}" for k in differs)
        where = cfg.source_path or "the pipeline file"
        raise RunDirError(
            f"output.dir {store.path.parent} belongs to another run ({was}; this pipeline has {now}). Set another "
            f"output.dir in {where}, or delete {store.path.parent} to start it over"
        )


def verify_outputs(run_dir: Path, store: ResultStore) -> None:
    """Check ``run.json`` against ``annotations.jsonl``: rows, ok/failed counts, every id once.

    Ids are checked in a temporary table of the cache database (on disk), so memory stays flat.
    """
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise InconsistentOutputs(f"{run_dir}: run.json is missing after the run")
    try:
        found = _count_annotations(run_dir / ANNOTATIONS_FILE, store.conn)
    except sqlite3.Error as exc:
        raise explain_sqlite_error(exc, store.path) from None
    claimed = {"rows": manifest.rows_total, "ok": manifest.rows_ok, "failed": manifest.rows_failed}
    if claimed != found:
        raise InconsistentOutputs(
            f"{run_dir}: run.json claims {claimed} but {ANNOTATIONS_FILE} holds {found}; do not use this run. "
            "Was another program writing into the directory? Run the same command again to rebuild both files"
        )


def _count_annotations(path: Path, conn: sqlite3.Connection) -> dict[str, int]:
    counts = {"rows": 0, "ok": 0, "failed": 0}
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS verify_ids (id TEXT PRIMARY KEY, line INTEGER NOT NULL)")
    conn.execute("BEGIN")
    try:
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                try:
                    conn.execute("INSERT INTO verify_ids VALUES (?, ?)", (rec.get("id"), n))
                except sqlite3.IntegrityError:
                    first = conn.execute("SELECT line FROM verify_ids WHERE id = ?", (rec.get("id"),)).fetchone()[0]
                    raise InconsistentOutputs(
                        f"{path}: id {rec.get('id')!r} occurs twice (lines {first} and {n}); do not use this run. "
                        "Run the same command again to rebuild it"
                    ) from None
                counts["rows"] += 1
                counts[rec.get("status", "failed")] = counts.get(rec.get("status", "failed"), 0) + 1
    finally:
        conn.execute("ROLLBACK")
    return counts
