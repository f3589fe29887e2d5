"""Connecting to Ray (an optional dependency: ``pip install 'annotator-llm[ray]'``), shared by `run` and `predict`."""

from __future__ import annotations

import logging
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


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when a host:port address does not answer."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise AnnotatorError(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc} (is `ray start --head` running "
            "there, and is this its address?)"
        ) from None


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
