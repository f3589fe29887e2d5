"""The output guard: no command destroys a file it did not write.

Every command that writes goes through these checks before its first byte:

* **Distinct paths** (:func:`check_distinct`): an output is never one of the command's inputs, and two outputs of
  one command are never the same file (same path after resolving links, or the same inode).
* **Ownership** (:func:`require_owned`): an existing file is replaced, truncated or repaired only when it carries
  this tool's marker. Three kinds of marker, one per kind of output:

  - a *claim* beside an append-only file (:func:`claim`, :func:`is_claimed`): ``.NAME.annotator``, written before
    the file's first line (``predict``'s predictions and route file; resume repairs a torn tail only under a claim);
  - a *header line* inside the file (``deps``' Makefile fragments);
  - the command's *manifest* in its output folder (:func:`check_folder`: ``run.json``/``cache.sqlite``,
    ``export.json``, ``sample.json``, ``report.json``, ``metrics.json``): a file the command is about to write is
    replaced only in a folder whose manifest says the command wrote it; other files in the folder are never
    touched.

A refusal is one line (:class:`~annotator.errors.OutputPathError`, exit 2) naming the file and the fix; the file is
left as it was.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from annotator.errors import OutputPathError
from annotator.records import ANNOTATIONS_FILE, CACHE_FILE, MANIFEST_FILE, read_manifest
from annotator.rundir import LOCK_FILE, atomic_write_text, prepare_run_dir

CLAIM_SUFFIX = ".annotator"


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same inode when both exist, else the same resolved path."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.expanduser().resolve() == b.expanduser().resolve()


def check_distinct(command: str, outputs: Mapping[str, Path | None], inputs: Mapping[str, Path | None]) -> None:
    """Refuse an output that is one of the inputs or another output (``{"--out": path, ...}``; None is skipped)."""
    outs = [(name, p) for name, p in outputs.items() if p is not None]
    ins = [(name, p) for name, p in inputs.items() if p is not None]
    for i, (name, path) in enumerate(outs):
        for other, opath in outs[i + 1 :]:
            if same_file(path, opath):
                raise OutputPathError(
                    f"`annotator {command}`: {name} and {other} are the same file ({path}); give each its own path"
                )
        for iname, ipath in ins:
            if same_file(path, ipath):
                raise OutputPathError(
                    f"`annotator {command}`: {name} {path} is the {iname}: writing there would destroy it; "
                    f"choose another {name}"
                )


# -- claims (append-only outputs) ------------------------------------------------------------------------------
def claim_path(path: Path) -> Path:
    """Where the claim of ``path`` lives: ``.NAME.annotator`` beside it."""
    return path.with_name(f".{path.name}{CLAIM_SUFFIX}")


def claim(path: Path, command: str, role: str, **details: Any) -> None:
    """Mark ``path`` as written by ``annotator <command>`` in ``role`` (before its first byte is written)."""
    data = {"written_by": f"annotator {command}", "role": role, "file": path.name, **details}
    atomic_write_text(claim_path(path), json.dumps(data, ensure_ascii=False, default=str) + "\n")


def is_claimed(path: Path, command: str, role: str) -> bool:
    """Whether ``path`` carries the claim of ``annotator <command>`` in ``role``."""
    try:
        data = json.loads(claim_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("written_by") == f"annotator {command}"
        and data.get("role") == role
        and data.get("file") == path.name
    )


def require_owned(path: Path, command: str, owned: bool, what: str) -> None:
    """Refuse to touch ``path`` when it exists and ``owned`` is false (it lacks the command's marker)."""
    if path.exists() and not owned:
        raise OutputPathError(
            f"{path} exists and was not written by `annotator {command}` (no {what}); it is left untouched: "
            "move it away or choose another output path"
        )


# -- folders -----------------------------------------------------------------------------------------------------
def read_json_object(path: Path) -> dict[str, Any] | None:
    """``path``'s JSON object, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def has_keys(*keys: str) -> Callable[[Path], bool]:
    """An ownership test: the manifest at a path is a JSON object with all of ``keys``."""

    def test(manifest: Path) -> bool:
        data = read_json_object(manifest)
        return data is not None and all(k in data for k in keys)

    return test


FOLDER_CLAIM = ".annotator"
"""The claim inside an output folder: written when the folder passes :func:`check_folder`, before the command's
first file, so a rerun after a crash or a full disk (files written, manifest not yet) finds the folder its own."""


def check_folder(
    folder: Path,
    command: str,
    writes: Iterable[str],
    manifest: str,
    is_manifest: Callable[[Path], bool],
    option: str = "--out",
    claim: bool = True,
) -> None:
    """Refuse to write into ``folder`` when one of the entries in ``writes`` already exists there and the folder is
    not one this command wrote before (its ``manifest`` passes ``is_manifest``, or it holds the command's claim);
    otherwise, with ``claim``, create the folder and claim it (:func:`claim_folder`)."""
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{option} {folder} is a file, not a folder: choose a folder")
    clash = [name for name in writes if (folder / name).exists() or (folder / name).is_symlink()]
    if clash and not (is_manifest(folder / manifest) or _claimed_folder(folder, command)):
        shown = ", ".join(clash[:4]) + (f" and {len(clash) - 4} more" if len(clash) > 4 else "")
        raise OutputPathError(
            f"{option} {folder}: {shown} already exist(s) and were not written by `annotator {command}` (no "
            f"{manifest} of its own there); they are left untouched: move them away or choose a new or empty folder"
        )
    if claim:
        claim_folder(folder, command)


def claim_folder(folder: Path, command: str) -> None:
    """Create ``folder`` and mark it as ``annotator <command>``'s (before the command writes its first file there)."""
    prepare_run_dir(folder)
    if not _claimed_folder(folder, command):
        atomic_write_text(folder / FOLDER_CLAIM, json.dumps({"written_by": f"annotator {command}"}) + "\n")


def _claimed_folder(folder: Path, command: str) -> bool:
    data = read_json_object(folder / FOLDER_CLAIM)
    return data is not None and data.get("written_by") == f"annotator {command}"


# -- run ---------------------------------------------------------------------------------------------------------
def check_run_outputs(out: Path, inputs: Mapping[str, Path | None]) -> None:
    """The output guard for ``run`` (see :mod:`annotator.guard`): the files a run writes into ``out`` (its
    ``output.dir``) are none of its ``inputs`` (``{"input file": path, ...}``), and an
    ``annotations.jsonl``/``run.json``/``cache.sqlite`` already there belongs to an earlier run."""
    writes = {f"output {name}": out / name for name in (ANNOTATIONS_FILE, MANIFEST_FILE, CACHE_FILE, LOCK_FILE)}
    check_distinct("run", writes, inputs)
    cache = out / CACHE_FILE
    require_owned(cache, "run", _is_run_cache(cache), "table 'meta' of a run's cache")
    if cache.exists() or _manifest_readable(out):
        return
    for name in (ANNOTATIONS_FILE, MANIFEST_FILE):
        require_owned(out / name, "run", False, f"{MANIFEST_FILE} or {CACHE_FILE} of a run beside it")


def _manifest_readable(out: Path) -> bool:
    try:
        return read_manifest(out) is not None
    except (OSError, ValueError):
        return False


def _is_run_cache(path: Path) -> bool:
    """Whether ``path`` may be opened as a run's cache: empty, not an SQLite database at all (the store's own check
    says it is damaged), or a database with the run's ``meta`` table; another program's database is not."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return True
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        return True
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return True
    finally:
        conn.close()
    return not tables or "meta" in tables
