"""One way to start a server process for the tests (and ``bench/``) and wait until it is ready, and to stop it; and
the client of the fault server (``tests/fault_server.py``).

Ready means what the server says or answers, never a fixed sleep: either a line it prints on stdout
(``ready_line``: the fault server's ``PORT n``, llama-server's ``READY url``) or a probe that succeeds (an HTTP
``/health``, a TCP port that accepts). The process leads its own process group, so :meth:`ServerProcess.stop` ends
what it started too (vLLM's engine core, Ray's raylet and workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fault_server import DEFAULTS


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed again at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> Callable[[], bool]:
    """A probe: ``url`` answers 2xx (no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def probe() -> bool:
        try:
            with opener.open(url, timeout=2):
                return True
        except OSError:
            return False

    return probe


def tcp_open(host: str, port: int) -> Callable[[], bool]:
    """A probe: ``host:port`` accepts a connection."""

    def probe() -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    return probe


@dataclass
class ServerProcess:
    """A started server: its process, the line that said it was ready (if any) and where its output went."""

    proc: subprocess.Popen[str]
    name: str
    ready_line: str = ""
    log_path: Path | None = None
    _log: IO[str] | None = field(default=None, repr=False)

    def log_tail(self, chars: int = 3000) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path and self.log_path.exists() else ""

    def stop(self, grace: float = 30.0, group: bool = True) -> None:
        """SIGTERM to the server's process group (``group=False``: to the server alone, which stops what it
        started), SIGKILL to what is left of the group after ``grace`` seconds."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                else:
                    self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group's stragglers, even once the leader is gone
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self._log):
            if stream is not None:
                stream.close()


def _wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    """The first stdout line starting with ``prefix``; "" when the process ends or ``timeout`` passes first."""
    found: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                found.append(line.strip())
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return found[0] if found else ""


def _wait_for_probe(proc: subprocess.Popen[str], probe: Callable[[], bool], timeout: float) -> bool:
    """Probe (first every 50 ms, backing off to 1 s) until it succeeds, the process ends or ``timeout`` passes."""
    deadline, pause = time.monotonic() + timeout, 0.05
    while proc.poll() is None and time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(pause)
        pause = min(1.0, pause * 1.5)
    return False


def start_server(
    cmd: Sequence[str],
    *,
    name: str,
    ready_line: str | None = None,
    probe: Callable[[], bool] | None = None,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    keep_stdin: bool = False,
    **popen: Any,
) -> ServerProcess:
    """Start ``cmd`` and return once it is ready (``ready_line`` printed, or ``probe()`` true); RuntimeError with the
    end of its log when it dies or is not ready within ``timeout`` seconds. ``keep_stdin``: a pipe the server may
    watch to exit when the test run dies."""
    log = log_path.open("w") if log_path else None
    proc = subprocess.Popen(
        list(cmd),
        text=True,
        env=env,
        start_new_session=True,
        stdin=subprocess.PIPE if keep_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE if ready_line else (log or subprocess.DEVNULL),
        stderr=log or subprocess.DEVNULL,
        **popen,
    )
    server = ServerProcess(proc, name, log_path=log_path, _log=log)
    if ready_line is not None:
        server.ready_line = _wait_for_line(proc, ready_line, timeout)
        ok = bool(server.ready_line)
    else:
        ok = _wait_for_probe(proc, probe or (lambda: True), timeout)
    if not ok:
        why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready within {timeout:.0f} s"
        tail = server.log_tail()
        server.stop(grace=5)
        raise RuntimeError(f"{name} {why}: {' '.join(cmd)}\n{tail}")
    return server


# -- the fault server ----------------------------------------------------------------------------------------
class ServerHandle:
    """Client side of a running ``tests/fault_server.py``."""

    def __init__(self, process: ServerProcess, port: int):
        self.process = process
        self.proc = process.proc
        self.port = port
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/v1"

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            self.root + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset(self, **config: Any) -> None:
        """Clear counters and set the default config (plus ``config`` overrides)."""
        self._call("POST", "/reset", {})
        defaults = {k: v for k, v in DEFAULTS.items() if k != "by_request"}  # /reset clears by_request
        self._call("POST", "/config", {**defaults, **config})

    def configure(self, **config: Any) -> dict[str, Any]:
        return self._call("POST", "/config", config)

    def calls(self, text: str) -> int:
        """Requests the server has seen for the item with this text."""
        return int(self.stats()["by_item"].get(text, 0))

    def wait_for(self, predicate, timeout: float = 30.0, interval: float = 0.05) -> dict[str, Any]:
        """Poll ``/stats`` until ``predicate(stats)`` holds; return those stats."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if predicate(s):
                return s
            if time.monotonic() > deadline:
                raise TimeoutError(f"server condition not met within {timeout}s (total={s['total']})")
            time.sleep(interval)


def start_fault_server(latency: float = 0.0) -> ServerHandle:
    """``tests/fault_server.py`` on a free 127.0.0.1 port, answering after ``latency`` seconds."""
    from cli_runner import subprocess_env

    script = Path(__file__).with_name("fault_server.py")
    process = start_server(
        [sys.executable, str(script), "--port", "0", "--latency", str(latency)],
        name="fault server",
        ready_line="PORT ",
        timeout=60,
        env=subprocess_env(),
    )
    return ServerHandle(process, int(process.ready_line.split()[1]))


def stop_fault_server(handle: ServerHandle) -> None:
    handle.process.stop(grace=5)
