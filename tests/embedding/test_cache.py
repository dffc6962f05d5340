"""The content-addressed cache: identities never mix, batches commit atomically, a killed run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from esrkit.embedding.cache import CacheError, EmbeddingCache
from esrkit.embedding.pipeline import embed_texts, text_hashes
from esrkit.providers import load_provider
from esrkit.providers.base import ProviderIdentity

REPO = Path(__file__).resolve().parents[2]


def ident(seed: int = 0, dim: int = 4) -> ProviderIdentity:
    return ProviderIdentity(kind="random", model="random-normal-v1", params={"seed": seed}, dim=dim)


def test_put_get_round_trip_and_persistence(tmp_path):
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    with EmbeddingCache(tmp_path, ident()) as cache:
        cache.put(["a", "b", "c"], vecs)
        assert len(cache) == 3 and cache.dim == 4
    with EmbeddingCache(tmp_path, ident()) as cache:
        np.testing.assert_array_equal(cache.get(["c", "a", "c"]), vecs[[2, 0, 2]])
        assert cache.contains(["a", "zz", "b"]).tolist() == [True, False, True]
        with pytest.raises(CacheError, match="not in the cache"):
            cache.get(["a", "zz"])


def test_open_retries_a_lock_reported_at_once_and_gives_up_after_the_timeout(tmp_path, monkeypatch):
    """Processes that open one new cache together can get "database is locked" from the WAL switch without
    SQLite's busy wait: the open tries again until its timeout, then names the file and what to do."""
    import sqlite3

    real_open, calls = EmbeddingCache._open, []

    def flaky(self, uri, busy_timeout_s):
        calls.append(uri)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        real_open(self, uri, busy_timeout_s)

    monkeypatch.setattr(EmbeddingCache, "_open", flaky)
    with EmbeddingCache(tmp_path, ident()) as cache:
        cache.put(["a"], np.ones((1, 4), dtype=np.float32))
        assert len(cache) == 1 and len(calls) == 3

    def locked(self, uri, busy_timeout_s):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(EmbeddingCache, "_open", locked)
    with pytest.raises(CacheError, match=r"vectors\.sqlite: opening the embedding cache failed.*locked"):
        EmbeddingCache(tmp_path, ident(), busy_timeout_s=0.2)


def test_identities_never_mix(tmp_path, monkeypatch):
    with EmbeddingCache(tmp_path, ident(0)) as a, EmbeddingCache(tmp_path, ident(1)) as b:
        assert a.path != b.path
        a.put(["x"], np.ones((1, 4), np.float32))
        assert b.contains(["x"]).tolist() == [False]
    shared = tmp_path / "cache" / "one"
    monkeypatch.setattr("esrkit.embedding.cache.cache_directory", lambda workdir, identity: shared)
    EmbeddingCache(tmp_path, ident(0)).close()
    with pytest.raises(CacheError, match="refusing to mix providers"):
        EmbeddingCache(tmp_path, ident(1))


def test_width_is_fixed_per_cache(tmp_path):
    with EmbeddingCache(tmp_path, ident()) as cache:
        cache.put(["a"], np.ones((1, 4), np.float32))
        with pytest.raises(CacheError, match="width 3"):
            cache.put(["b"], np.ones((1, 3), np.float32))


def test_readonly_view_of_a_missing_cache_is_empty(tmp_path):
    with EmbeddingCache(tmp_path, ident(), readonly=True) as cache:
        assert cache.contains(["a"]).tolist() == [False] and len(cache) == 0
    assert not (tmp_path / "cache").exists()


def test_duplicates_are_embedded_once(tmp_path):
    provider = load_provider("random", dim=8)
    calls: list[str] = []
    original = provider.embed_batch

    def counting(texts):
        calls.extend(texts)
        return original(texts)

    provider.embed_batch = counting
    texts = ["a", "b", "a", "c", "b", "a"]
    with EmbeddingCache(tmp_path, provider.identity) as cache:
        matrix, stats = embed_texts(texts, provider, cache, progress=False)
    assert sorted(calls) == ["a", "b", "c"]
    assert (stats.n_texts, stats.n_unique, stats.computed, stats.cached) == (6, 3, 3, 0)
    np.testing.assert_array_equal(matrix, provider.embed(texts))


SLOW_RUN = textwrap.dedent(
    """
    import os, sys, time
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    from esrkit.embedding.cache import EmbeddingCache
    from esrkit.embedding.pipeline import embed_texts
    from esrkit.providers.random import RandomOptions, RandomProvider

    workdir, log_path, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

    class SlowCountingProvider(RandomProvider):
        def embed_batch(self, texts):
            time.sleep(delay)
            with open(log_path, "a") as fh:
                fh.write("".join(t + "\\n" for t in texts))
            return super().embed_batch(texts)

    provider = SlowCountingProvider(RandomOptions(dim=16, batch_size=20))
    texts = [f"text number {i}" for i in range(n)]
    with EmbeddingCache(workdir, provider.identity) as cache:
        matrix, stats = embed_texts(texts, provider, cache, progress=False)
    print("computed", stats.computed, "cached", stats.cached)
    """
)


def _run_slow(script: Path, workdir: Path, log: Path, n: int, delay: float) -> subprocess.Popen:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, str(script), str(workdir), str(log), str(n), str(delay)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_kill_minus_9_resumes_without_recomputing_finished_batches(tmp_path):
    n = 2000
    script = tmp_path / "slow_run.py"
    script.write_text(SLOW_RUN)
    log1, log2 = tmp_path / "run1.log", tmp_path / "run2.log"
    proc = _run_slow(script, tmp_path / "w", log1, n, 0.05)
    # Batches run one after another and each is committed before the next starts, so once 11 batches have
    # been logged at least 10 (200 rows) are committed, however loaded the machine is.
    deadline = time.monotonic() + 60
    while len(_lines(log1)) < 220 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run finished before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    provider = load_provider("random", dim=16, batch_size=20)
    texts = [f"text number {i}" for i in range(n)]
    with EmbeddingCache(tmp_path / "w", provider.identity) as cache:
        committed = {t for t, ok in zip(texts, cache.contains(text_hashes(texts))) if ok}
    assert 200 <= len(committed) < n
    assert len(committed) % 20 == 0  # whole batches only: a torn batch is never half-visible

    proc = _run_slow(script, tmp_path / "w", log2, n, 0.0)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    recomputed = _lines(log2)
    assert not committed & set(recomputed)  # nothing that finished is embedded again
    assert sorted(recomputed) == sorted(set(texts) - committed)
    assert f"computed {n - len(committed)} cached {len(committed)}" in out
    with EmbeddingCache(tmp_path / "w", provider.identity) as cache:
        np.testing.assert_array_equal(cache.get(text_hashes(texts)), provider.embed(texts))
