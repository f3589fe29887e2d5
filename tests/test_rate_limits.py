"""teacher.rpm / teacher.tpm against a fault server that enforces the same limits (sliding windows, 429s with
``x-ratelimit-*`` headers). Rates are measured from the server's arrival timestamps."""

from __future__ import annotations

import asyncio

import pytest

from annotator.backends.rate_limit import RateLimiter, parse_reset

from conftest import out_dir_of, read_annotations, rows_of

WINDOW = 1.0  # the server's sliding window, seconds (limits are scaled to it)


def _max_in_window(times: list[float], window: float) -> int:
    """Most arrivals in any half-open window (t - window, t]."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _run(run_cli, make_pipeline, server, n: int, teacher: dict) -> tuple[dict, list[float]]:
    yaml_path = make_pipeline(
        rows_of([f"rate item {i}" for i in range(n)]),
        server.base_url,
        teacher={"concurrency": 8, "max_retries": 8, **teacher},
    )
    res = run_cli("run", str(yaml_path), "--quiet", timeout=120)
    assert res.returncode == 0, res.stderr
    assert all(r["status"] == "ok" for r in read_annotations(out_dir_of(yaml_path)))
    stats = server.stats()
    return stats, [t for t, _accepted, _tok in stats["arrivals"]]


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_rpm_keeps_requests_within_the_limit(run_cli, make_pipeline, server):
    server.reset(rpm=600, rate_window=WINDOW)  # 10 requests in any 1 s window
    stats, times = _run(run_cli, make_pipeline, server, 40, {"rpm": 600})
    assert stats["faults"].get("rate_limited", 0) <= 2
    assert _max_in_window(times, WINDOW) <= 10 + 1
    assert (len(times) - 1) / (max(times) - min(times)) <= 10 * 1.05


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_tpm_keeps_tokens_within_the_limit(run_cli, make_pipeline, server):
    # 60 tokens per answer (usage 50 + 10); 600 tokens in any 1 s window = 10 answers/s. The client's first
    # estimate (prompt chars/4 + max_tokens) is higher than the usage; the usage corrects it.
    server.reset(tpm=36_000, rate_window=WINDOW)
    stats, times = _run(run_cli, make_pipeline, server, 40, {"tpm": 36_000})
    assert stats["faults"].get("rate_limited", 0) <= 2
    tokens = [(t, tok) for t, _ok, tok in stats["arrivals"]]
    worst = max(sum(tok for u, tok in tokens if t - WINDOW < u <= t) for t, _ in tokens)
    assert worst <= 600 + 60
    assert sum(tok for _, tok in tokens[1:]) / (max(times) - min(times)) <= 600 * 1.05


@pytest.mark.slow  # seconds (a process, a kill, or many runs): make test runs it, test-fast does not
def test_without_client_limits_the_same_server_answers_many_429s(run_cli, make_pipeline, server):
    """The control: the limits above are what keeps the 429s away."""
    server.reset(rpm=600, rate_window=WINDOW)
    stats, _ = _run(run_cli, make_pipeline, server, 40, {"max_retries": 30})
    assert stats["faults"].get("rate_limited", 0) >= 10


def test_reset_header_formats():
    assert parse_reset("1s") == 1.0
    assert parse_reset("6m0s") == 360.0
    assert parse_reset("20ms") == 0.02
    assert parse_reset("0.5") == 0.5
    assert parse_reset("soon") is None


def test_server_headers_hold_calls_until_the_reset():
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"})
    limiter.observe({"x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "1s"}, tokens_next=50)
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    real_sleep, asyncio.sleep = asyncio.sleep, fake_sleep
    try:
        asyncio.run(limiter.acquire(50))
    finally:
        asyncio.sleep = real_sleep
    assert slept == [2.0]


def test_on_ray_each_teacher_client_paces_at_its_share_of_the_account_limits():
    from annotator.backends import RayConfig
    from annotator.backends.openai_config import OpenAITeacherConfig
    from annotator.backends.ray_pool import _placement

    cfg = OpenAITeacherConfig(backend="openai", rpm=600, tpm=90_000, ray=RayConfig(workers=4))
    n, _, inner = _placement(cfg, {"CPU": 16.0})
    assert (n, inner.rpm, inner.tpm) == (4, 150, 22_500)
