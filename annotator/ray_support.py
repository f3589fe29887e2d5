"""Connecting to Ray (an optional dependency: ``pip install 'annotator-llm[ray]'``), shared by `run` and `predict`."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from annotator.errors import AnnotatorError

log = logging.getLogger(__name__)

LOCAL = "local"
"""``--ray`` without an address: ray.init()'s default (RAY_ADDRESS, else a running local cluster, else a new one)."""
_ADDRESS_RE = re.compile(r"^(ray://.+|auto|local|[\w.\-\[\]:]+:\d+)$")


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise AnnotatorError("--ray needs Ray Data: pip install 'annotator-llm[ray]' (ray[data]>=2.40)") from None
    return ray


def optional_ray_value(argv: list[str]) -> list[str]:
    """Let ``--ray`` take an optional value: ``--ray`` alone (or before a non-address) means ``--ray local``."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is None or not _ADDRESS_RE.match(nxt):
                out.append(LOCAL)
    return out


CONNECT_TIMEOUT_S = 5.0
"""How long the address may take to answer (TCP, then the gRPC handshake) before ``--ray`` gives up."""
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when a host:port address does not answer or is not Ray:
    Ray's GCS (and its client server, ``ray://``) speaks gRPC, so the port must answer an HTTP/2 preface with its own
    SETTINGS frame within :data:`CONNECT_TIMEOUT_S` (skipped with ``RAY_USE_TLS``, whose handshake differs)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    hint = "is `ray start --head` running there, and is this its address?"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S) as sock:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            sock.sendall(_H2_PREFACE)
            head = _read_exactly(sock, 9)
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise AnnotatorError(f"cannot connect to the Ray cluster at {address}: {why} ({hint})") from None
    if len(head) < 9 or head[3] != 0x04:  # a frame header whose type is SETTINGS
        raise AnnotatorError(
            f"{address} answers, but not as a Ray cluster (no gRPC handshake within {CONNECT_TIMEOUT_S:g}s): {hint}"
        )


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Connect to (or start) Ray for the duration of the block; an already initialised Ray is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    target = None if address in (None, LOCAL) else address
    if target:
        _check_reachable(target)
    try:
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = target or "the default address"
        raise AnnotatorError(f"cannot connect to the Ray cluster at {where}: {first}") from None
    log.info("Ray cluster: %s", ray.cluster_resources())
    try:
        yield ray
    finally:
        ray.shutdown()
