"""Damaged cache contents are never used: per-vector checksums, recomputation, clear SQLite errors."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing

import numpy as np
import pytest

from esrkit.embedding.cache import CacheError, EmbeddingCache, merge_caches
from esrkit.embedding.pipeline import embed_texts
from esrkit.providers import load_provider

TEXTS = [f"a prompt about item {i}" for i in range(20)]


def fill(workdir, provider):
    with EmbeddingCache(workdir, provider.identity) as cache:
        return embed_texts(TEXTS, provider, cache, progress=False)


def damage_vector(cache_file, vector: np.ndarray, value: float = 3.4e38) -> None:
    """Overwrite 32 bytes of one stored vector inside the SQLite file, as a bad disk sector would."""
    data = bytearray(cache_file.read_bytes())
    blob = vector.astype("<f4").tobytes()
    at = data.find(blob)
    assert at >= 0 and data.find(blob, at + 1) < 0
    data[at + 16 : at + 48] = np.full(8, value, dtype="<f4").tobytes()
    cache_file.write_bytes(bytes(data))


def test_a_damaged_vector_is_recomputed_with_a_warning(tmp_path, caplog) -> None:
    provider = load_provider("random", dim=16)
    truth, _ = fill(tmp_path, provider)
    cache_file = next((tmp_path / "cache").glob("*/vectors.sqlite"))
    damage_vector(cache_file, truth[7])
    with caplog.at_level(logging.WARNING), EmbeddingCache(tmp_path, provider.identity) as cache:
        matrix, stats = embed_texts(TEXTS, provider, cache, progress=False)
    np.testing.assert_array_equal(matrix, truth)  # never 3.4e38
    assert (stats.cached, stats.computed, stats.damaged) == (19, 1, 1)
    assert "1 cached vector(s) failed their checksum" in caplog.text and str(cache_file) in caplog.text
    with EmbeddingCache(tmp_path, provider.identity) as cache:  # repaired for good
        _, stats = embed_texts(TEXTS, provider, cache, progress=False)
    assert (stats.cached, stats.computed, stats.damaged) == (20, 0, 0)


def test_get_refuses_a_damaged_vector(tmp_path) -> None:
    provider = load_provider("random", dim=16)
    truth, _ = fill(tmp_path, provider)
    damage_vector(next((tmp_path / "cache").glob("*/vectors.sqlite")), truth[3], value=0.0)
    from esrkit.embedding.pipeline import text_hashes

    with EmbeddingCache(tmp_path, provider.identity, readonly=True) as cache:
        rows = cache.read(text_hashes(TEXTS))
        assert rows.ok.sum() == 19 and not rows.ok[3] and len(rows.corrupt) == 1
        with pytest.raises(CacheError, match="fail their checksum") as exc:
            cache.get(text_hashes(TEXTS))
    assert "vectors.sqlite" in str(exc.value)


def test_a_cache_written_without_checksums_keeps_working_and_is_adopted(tmp_path) -> None:
    """Caches of earlier esrkit versions have no checksum table: read unverified once, checksummed then."""
    provider = load_provider("random", dim=16)
    truth, _ = fill(tmp_path, provider)
    cache_file = next((tmp_path / "cache").glob("*/vectors.sqlite"))
    with closing(sqlite3.connect(cache_file)) as conn, conn:
        conn.execute("DROP TABLE vector_crc32")
    with EmbeddingCache(tmp_path, provider.identity, readonly=True) as cache:  # read-only: unverified
        matrix, stats = embed_texts(TEXTS, provider, cache, progress=False)
    np.testing.assert_array_equal(matrix, truth)
    assert stats.cached == 20
    fill(tmp_path, provider)  # a writable open: the rows get their checksums
    with closing(sqlite3.connect(cache_file)) as conn, conn:  # closed: the WAL is folded into the file
        assert conn.execute("SELECT COUNT(*) FROM vector_crc32").fetchone()[0] == 20
        # an older esrkit still writes two-column rows into the same file
        conn.execute("INSERT INTO vectors VALUES ('old-writer', ?)", (np.ones(16, "<f4").tobytes(),))
    damage_vector(cache_file, truth[0])
    with EmbeddingCache(tmp_path, provider.identity) as cache:
        matrix, stats = embed_texts(TEXTS, provider, cache, progress=False)
        assert cache.read(["old-writer"]).ok.all()
    np.testing.assert_array_equal(matrix, truth)
    assert stats.damaged == 1


def test_a_file_that_is_not_a_cache_names_itself(tmp_path) -> None:
    provider = load_provider("random", dim=16)
    folder = tmp_path / "cache" / provider.identity.hash()[:16]
    folder.mkdir(parents=True)
    (folder / "vectors.sqlite").write_bytes(b"these are not the vectors you are looking for" * 100)
    with pytest.raises(CacheError) as exc:
        EmbeddingCache(tmp_path, provider.identity)
    assert str(folder / "vectors.sqlite") in str(exc.value) and "not a database" in str(exc.value)
    assert "delete" in str(exc.value)


def test_a_full_disk_is_reported_as_such(tmp_path) -> None:
    """SQLite rolls a transaction back by itself when the disk fills; the error must say so, not 'cannot
    rollback'. A page limit stands in for the full disk."""
    provider = load_provider("random", dim=256)
    with EmbeddingCache(tmp_path, provider.identity) as cache:
        cache.put(["first"], np.ones((1, 256), np.float32))
        pages = cache._conn.execute("PRAGMA page_count").fetchone()[0]
        cache._conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(CacheError) as exc:
            cache.put([f"t{i}" for i in range(200)], np.ones((200, 256), np.float32))
        assert len(cache) == 1  # the failed batch left nothing half-written
    message = str(exc.value)
    assert "full" in message and str(cache.path) in message and "free space" in message


def test_merge_skips_damaged_vectors(tmp_path, caplog) -> None:
    provider = load_provider("random", dim=16)
    truth, _ = fill(tmp_path / "gpu", provider)
    damage_vector(next((tmp_path / "gpu" / "cache").glob("*/vectors.sqlite")), truth[5])
    with caplog.at_level(logging.WARNING):
        (summary,) = merge_caches(tmp_path / "gpu", tmp_path / "laptop")
    assert summary.added == 19 and "1 damaged vector(s)" in caplog.text
    with EmbeddingCache(tmp_path / "laptop", provider.identity) as cache:
        _, stats = embed_texts(TEXTS, provider, cache, progress=False)
    assert (stats.cached, stats.computed) == (19, 1)


def test_a_cached_rerun_writes_nothing_but_repairs_a_damaged_matrix(tiny_sequences, tmp_path) -> None:
    from esrkit.embedding.pipeline import embed_dataset
    from esrkit.prompts import load_templates

    def embed():
        return embed_dataset(
            tiny_sequences,
            load_provider("offline"),
            load_templates("generic"),
            workdir=tmp_path,
            progress=False,
        )

    first = embed()
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.directory.iterdir()}
    again = embed()
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.directory.iterdir()} == files
    assert again.meta["parts"]["items"]["computed"] == 0  # this run's own counts, returned
    items = first.directory / "items.npy"
    items.write_bytes(items.read_bytes()[:-64] + bytes(64))
    embed()
    np.testing.assert_array_equal(np.load(items), first.items)
