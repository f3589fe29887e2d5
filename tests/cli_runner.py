"""Running ``annotator ...`` from the tests: in this process (fast, the default) or as a real process.

* :func:`run_in_process` calls ``annotator.cli.main`` here, as a fresh process would run it: stdout and stderr
  captured separately, the environment of :func:`subprocess_env` applied for the call, the working directory set,
  and everything the call may change in this process (logging, ``--quiet``, the plugin registries, Hugging Face
  progress bars, warning filters, signal handlers, ``os.environ``) put back afterwards. Warnings and the log lines of
  libraries reach the captured stderr as they would reach a process's (pytest's own log capture is set aside for
  the call). What it cannot show is output written below Python (C libraries writing to file descriptor 2), import-
  time behaviour (entry points, ``PYTHONPATH``) and anything about the process itself (its exit status, signals,
  locks held by two processes): those tests use :func:`run_process` or :func:`spawn`.
* :func:`run_process` / :func:`spawn`: the console script in a subprocess (``spawn`` returns without waiting).
* :func:`process_started_with`: one real process started with a given environment (a ``PYTHONPATH`` that installs
  a plugin: entry points are read as annotator is imported) that runs several commands in turn, each as
  :func:`run_in_process` runs it, so the start-up is paid once, not per command.

Both runners return a :class:`CliResult` / ``CompletedProcess`` with ``returncode``, ``stdout`` and ``stderr``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


def annotator_cmd() -> list[str]:
    """How to start the CLI: the venv console script when installed, else ``python -m annotator.cli``."""
    script = Path(sys.executable).with_name("annotator")
    return [str(script)] if script.exists() else [sys.executable, "-m", "annotator.cli"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment for a CLI call: no proxies for 127.0.0.1, wide lines, offline Hugging Face, plus ``extra``."""
    env = dict(os.environ)
    env.update(
        {
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(k, None)
    env.update(extra)
    return env


# -- real processes ------------------------------------------------------------------------------------------
def run_process(
    *args: str, timeout: float = 120, cwd: Path | str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``annotator ARGS`` as a subprocess (text, stdout and stderr captured apart), in ``cwd`` (default: the repo)."""
    return subprocess.run(
        [*annotator_cmd(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**env),
        cwd=str(cwd or REPO),
    )


def spawn(*args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``annotator ARGS`` without waiting (crash tests); stdout+stderr go to one pipe. The process leads its
    own process group, so :func:`kill_group` also ends what it started (a vLLM engine core, Ray workers)."""
    return subprocess.Popen(
        [*annotator_cmd(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(**env),
        cwd=str(REPO),
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL whatever is left of ``proc``'s process group (see :func:`spawn`) and reap ``proc``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# -- in this process -----------------------------------------------------------------------------------------
@dataclass
class CliResult:
    """What :func:`run_in_process` returns: the fields of ``subprocess.CompletedProcess`` the tests read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


class _Capture(io.TextIOWrapper):
    """A text stream like a process's stdout/stderr written to a pipe: not a terminal, with a ``.buffer``."""

    def __init__(self, name: str):
        super().__init__(io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True)
        self._name = name

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._name

    def text(self) -> str:
        """What was written, read back as ``subprocess.run(text=True)`` reads a pipe (universal newlines)."""
        self.flush()
        raw = self.buffer.getvalue().decode("utf-8", errors="replace")  # type: ignore[attr-defined]
        return raw.replace("\r\n", "\n").replace("\r", "\n")


# The warning filters of a fresh interpreter (python -W not given): what a process would print.
_DEFAULT_FILTERS = [
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, None),
    ("ignore", PendingDeprecationWarning, None),
    ("ignore", ImportWarning, None),
    ("ignore", ResourceWarning, None),
]


@contextlib.contextmanager
def _process_warnings(stderr: io.TextIOBase) -> Iterator[None]:
    """Warnings as a fresh process shows them (interpreter defaults, each place once), written to ``stderr``."""
    with warnings.catch_warnings():
        warnings.resetwarnings()  # no filter matches: warnings.defaultaction, "default" (once per place)
        for action, category, module in reversed(_DEFAULT_FILTERS):  # each call inserts in front
            warnings.filterwarnings(action, category=category, module=module or "")

        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _logging_as_in_a_process(
    stdout: io.TextIOBase, stderr: io.TextIOBase, old_out: Any, old_err: Any
) -> Iterator[None]:
    """Library log lines reach ``stderr`` as in a process: pytest's capture handlers leave the root logger for the
    call (so :data:`logging.lastResort` prints warnings), and handlers that write to the streams this call replaced
    write to its captures."""
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    redirected: list[tuple[logging.StreamHandler[Any], Any]] = []
    targets = {id(old_err): stderr, id(sys.__stderr__): stderr, id(old_out): stdout, id(sys.__stdout__): stdout}
    for logger in [root, *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in targets:
                with contextlib.suppress(AttributeError):  # a stream that is a property already follows sys.stderr
                    old = handler.stream
                    handler.stream = targets[id(old)]
                    redirected.append((handler, old))
    root.handlers, root.level = [], logging.WARNING
    try:
        yield
    finally:
        root.handlers, root.level = saved_root
        for handler, stream in redirected:
            handler.stream = stream


@contextlib.contextmanager
def cli_state_kept() -> Iterator[None]:
    """Module-level state a CLI call may change, put back after the block: the ``annotator`` logger (its level is
    ``--quiet``, see :func:`annotator.progress.quiet`), the task and backend registries (and whether task plugins
    were loaded)."""
    import annotator.backends as backends
    import annotator.tasks.registry as tasks

    scalars = [(tasks, "_plugins_loaded", tasks._plugins_loaded)]
    dicts = [(d, dict(d)) for d in (tasks._tasks, tasks.SKIPPED, backends.BACKENDS, backends.SKIPPED)]
    ours = logging.getLogger("annotator")
    logger_state = (ours.handlers[:], ours.level, ours.propagate)
    try:
        yield
    finally:
        for module, name, value in scalars:
            setattr(module, name, value)
        for current, saved in dicts:  # the same dict objects: other modules hold references to them
            current.clear()
            current.update(saved)
        ours.handlers, ours.level, ours.propagate = logger_state


@contextlib.contextmanager
def _library_state() -> Iterator[None]:
    """Hugging Face verbosity and progress bars, torch's thread count: put back as they were (annotator changes
    them on purpose, for the length of a process)."""
    restore: list[Any] = []
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        restore.append(
            lambda: (
                hf_logging.set_verbosity(verbosity),
                hf_logging.enable_progress_bar() if bars else hf_logging.disable_progress_bar(),
            )
        )
    if "datasets" in sys.modules:
        import datasets

        ds_bars = datasets.is_progress_bar_enabled()
        restore.append(lambda: datasets.enable_progress_bars() if ds_bars else datasets.disable_progress_bars())
    if "torch" in sys.modules:
        import torch

        threads = torch.get_num_threads()
        restore.append(lambda: torch.set_num_threads(threads))
    try:
        yield
    finally:
        for undo in restore:
            undo()


@contextlib.contextmanager
def _environment(env: dict[str, str], cwd: Path | str, argv: list[str]) -> Iterator[None]:
    """``os.environ`` = ``env``, the working directory ``cwd`` and ``sys.argv`` = ``argv`` for the block, with
    ``__main__`` looking like the console script's (click names the program after it: ``annotator``, not
    ``python -m pytest.annotator``)."""
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    main_module = sys.modules["__main__"]
    saved_package = main_module.__dict__.get("__package__")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = argv
    main_module.__package__ = None
    try:
        yield
    finally:
        main_module.__package__ = saved_package
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in handlers.items():
            if signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)


def _exit_code(code: object, stderr: io.TextIOBase) -> int:
    """The status ``sys.exit(code)`` gives a process (a message is printed to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    stderr.write(f"{code}\n")
    return 1


def run_in_process(
    *args: str,
    timeout: float | None = None,
    cwd: Path | str | None = None,
    _base_env: dict[str, str] | None = None,
    **env: str,
) -> CliResult:
    """``annotator ARGS`` run by ``annotator.cli.main`` in this process; see the module docstring.

    ``timeout`` is accepted for the subprocess runner's signature (pytest-timeout bounds an in-process call).
    ``PYTHONPATH`` cannot be changed for a call that imports nothing new: use :func:`run_process` for that.
    """
    if "PYTHONPATH" in env:
        raise ValueError(
            "run_cli cannot change PYTHONPATH in this process (entry points are read at import): "
            "use run_cli_process or process_started_with"
        )
    from annotator.cli import main

    out, err = _Capture("<stdout>"), _Capture("<stderr>")
    old_out, old_err = sys.stdout, sys.stderr
    argv = [annotator_cmd()[0], *args]  # what the console script sees (its -v log line names it)
    call_env = {**_base_env, **env} if _base_env is not None else subprocess_env(**env)
    with (
        _environment(call_env, cwd or REPO, argv),
        cli_state_kept(),
        _library_state(),
        _logging_as_in_a_process(out, err, old_out, old_err),
        _process_warnings(err),
    ):
        sys.stdout, sys.stderr = out, err
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code, err)
        except Exception:  # noqa: BLE001 - what an uncaught exception does to a process: a traceback, status 1
            traceback.print_exc(file=err)
            code = 1
        finally:
            sys.stdout, sys.stderr = old_out, old_err
    return CliResult(argv[1:], code, out.text(), err.text())


# -- several commands in one real process ------------------------------------------------------------------
@contextlib.contextmanager
def process_started_with(**env: str) -> Iterator[Callable[..., CliResult]]:
    """A real process started with this environment (plus :func:`subprocess_env`'s), serving ``annotator``
    commands one after another: ``run(*args, cwd=None, **env) -> CliResult``, as :func:`run_in_process` runs them
    there. What the process found at start-up (entry points on its ``PYTHONPATH``) holds for every command."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(**env),
        cwd=str(REPO),
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def run(*args: str, cwd: Path | str | None = None, timeout: float | None = None, **call_env: str) -> CliResult:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"args": list(args), "cwd": str(cwd) if cwd else None, "env": call_env}) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI process ended (exit {proc.wait()}) before answering {list(args)}")
        return CliResult(**json.loads(line))

    try:
        yield run
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        finally:
            kill_group(proc)
            proc.stdout.close()


def _serve() -> None:
    """``python tests/cli_runner.py --serve``: run one command per JSON line on stdin, answer one JSON line each.
    The answers go to the original stdout; anything else written to file descriptor 1 goes to stderr."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.__stdout__ = os.fdopen(1, "w", closefd=False)
    env = dict(os.environ)
    for line in sys.stdin:
        call = json.loads(line)
        result = run_in_process(*call["args"], cwd=call["cwd"], _base_env=env, **call["env"])
        answers.write(json.dumps(asdict(result)) + "\n")
        answers.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.path.insert(0, str(TESTS_DIR))
        _serve()
