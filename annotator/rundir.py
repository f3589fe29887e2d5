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
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import NoReturn, TextIO

from annotator.cache import ResultStore, explain_sqlite_error
from annotator.errors import InconsistentOutputs, RunDirBusy, RunDirError
from annotator.records import ANNOTATIONS_FILE, MANIFEST_FILE, RunManifest, read_manifest

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
_BINDING_KEY = "binding"


def os_error(
    exc: OSError,
    path: Path | str,
    kept: str = "every answer saved so far is kept",
    elsewhere: str = "set another output.dir",
) -> RunDirError:
    """One clear line for a failed write (in the run directory; ``kept`` says what survives a full disk,
    ``elsewhere`` how to write somewhere else)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return RunDirError(
            f"no space left writing {path} ({exc.strerror}): free some space and run the same command again ({kept})"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RunDirError(f"cannot write {path} ({exc.strerror}): make it writable or {elsewhere}")
    return RunDirError(f"cannot write {path}: {exc.strerror or exc}")


def as_os_error(exc: BaseException) -> OSError | None:
    """``exc`` as the OSError it stands for: itself, or a library's wrapper that quotes one (safetensors' "No space
    left on device (os error 28)", "[Errno 28] ..."); None when it is not about the file system."""
    if isinstance(exc, OSError):
        return exc
    found = re.search(r"\(os error (\d+)\)|\[Errno (\d+)\]", str(exc))
    if not found:
        return None
    code = int(found.group(1) or found.group(2))
    return OSError(code, os.strerror(code))


def output_error(exc: OSError, path: Path | str, kept: str) -> RunDirError:
    """:func:`os_error` for a command's ``--out`` (``kept``: what a full disk leaves that the rerun may use)."""
    return os_error(exc, path, kept, elsewhere="choose another output path")


@contextmanager
def atomic_writer(path: Path) -> Iterator[TextIO]:
    """The one way a final output is written: ``with atomic_writer(path) as fh: fh.write(...)`` writes a temporary
    file beside ``path`` (``<name>.tmp``), fsyncs it and renames it over ``path`` when the block ends; when the block
    raises, the temporary file is removed and ``path`` is left as it was. Readers see the old file or the new one,
    never a part (make the rename itself durable with :func:`fsync_dir`)."""
    with atomic_writers([path]) as (fh,):
        yield fh


@contextmanager
def atomic_writers(paths: Sequence[Path]) -> Iterator[Sequence[TextIO]]:
    """:func:`atomic_writer` for a set of files written whole or none at all: one temporary file per path; when the
    block ends every one is fsynced before the first is renamed, then all are renamed in the given order. When the
    block or an fsync raises (a full disk), every temporary file is removed and every target is left as it was (an
    OSError of a single file's block that does not say which file it is about names that file)."""
    tmps = [path.with_name(path.name + ".tmp") for path in paths]
    try:
        with ExitStack() as stack:
            handles = [stack.enter_context(tmp.open("w", encoding="utf-8")) for tmp in tmps]
            yield handles
            for path, fh in zip(paths, handles):
                try:
                    fh.flush()
                    os.fsync(fh.fileno())
                except OSError as exc:
                    raise_naming(exc, path)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and len(paths) == 1:
            raise_naming(exc, paths[0])
        raise


def raise_naming(exc: OSError, path: Path) -> NoReturn:
    """Raise ``exc``, as an OSError naming ``path`` when it names no file (a failed ``write()`` does not say which
    file it was for)."""
    if exc.filename is not None or exc.errno is None:
        raise exc
    raise OSError(exc.errno, exc.strerror, str(path)) from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (:func:`atomic_writer`)."""
    with atomic_writer(path) as fh:
        fh.write(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write binary ``path`` (an image) whole or not at all (:func:`atomic_writer`, through its byte buffer)."""
    with atomic_writer(path) as fh:
        fh.buffer.write(data)


def atomic_write_files(files: Mapping[Path, str | bytes]) -> None:
    """Write a set of files (text, or bytes such as a PNG) whole or not at all, renamed into place in the given order
    (:func:`atomic_writers`)."""
    with atomic_writers(list(files)) as handles:
        for (path, data), fh in zip(files.items(), handles):
            try:
                if isinstance(data, bytes):
                    fh.buffer.write(data)
                else:
                    fh.write(data)
            except OSError as exc:
                raise_naming(exc, path)


def write_run_outputs(run_dir: Path, store: ResultStore, manifest: RunManifest, partial: bool = False) -> None:
    """``annotations.jsonl`` (input order, from the store's result log), then ``run.json``; each atomically and
    fsynced, then the directory (so the renames survive a power cut too). ``partial`` (``--limit``): not the whole
    result, so ``annotations.jsonl`` never looks like a finished target to make (:func:`mark_incomplete`)."""
    try:
        with atomic_writer(run_dir / ANNOTATIONS_FILE) as fh:
            for rec in store.iter_results():
                fh.write(rec)
                fh.write("\n")
        if partial:
            mark_incomplete(run_dir / ANNOTATIONS_FILE)
        atomic_write_text(run_dir / MANIFEST_FILE, manifest.model_dump_json(indent=2))
        fsync_dir(run_dir)
    except OSError as exc:
        raise os_error(exc, exc.filename or run_dir) from None


def mark_incomplete(path: Path) -> None:
    """An output that is not the whole result (``--limit N``) gets the modification time 0 (1970): ``make``, which
    compares times, then never takes it for a finished target; the next full run rewrites it."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, 0))


def fsync_dir(path: Path) -> None:
    """Make the renames inside ``path`` durable (a power cut after this keeps them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_run_dir(path: Path, setting: str = "output.dir") -> None:
    """Create the output directory (and parents) or say in one line why it cannot be used; ``setting`` is what
    the user set it with (``output.dir``, or a command's ``--out``)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{setting} {path} is a file, not a directory: set {setting} to a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunDirError(f"{setting} {path}: a parent of it is a file, not a directory") from None
    except OSError as exc:
        raise os_error(exc, path) from None


class RunDirLock:
    """``with RunDirLock(dir):`` - hold the run directory exclusively (see the module docstring); ``setting``
    names the option that chose the directory in the messages."""

    def __init__(self, run_dir: Path, setting: str = "output.dir"):
        self.path = run_dir / LOCK_FILE
        self.setting = setting
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        prepare_run_dir(self.path.parent, self.setting)
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
                f"it to finish, or set another {self.setting}"
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

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
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


def bind_run_dir(store: ResultStore, binding: dict[str, str], source: Path | None = None) -> None:
    """Record ``binding`` (:meth:`annotator.config.PipelineConfig.binding`) on first use; refuse a run of another
    pipeline or input in a used directory (``source``: the pipeline file, named in the message)."""
    stored = store.get_meta(_BINDING_KEY)
    if stored is None:
        store.set_meta(_BINDING_KEY, json.dumps(binding, sort_keys=True))
        return
    bound = json.loads(stored)
    differs = [k for k in binding if bound.get(k) != binding[k]]
    if differs:
        was = ", ".join(f"{k}={bound.get(k)!r}" for k in differs)
        now = ", ".join(f"{k}={binding[k]!r}" for k in differs)
        where = source or "the pipeline file"
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
