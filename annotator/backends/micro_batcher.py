"""Collect concurrent single requests into batches for engines that are fastest batched (vLLM offline)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from annotator.errors import BackendError

Req = TypeVar("Req")
Res = TypeVar("Res")


class MicroBatcher(Generic[Req, Res]):
    """``await submit(x)`` from many coroutines; ``run_batch(list)`` runs in a worker thread, one batch at a
    time, with everything that arrived within ``wait_s`` (up to ``batch_size`` per batch)."""

    def __init__(self, run_batch: Callable[[list[Req]], list[Res]], batch_size: int, wait_s: float = 0.005):
        self.run_batch = run_batch
        self.batch_size = batch_size
        self.wait_s = wait_s
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._scheduled = False
        self._lock: asyncio.Lock | None = None
        self.batches: list[int] = []  # sizes, for observability

    async def submit(self, item: Req) -> Res:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Res] = loop.create_future()
        self._pending.append((item, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_later(self.wait_s, lambda: asyncio.ensure_future(self._flush()))
        return await fut

    async def _flush(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self._scheduled = False
            while self._pending:
                batch = self._pending[: self.batch_size]
                self._pending = self._pending[self.batch_size :]
                self.batches.append(len(batch))
                try:
                    results = await asyncio.to_thread(self.run_batch, [r for r, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
                except Exception as exc:  # one bad batch fails its rows, not the run
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(BackendError(f"batched generation failed: {exc}"))
                    continue
                for (_, fut), res in zip(batch, results):
                    if not fut.done():
                        fut.set_result(res)
