"""The SQLite result store: answers persist across processes, results stream back in input order."""

import subprocess
import sys
import time

from annotator.cache import ResultStore, SampleResult, cache_key


def test_cache_key_is_order_independent_and_sensitive():
    a = cache_key({"messages": [{"role": "user", "content": "x"}], "model": "m", "temperature": 0.0})
    b = cache_key({"temperature": 0.0, "model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert a == b
    assert a != cache_key({"messages": [{"role": "user", "content": "x"}], "model": "m2", "temperature": 0.0})


def test_samples_survive_a_killed_process(tmp_path):
    db = tmp_path / "cache.sqlite"
    code = f"""
import os
from annotator.cache import ResultStore, SampleResult
s = ResultStore(__import__('pathlib').Path({str(db)!r}))
s.put_sample('k1', SampleResult(ok=True, output={{'label': 'a'}}, attempts=1, tokens=7))
s.put_sample('k2', SampleResult(ok=False, raw='{{oops', error='output is not valid JSON', attempts=3, tokens=30))
s.put_result(0, 'r0', '{{}}')  # results are batched; may be lost on a crash, that's fine
os._exit(9)  # no close, no commit of pending work: like kill -9
"""
    subprocess.run([sys.executable, "-c", code], check=False)
    store = ResultStore(db)
    got = store.get_sample("k1")
    assert got is not None and got.created is not None and abs(got.created - time.time()) < 60  # when obtained
    assert got.model_copy(update={"created": None}) == SampleResult(
        ok=True, output={"label": "a"}, attempts=1, tokens=7
    )
    failed = store.get_sample("k2")
    assert failed is not None and not failed.ok and failed.raw == "{oops" and failed.attempts == 3
    assert store.get_sample("missing") is None
    store.close()


def test_results_stream_in_input_order(tmp_path):
    store = ResultStore(tmp_path / "c.sqlite", result_commit_every=2)
    store.start_run()
    for idx in [3, 0, 2, 1]:
        store.put_result(idx, f"id{idx}", f'{{"i": {idx}}}')
    assert list(store.iter_results()) == ['{"i": 0}', '{"i": 1}', '{"i": 2}', '{"i": 3}']
    store.start_run()  # a new run starts from an empty result log, the cache stays
    assert list(store.iter_results()) == []
    store.close()


def test_the_documented_durability_is_the_one_configured(tmp_path):
    """README (Run directory) promises what WAL + synchronous=NORMAL give; a change here must change it too."""
    store = ResultStore(tmp_path / "c.sqlite")
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # 1 = NORMAL
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # pages: the "about 4 MB"
    assert store.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    store.close()


def test_a_damaged_cache_file_is_one_clear_error(tmp_path):
    import pytest

    from annotator.errors import RunDirError

    db = tmp_path / "cache.sqlite"
    db.write_bytes(b"this is not an SQLite database, just some bytes " * 100)
    with pytest.raises(RunDirError, match=r"cache.sqlite is damaged .*Delete it to start"):
        ResultStore(db)
