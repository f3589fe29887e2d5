"""Nothing the tests started may outlive them: servers, engines (vLLM's EngineCore), Ray, CLI processes.

Every process a test session starts inherits ``ANNOTATOR_TEST_SESSION=<pid of the pytest process>`` (set by
conftest; each pytest-xdist worker sets its own). A process that lost its parent (an engine core after kill -9 of
the run that started it) is found by that mark all the same. At the end of the session
:func:`check_nothing_left_running` waits a little for what is shutting down, then kills what is left and fails,
naming each process.
"""

from __future__ import annotations

import os
import time

import pytest

SESSION_VAR = "ANNOTATOR_TEST_SESSION"


_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
"""Helpers that Python's multiprocessing starts for this process (vLLM uses it): they end when it ends."""


def _started_here() -> list[object]:
    """Live processes (not this one, nor its multiprocessing helpers) whose environment carries this session's
    mark."""
    import psutil

    mark, me, found = os.environ.get(SESSION_VAR), os.getpid(), []
    for proc in psutil.process_iter(["pid", "ppid", "status", "cmdline"]):
        if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if proc.info["ppid"] == me and any(h in " ".join(proc.info["cmdline"] or ()) for h in _HELPERS):
            continue
        try:
            if proc.environ().get(SESSION_VAR) == mark:
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            continue
    return found


def _describe(proc: object) -> str:
    import psutil

    assert isinstance(proc, psutil.Process)
    try:
        cmd = " ".join(proc.cmdline())[:160] or proc.name()
        return f"pid {proc.pid} ({proc.memory_info().rss / 2**20:,.0f} MB RSS): {cmd}"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"pid {proc.pid}"


def check_nothing_left_running(grace: float = 15.0) -> None:
    """Fail (after killing them) if processes this session started still run ``grace`` seconds from now."""
    try:
        import psutil
    except ImportError:  # psutil is in the dev extra (make setup installs it); without it nothing can be checked
        return
    deadline = time.monotonic() + grace
    left = _started_here()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _started_here()
    if not left:
        return
    names = [_describe(p) for p in left]
    for proc in left:
        try:
            proc.kill()  # type: ignore[attr-defined]
        except psutil.Error:
            pass
    pytest.fail(
        "processes started by the tests were still running at the end of the session (now killed):\n  "
        + "\n  ".join(names),
        pytrace=False,
    )
