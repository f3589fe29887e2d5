"""The teacher on a Ray cluster: a pool of Ray actors, each holding one ordinary backend, behind the Backend protocol.

The engine (:mod:`annotator.engine`) is unchanged: it keeps the cache, the validation retries, the ordered commit of
rows to the run's store and the resume logic on the driver, and calls ``generate`` on this backend, which sends each
request to the least busy actor. ``model_id`` and ``structured_mode`` are the wrapped backend's, so a Ray run and a
local run of one pipeline have the same cache keys and share answers.

Placement is the backend's (``ray_placement`` of its settings class): ``vllm`` gets one actor per
``tensor_parallel_size`` GPUs; ``local`` (llama.cpp) one actor per ``n_threads`` CPUs (default 1); ``openai`` (and
by default any other backend) one actor per CPU, each an API client with ``teacher.concurrency`` requests in flight.
``teacher.ray.workers`` overrides the count.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

from annotator.backends.base import BaseTeacherConfig, Generation, GenerationRequest, RayPlacement
from annotator.backends.registry import teacher_config
from annotator.errors import AnnotatorError, BackendError
from annotator.ray_support import ray_session
from annotator.redact import redact

log = logging.getLogger(__name__)


class TeacherWorker:
    """Runs inside a Ray actor: one backend of the configured kind (never a Ray pool itself)."""

    def __init__(self, cfg_json: str):
        self.backend = teacher_config(cfg_json).create_backend()

    def describe(self) -> dict[str, Any]:
        b = self.backend
        return {
            "name": b.name,
            "model_id": b.model_id,
            "structured_mode": b.structured_mode,
            "max_concurrency": b.max_concurrency,
        }

    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            gen = await self.backend.generate(GenerationRequest.model_validate(request))
        except BackendError as exc:  # a per-row failure: travels back as data, raised again on the driver
            return {"error": str(exc)}
        except AnnotatorError as exc:  # a fault that stops a local run (401, no such model) stops this one too
            return {"fatal": str(exc), "exit_code": exc.exit_code}
        return {"generation": gen.model_dump()}

    async def aclose(self) -> None:
        await self.backend.aclose()


def _placement(cfg: BaseTeacherConfig, resources: dict[str, float]) -> RayPlacement:
    """(actors, per-actor resources, the config each actor builds its plain backend from)."""
    return cfg.ray_placement(resources, cfg.ray.workers if cfg.ray else None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


class RayPoolBackend:
    """A :class:`~annotator.backends.base.Backend` whose ``generate`` runs on Ray actors."""

    structured_mode: str
    model_id: str

    def __init__(self, cfg: BaseTeacherConfig):
        self._stack = ExitStack()
        ray = self._stack.enter_context(ray_session(cfg.ray.address if cfg.ray else None))
        try:
            self._start(ray, cfg)
        except BaseException:
            self._stack.close()
            raise

    def _start(self, ray: Any, cfg: BaseTeacherConfig) -> None:
        n, resources, inner = _placement(cfg, ray.cluster_resources())
        actor_cls = ray.remote(max_restarts=2, max_task_retries=1, **resources)(TeacherWorker)
        self._actors = [actor_cls.remote(inner.model_dump_json()) for _ in range(n)]
        self._stack.callback(lambda: [ray.kill(a) for a in self._actors])
        try:
            info = ray.get([a.describe.remote() for a in self._actors])
        except ray.exceptions.RayError as exc:
            raise AnnotatorError(f"the teacher could not start on Ray: {_first_line(exc)}") from None
        first = info[0]
        self.name = f"ray/{first['name']}"
        self.model_id = redact(first["model_id"])  # the workers do not know the driver's ${VAR} secrets
        self.structured_mode = first["structured_mode"]
        self.max_concurrency = sum(i["max_concurrency"] for i in info)
        self._inflight = [0] * n
        self._ray = ray
        log.info("teacher on Ray: %d x %s %s (%s)", n, first["name"], resources, self.model_id)

    @property
    def workers(self) -> int:
        """How many actors serve the teacher."""
        return len(self._actors)

    async def generate(self, request: GenerationRequest) -> Generation:
        i = min(range(len(self._actors)), key=self._inflight.__getitem__)
        self._inflight[i] += 1
        try:
            out = await self._actors[i].generate.remote(request.model_dump())
        except self._ray.exceptions.RayError as exc:
            raise BackendError(f"Ray worker {i} failed: {_first_line(exc)}") from None
        finally:
            self._inflight[i] -= 1
        if "fatal" in out:
            fatal = AnnotatorError(out["fatal"])
            fatal.exit_code = int(out.get("exit_code", AnnotatorError.exit_code))
            raise fatal
        if "error" in out:
            raise BackendError(out["error"])
        return Generation.model_validate(out["generation"])

    async def aclose(self) -> None:
        try:
            await self._close_workers()
        finally:
            self._stack.close()

    async def _close_workers(self) -> None:
        import asyncio

        refs = [a.aclose.remote() for a in self._actors]
        try:
            await asyncio.wait_for(asyncio.gather(*refs, return_exceptions=True), timeout=30)
        except asyncio.TimeoutError:
            log.warning("Ray teacher workers did not close within 30 s; killing them")
