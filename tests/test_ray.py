"""On a real local Ray cluster (``ray start --head`` on 127.0.0.1, 2 CPUs): `annotator run --ray` through the
openai backend against the fault server (kill the driver, resume, shared cache with a local run), and
`annotator predict --ray` giving the same labels as a local predict."""

from __future__ import annotations

import json
import signal
import time

import pytest
from test_crash_resume import finished_texts
from test_distill import project, tiny  # noqa: F401 (fixtures; the test below takes them as arguments)

from conftest import LABELS, kill_group, out_dir_of, read_annotations, rows_of, spawn_cli
from fault_server import expected_label
from servers import free_port


def _quiet_total(server, settle: float = 1.5, timeout: float = 60) -> dict:
    """Server stats once no request has arrived for ``settle`` seconds (the killed driver's actors are gone)."""
    deadline = time.monotonic() + timeout
    last = server.stats()
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = server.stats()
        if now["total"] == last["total"]:
            return now
        last = now
    raise TimeoutError("requests kept arriving after the driver was killed")


def test_run_on_ray_kill_driver_resume_and_share_cache(ray_address, server, make_pipeline, run_cli):
    n = 160
    texts = [f"ray row {i:04d} about the central bank" for i in range(n)]
    server.configure(latency=0.05)
    teacher = {"base_url": server.base_url, "concurrency": 4, "timeout": 5.0, "max_retries": 2}
    local = make_pipeline(rows_of(texts), name="local", task={"rationale": True}, teacher=teacher)
    on_ray = make_pipeline(
        rows_of(texts), name="on_ray", task={"rationale": True}, teacher={**teacher, "ray": {"workers": 2}}
    )
    run_dir = out_dir_of(on_ray)
    assert run_dir == out_dir_of(local)

    # a local run of the first 20 rows; the Ray run must reuse these answers (same cache keys)
    proc = run_cli("run", str(local), "--quiet", "--limit", "20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert server.stats()["total"] == 20

    driver = spawn_cli("run", str(on_ray), "--quiet", "--ray", ray_address)
    try:
        server.wait_for(lambda s: s["total"] >= 80 or driver.poll() is not None, timeout=180)
        assert driver.poll() is None, "the Ray run finished before it could be killed:\n" + driver.stdout.read()
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        kill_group(driver)
    at_kill = _quiet_total(server)["by_item"]
    finished = finished_texts(run_dir)
    assert set(texts[:20]) <= finished and len(finished) < n

    proc = run_cli("run", str(on_ray), "--quiet", "--ray", ray_address, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = server.stats()["by_item"]
    again = sorted(t for t in finished if after[t] != at_kill[t])
    assert not again, f"{len(again)} finished rows were sent to the teacher again, e.g. {again[:3]}"
    assert all(after[t] - at_kill.get(t, 0) == 1 for t in set(texts) - finished)

    records = read_annotations(run_dir)
    assert [r["id"] for r in records] == [f"r{i:05d}" for i in range(n)]  # each row exactly once, in order
    assert all(r["status"] == "ok" and r["label"] == expected_label(r["text"], LABELS) for r in records)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["backend"] == "ray/openai" and manifest["cache_hits"] == len(finished)
    assert manifest["teacher_calls"] == n - len(finished)

    # and back: a local run of the same pipeline finds every answer in the cache
    before = server.stats()["total"]
    proc = run_cli("run", str(local), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert server.stats()["total"] == before
    assert read_annotations(run_dir) == records


def test_run_on_ray_bad_address_is_one_line(make_pipeline, run_cli, server):
    pytest.importorskip("ray")
    p = make_pipeline(rows_of(["a text"]), teacher={"base_url": server.base_url})
    proc = run_cli("run", str(p), "--quiet", "--ray", f"127.0.0.1:{free_port()}", timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot connect to the Ray cluster" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_on_ray_matches_local(ray_address, student_dir, tmp_path, run_cli):
    from test_predict import corpus, predict_cli, read_jsonl

    inp = corpus(tmp_path / "in.jsonl", 160)
    predict_cli(run_cli, student_dir, inp, tmp_path / "local.jsonl", "--batch-size", "32")
    proc = predict_cli(
        run_cli,
        student_dir,
        inp,
        tmp_path / "ray.jsonl",
        "--batch-size",
        "16",
        "--ray",
        ray_address,
        "--ray-workers",
        "1",
        "--route-below",
        "0.4",
        "--route-out",
        str(tmp_path / "route.jsonl"),
    )
    assert "160 rows labelled" in proc.stderr
    local, on_ray = read_jsonl(tmp_path / "local.jsonl"), read_jsonl(tmp_path / "ray.jsonl")
    assert [r["id"] for r in on_ray] == [r["id"] for r in local]
    assert [r.get("label") for r in on_ray] == [r.get("label") for r in local]
    for a, b in zip(local, on_ray):
        if "probs" in a:
            assert b["probs"] == pytest.approx(a["probs"], abs=1e-3)
    routed = [r["row"] for r in read_jsonl(tmp_path / "route.jsonl")]
    assert routed == [i for i, r in enumerate(on_ray) if "error" in r or r["confidence"] < 0.4]


def test_ray_flag_takes_an_optional_address():
    from annotator.ray_support import optional_ray_value

    assert optional_ray_value(["run", "p.yaml", "--ray"]) == ["run", "p.yaml", "--ray", "local"]
    assert optional_ray_value(["run", "--ray", "p.yaml"]) == ["run", "--ray", "local", "p.yaml"]
    assert optional_ray_value(["run", "--ray", "--quiet", "p.yaml"])[2] == "local"
    for address in ("10.0.0.5:6379", "ray://head:10001", "auto"):
        assert optional_ray_value(["run", "p.yaml", "--ray", address]) == ["run", "p.yaml", "--ray", address]


def test_teacher_placement_on_the_cluster():
    from annotator.backends import RayConfig
    from annotator.backends.local_llama import LocalTeacherConfig
    from annotator.backends.openai_config import OpenAITeacherConfig
    from annotator.backends.ray_pool import _placement
    from annotator.backends.vllm_offline import VLLMTeacherConfig
    from annotator.errors import AnnotatorError

    cluster = {"CPU": 16.0, "GPU": 8.0}
    vllm = VLLMTeacherConfig(backend="vllm", vllm_engine_args={"tensor_parallel_size": 2}, ray=RayConfig())
    n, res, inner = _placement(vllm, cluster)
    assert (n, res, inner.ray) == (4, {"num_gpus": 2}, None)  # one engine per 2 GPUs; actors build plain backends
    n, res, inner = _placement(LocalTeacherConfig(backend="local", n_threads=4, ray=RayConfig()), cluster)
    assert (n, res, inner.n_threads) == (4, {"num_cpus": 4}, 4)
    n, res, _ = _placement(OpenAITeacherConfig(backend="openai", ray=RayConfig(workers=3)), cluster)
    assert (n, res) == (3, {"num_cpus": 1})
    with pytest.raises(AnnotatorError, match="needs GPUs"):
        _placement(vllm, {"CPU": 2.0})


@pytest.mark.slow
def test_distill_on_ray_labels_each_round_like_a_local_predict(
    ray_address,
    project,  # noqa: F811 (the fixture imported above)
    tiny,  # noqa: F811
    server,
    capsys,
    run_cli,
    monkeypatch,
):
    """`distill --ray`: every round's corpus pass goes through Ray Data (counted), and the labels it writes are
    those a local `predict` of that round's student gives."""
    from test_distill import distill, fast
    from test_predict import predict_cli, read_jsonl

    import annotator.student.ray_predict as ray_predict

    on_ray = []
    real = ray_predict.ray_labeler
    monkeypatch.setattr(ray_predict, "ray_labeler", lambda *a, **k: on_ray.append(1) or real(*a, **k))
    args = fast(project, tiny, "--budget", "28", "--patience", "0", "--ray", ray_address, "--ray-workers", "1")
    code, printed, err = distill(capsys, *args, "--json")
    assert code == 0, err
    rounds = json.loads(printed)["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and len(on_ray) == 2
    last = project["out"] / "rounds" / "001"
    predict_cli(run_cli, last / "student", project["dir"] / "corpus.jsonl", project["dir"] / "local.jsonl")
    local, distilled = read_jsonl(project["dir"] / "local.jsonl"), read_jsonl(last / "predictions.jsonl")
    assert [r["id"] for r in distilled] == [r["id"] for r in local] == [r["id"] for r in project["rows"]]
    assert [r["label"] for r in distilled] == [r["label"] for r in local]
