from __future__ import annotations

import json

import numpy as np
import pytest

from esrkit.config import RetrievalConfig
from esrkit.index import (
    NeighbourFormatError,
    NeighbourTable,
    build_neighbours,
    build_neighbours_from_config,
    exact_topk,
    resolve_method,
    synthetic_user_embeddings,
)
from tests.index.helpers import SHARED, clustered


@pytest.fixture(scope="module")
def users() -> np.ndarray:
    return synthetic_user_embeddings(1500, 48, seed=21, users_per_cluster=40)


def test_auto_uses_exact_below_the_threshold():
    assert resolve_method("auto", 10, 200_000) == "exact"
    assert resolve_method("auto", 200_000, 200_000) == "hnsw"
    assert resolve_method("hnsw", 10, 200_000) == "hnsw"
    with pytest.raises(ValueError):
        resolve_method("faiss", 10, 10)


def test_exact_table_is_keyed_by_user_id(users):
    ids = [f"user-{i}" for i in range(len(users))]
    table = build_neighbours(users, k=20, user_ids=ids)
    exact_idx, exact_sc = exact_topk(users, 20)
    np.testing.assert_array_equal(table.rows, exact_idx)
    np.testing.assert_array_equal(table.scores, exact_sc)
    assert table.meta["method"] == "exact" and table.k == 20 and table.n_users == len(users)
    assert table.lookup("user-7", 3) == [ids[r] for r in exact_idx[7, :3]]
    assert table.row_of("user-7") == 7
    first = table.first(10)
    assert first.shape == (len(users), 10) and first.dtype == np.int32 and first.flags.c_contiguous
    with pytest.raises(KeyError):
        table.lookup("nobody")
    with pytest.raises(ValueError):
        table.first(21)


def test_hnsw_table_measures_recall(users, tmp_path):
    table = build_neighbours(
        users,
        k=10,
        method="hnsw",
        hnsw_m=16,
        hnsw_ef_construction=100,
        hnsw_ef=64,
        measure_recall=300,
        index_path=tmp_path / "hnsw.bin",
    )
    recall = table.meta["recall"]
    assert recall["sample"] == 300 and recall["k"] == 10 and recall["recall_at_k"] >= 0.98
    assert table.meta["hnsw"] == {"M": 16, "ef_construction": 100, "ef": 64, "seed": 100}
    assert (tmp_path / "hnsw.bin").is_file() and (tmp_path / "hnsw.json").is_file()
    table.check_no_self()


def test_from_config(users):
    cfg = RetrievalConfig(top_k=12, method="exact")
    table = build_neighbours_from_config(users, cfg)
    assert table.k == 12 and table.user_ids[:2] == ["1", "2"]


def test_save_load_round_trip_and_torn_save_detection(users, tmp_path):
    table = build_neighbours(users, k=8, user_ids=[f"u{i}" for i in range(len(users))])
    table.save(tmp_path / "t")
    loaded = NeighbourTable.load(tmp_path / "t")
    np.testing.assert_array_equal(loaded.rows, table.rows)
    np.testing.assert_array_equal(loaded.scores, table.scores)
    assert loaded.user_ids == table.user_ids and loaded.meta["method"] == "exact"
    assert not list((tmp_path / "t").glob("*.tmp"))
    with pytest.raises(FileExistsError):
        table.save(tmp_path / "t")
    header = json.loads((tmp_path / "t" / "table.json").read_text())
    assert header["format"] == "esrkit-neighbours" and header["k"] == 8
    rows = loaded.rows.copy()
    rows[0, [0, 1]] = rows[0, [1, 0]]
    np.save(tmp_path / "t" / "neighbours.npy", rows)  # an edit table.json does not know about
    with pytest.raises(NeighbourFormatError, match="fingerprints"):
        NeighbourTable.load(tmp_path / "t")
    mm = NeighbourTable.load(tmp_path / "t", mmap=True, verify=False)
    assert not mm.rows.flags.owndata  # a view of the memory map, not a copy


def test_validation_rejects_self_neighbours_and_bad_rows():
    with pytest.raises(NeighbourFormatError, match="themselves"):
        NeighbourTable(rows=np.array([[1, 2], [1, 2], [0, 1]]), user_ids=["a", "b", "c"])
    with pytest.raises(NeighbourFormatError, match=r"\[0, 3\)"):
        NeighbourTable(rows=np.array([[1, 3], [0, 2], [0, 1]]), user_ids=["a", "b", "c"])
    with pytest.raises(NeighbourFormatError, match="twice"):
        NeighbourTable(rows=np.array([[1, 1], [0, 2], [0, 1]]), user_ids=["a", "b", "c"])
    with pytest.raises(NeighbourFormatError, match="unique"):
        NeighbourTable(rows=np.array([[1], [0]]), user_ids=["a", "a"])
    with pytest.raises(NeighbourFormatError, match="integers"):
        NeighbourTable(rows=np.array([[1.0], [0.0]]), user_ids=["a", "b"])


def test_from_official_small_synthetic(tmp_path):
    rows = np.array([[1, 2, 3], [0, 2, 3], [3, 1, 0], [2, 0, 1]], dtype=np.int64)
    np.save(tmp_path / "sim.npy", rows)
    table = NeighbourTable.from_official(tmp_path / "sim.npy")
    assert table.rows.dtype == np.int32 and table.scores is None
    assert table.user_ids == ["1", "2", "3", "4"]  # official convention: row r is user r + 1
    assert table.lookup("3") == ["4", "2", "1"]
    assert table.first(2).tolist() == [[1, 2], [0, 2], [3, 1], [2, 0]]
    named = NeighbourTable.from_official(tmp_path / "sim.npy", user_ids=["a", "b", "c", "d"])
    assert named.lookup("a", 1) == ["b"]
    named.save(tmp_path / "out")
    assert NeighbourTable.load(tmp_path / "out").scores is None
    np.save(tmp_path / "bad.npy", np.array([[0, 1], [0, 2], [0, 1]]))
    with pytest.raises(NeighbourFormatError, match="themselves"):
        NeighbourTable.from_official(tmp_path / "bad.npy")


def test_real_official_table_loads_without_self_neighbours():
    path = SHARED / "reference" / "official-run-beauty5" / "similar_users_top100.npy"
    if not path.exists():
        pytest.skip(f"official reference table not available: {path}")
    table = NeighbourTable.from_official(path)
    assert table.rows.shape == (22363, 100) and table.n_users == 22363
    assert table.first(10).shape == (22363, 10)
    assert table.lookup("1", 1) == [str(int(table.rows[0, 0]) + 1)]


def test_k_must_leave_room_for_excluding_self():
    with pytest.raises(ValueError, match="k="):
        build_neighbours(clustered(10), k=10)


def test_neighbours_for_config_prefers_an_explicit_table(users, tmp_path):
    from esrkit.index import neighbours_for_config

    built = neighbours_for_config(RetrievalConfig(top_k=12, n_similar=10, method="exact"), users)
    np.testing.assert_array_equal(built.rows, exact_topk(users, 12)[0])
    np.save(tmp_path / "sim.npy", built.rows[:, :10])
    explicit = neighbours_for_config(RetrievalConfig(neighbours=str(tmp_path / "sim.npy"), n_similar=10))
    np.testing.assert_array_equal(explicit.first(10), built.first(10))
    with pytest.raises(ValueError, match="n_similar"):
        neighbours_for_config(RetrievalConfig(neighbours=str(tmp_path / "sim.npy"), n_similar=11))
    with pytest.raises(ValueError, match="embeddings are needed"):
        neighbours_for_config(RetrievalConfig())
