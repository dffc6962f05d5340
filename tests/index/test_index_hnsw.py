from __future__ import annotations

import json

import numpy as np
import pytest

from esrkit.index import HnswIndex, IndexFormatError, exact_topk, recall_at_k, synthetic_user_embeddings
from tests.index.helpers import clustered


@pytest.fixture(scope="module")
def users() -> np.ndarray:
    return synthetic_user_embeddings(4000, 64, seed=11, users_per_cluster=50)


@pytest.fixture(scope="module")
def built(users) -> HnswIndex:
    return HnswIndex.build(users, M=16, ef_construction=100, ef=64, seed=3)


def test_recall_on_structured_data(users, built):
    labels, scores = built.query(users, 10, exclude=np.arange(len(users)))
    exact_idx, exact_sc = exact_topk(users, 10)
    assert recall_at_k(labels, exact_idx) >= 0.98
    np.testing.assert_allclose(scores[:, 0], exact_sc[:, 0], atol=1e-3)


def test_recall_on_clustered_data():
    x = clustered(3000, dim=48, n_clusters=30, seed=2)
    index = HnswIndex.build(x, M=16, ef_construction=100, ef=50)
    labels, _ = index.query(x, 10, exclude=np.arange(len(x)))
    assert recall_at_k(labels, exact_topk(x, 10)[0]) >= 0.98


def test_self_is_never_returned_even_with_duplicates():
    x = clustered(1000, seed=9)
    x[500:530] = x[499]  # 31 identical users: the user itself may fall outside the k+1 fetched
    index = HnswIndex.build(x, M=16, ef_construction=100, ef=50)
    labels, scores = index.query(x, 10, exclude=np.arange(len(x)))
    assert not (labels == np.arange(len(x))[:, None]).any()
    assert (labels >= 0).all() and np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(scores[499], 1.0, atol=1e-5)


def test_save_load_round_trip_restores_everything(tmp_path, users, built):
    path = built.save(tmp_path / "users.bin")
    params = json.loads((tmp_path / "users.json").read_text())
    for key in (
        "space",
        "dim",
        "M",
        "ef_construction",
        "ef",
        "count",
        "seed",
        "esrkit_version",
        "embedding_fingerprint",
    ):
        assert key in params
    assert params["ef"] == 64 and params["count"] == len(users) and params["space"] == "cosine"
    loaded = HnswIndex.load(path, expected_fingerprint=params["embedding_fingerprint"])
    assert loaded.ef == 64 and loaded._index.ef == 64  # hnswlib itself forgets ef on load_index
    queries = users[:300]
    a = built.query(queries, 10, exclude=np.arange(300))
    b = loaded.query(queries, 10, exclude=np.arange(300))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_load_refuses_incomplete_or_mismatched_files(tmp_path, built):
    path = built.save(tmp_path / "i.bin")
    with pytest.raises(IndexFormatError, match="different embeddings"):
        HnswIndex.load(path, expected_fingerprint="0" * 64)
    (tmp_path / "i.json").unlink()
    with pytest.raises(IndexFormatError, match="beside"):
        HnswIndex.load(path)


def test_no_way_to_add_items_after_build(built):
    assert not hasattr(built, "add_items") and not hasattr(built, "add")
    with pytest.raises(TypeError, match="build"):
        HnswIndex(object(), {})


def test_single_thread_builds_are_deterministic():
    x = clustered(800, seed=4)
    a = HnswIndex.build(x, M=8, ef_construction=40, ef=20, seed=5, num_threads=1).query(x, 5)
    b = HnswIndex.build(x, M=8, ef_construction=40, ef=20, seed=5, num_threads=1).query(x, 5)
    np.testing.assert_array_equal(a[0], b[0])


def test_labels_and_padding_for_small_indexes():
    x = clustered(30, seed=1)
    index = HnswIndex.build(x[10:14], labels=np.arange(10, 14))
    labels, scores = index.query(x[[10, 20]], 6, exclude=np.array([10, 20]))
    assert set(labels[0, :3]) == {11, 12, 13} and (labels[0, 3:] == -1).all()
    assert set(labels[1, :4]) == {10, 11, 12, 13} and (labels[1, 4:] == -1).all()
    assert np.isneginf(scores[0, 3:]).all()


def test_query_ef_override_does_not_change_the_stored_ef(built, users):
    built.query(users[:10], 5, ef=300)
    assert built.ef == 64 and built._index.ef == 64
