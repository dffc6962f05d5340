from __future__ import annotations

import json

import numpy as np
import pytest

from esrkit.index import (
    HnswIndex,
    ShardedIndex,
    build_neighbours,
    build_shard_indexes,
    build_sharded_neighbours,
    exact_topk,
    merge_topk,
    recall_at_k,
    shard_ranges,
    synthetic_user_embeddings,
)
from tests.index.helpers import clustered


@pytest.fixture(scope="module")
def users() -> np.ndarray:
    x = synthetic_user_embeddings(1800, 40, seed=31, users_per_cluster=40)
    x[[100, 1500]] = x[900]  # duplicates living in different shards
    return x


def test_shard_ranges():
    assert shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError):
        shard_ranges(10, 0)


@pytest.mark.parametrize("shard_size", [500, 1800])
def test_sharded_exact_equals_unsharded(users, shard_size):
    k = 10
    table = build_sharded_neighbours(users, k, shard_size, method="exact")
    idx, sc = exact_topk(users, k)
    np.testing.assert_array_equal(table.rows, idx)
    np.testing.assert_array_equal(table.scores, sc)
    assert table.rows[900, :2].tolist() == [100, 1500]


def test_sharded_exact_with_shards_smaller_than_k():
    x = clustered(240, seed=12)
    x[[3, 200]] = x[120]
    table = build_sharded_neighbours(x, 10, 7, method="exact")
    idx, sc = exact_topk(x, 10)
    np.testing.assert_array_equal(table.rows, idx)
    np.testing.assert_array_equal(table.scores, sc)


def test_sharded_hnsw_equals_per_shard_results_merged(users):
    params = {"M": 12, "ef_construction": 60, "ef": 40, "seed": 7}
    table = build_sharded_neighbours(
        users,
        10,
        700,
        method="hnsw",
        num_threads=1,
        hnsw_m=12,
        hnsw_ef_construction=60,
        hnsw_ef=40,
        seed=7,
    )
    everyone = np.arange(len(users))
    parts = []
    for start, stop in shard_ranges(len(users), 700):
        shard = HnswIndex.build(users[start:stop], labels=np.arange(start, stop), num_threads=1, **params)
        labels, scores = shard.query(users, 10, exclude=everyone)
        parts.append((labels, scores.astype(np.float64)))
    rows, scores = merge_topk(parts, 10)
    np.testing.assert_array_equal(table.rows, rows)
    np.testing.assert_array_equal(table.scores, scores.astype(np.float32))
    assert recall_at_k(table.rows, exact_topk(users, 10)[0]) >= 0.98


def test_sharded_hnsw_recall_and_on_disk_index(users, tmp_path):
    table = build_sharded_neighbours(
        users,
        10,
        600,
        method="hnsw",
        out_dir=tmp_path / "shards",
        measure_recall=400,
        hnsw_m=16,
        hnsw_ef_construction=100,
        hnsw_ef=64,
    )
    assert table.meta["recall"]["recall_at_k"] >= 0.98 and table.meta["n_shards"] == 3
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert [s["name"] for s in manifest["shards"]] == ["shard-00000", "shard-00001", "shard-00002"]
    sharded = ShardedIndex.load(tmp_path / "shards")
    rows, _ = sharded.search(users[:50], 10, query_rows=np.arange(50))
    np.testing.assert_array_equal(rows, table.rows[:50])
    wider, _ = sharded.search(users[:50], 10, query_rows=np.arange(50), ef=400)  # a query-time ef override
    assert recall_at_k(wider, exact_topk(users, 10)[0][:50]) >= recall_at_k(
        rows, exact_topk(users, 10)[0][:50]
    )
    again = build_sharded_neighbours(  # a rerun loads the finished shards instead of rebuilding them
        users,
        10,
        600,
        method="hnsw",
        out_dir=tmp_path / "shards",
        hnsw_m=16,
        hnsw_ef_construction=100,
        hnsw_ef=64,
    )
    assert all(t["reused"] for t in again.meta["shard_timings"])
    np.testing.assert_array_equal(again.rows, table.rows)


def test_on_disk_exact_shards_match_and_resume_after_interruption(users, tmp_path):
    root = tmp_path / "exact-shards"
    first = build_sharded_neighbours(users, 5, 800, method="exact", out_dir=root)
    np.testing.assert_array_equal(first.rows, build_neighbours(users, 5, method="exact").rows)
    (root / "shard-00001" / "shard.json").unlink()  # as if the build died while writing shard 1
    with pytest.raises(ValueError, match="incomplete"):
        ShardedIndex.load(root)
    resumed = build_sharded_neighbours(users, 5, 800, method="exact", out_dir=root)
    assert [t["reused"] for t in resumed.meta["shard_timings"]] == [True, False, True]
    np.testing.assert_array_equal(resumed.rows, first.rows)
    rows, _ = ShardedIndex.load(root).search(users[:20], 5, query_rows=np.arange(20))
    np.testing.assert_array_equal(rows, first.rows[:20])


def test_refuses_to_mix_with_a_different_build(tmp_path):
    x = clustered(300, seed=1)
    build_sharded_neighbours(x, 5, 100, method="exact", out_dir=tmp_path / "s")
    with pytest.raises(FileExistsError, match="different"):
        build_sharded_neighbours(x, 5, 150, method="exact", out_dir=tmp_path / "s")


def test_shards_built_one_job_at_a_time_then_queried(users, tmp_path):
    root = tmp_path / "jobs"
    params = {"hnsw_m": 12, "hnsw_ef_construction": 60, "hnsw_ef": 40, "seed": 7, "num_threads": 1}
    assert build_shard_indexes(users, 700, root, "hnsw", shards=[1], **params) == [1]
    with pytest.raises(ValueError, match="incomplete"):
        ShardedIndex.load(root)
    assert build_shard_indexes(users, 700, root, "hnsw", **params) == [0, 2]
    rows, _ = ShardedIndex.load(root).search(users, 10, query_rows=np.arange(len(users)))
    table = build_sharded_neighbours(users, 10, 700, method="hnsw", **params)
    np.testing.assert_array_equal(rows, table.rows)
    with pytest.raises(ValueError, match="does not exist"):
        build_shard_indexes(users, 700, root, "hnsw", shards=[3], **params)
