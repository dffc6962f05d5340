from __future__ import annotations

import logging

import numpy as np
import pytest

from esrkit.index import exact_search, exact_search_chunked, exact_topk, merge_topk, recall_at_k
from tests.index.helpers import brute_force_topk, clustered


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_matches_brute_force(kind):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 24)).astype(np.float32) if kind == "random" else clustered(600)
    idx, sc = exact_topk(x, 15)
    ref_idx, ref_sc = brute_force_topk(x, 15)
    assert idx.dtype == np.int32 and sc.dtype == np.float32 and idx.shape == (600, 15)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sc, ref_sc, atol=1e-6)


def test_duplicates_rank_by_index_and_self_is_excluded_by_index(caplog):
    caplog.set_level(logging.DEBUG, logger="esrkit.index.exact")
    x = clustered(500, seed=3)
    x[[40, 90, 300, 301]] = x[200]  # five identical users: 40, 90, 200, 300, 301
    x[100:130] = x[7]  # a tie block wider than k + margin forces the full-row fallback
    idx, sc = exact_topk(x, 10)
    ref_idx, _ = brute_force_topk(x, 10)
    np.testing.assert_array_equal(idx, ref_idx)
    assert idx[200, :4].tolist() == [40, 90, 300, 301]
    np.testing.assert_allclose(sc[200, :4], 1.0, atol=1e-6)
    assert idx[7].tolist() == list(range(100, 110))
    assert idx[100].tolist() == [7] + list(range(101, 110))
    assert not (idx == np.arange(len(x))[:, None]).any()
    assert "re-selected from the full row" in caplog.text  # the tie block did exercise the fallback


def test_include_self_when_asked():
    x = clustered(300, seed=4)
    idx, _ = exact_topk(x, 5, exclude_self=False)
    ref_idx, _ = brute_force_topk(x, 5, exclude_self=False)
    np.testing.assert_array_equal(idx, ref_idx)
    assert (idx[:, 0] == np.arange(300)).mean() > 0.99


def test_block_size_never_changes_the_answer():
    x = clustered(700, seed=5)
    x[10:40] = x[3]
    reference = exact_topk(x, 12, block=700)
    for block in (1, 13, 64, 256):
        idx, sc = exact_topk(x, 12, block=block)
        np.testing.assert_array_equal(idx, reference[0])
        np.testing.assert_array_equal(sc, reference[1])


def test_zero_norm_rows_get_the_lowest_rows_with_score_zero():
    x = clustered(200, seed=6)
    x[[0, 5, 50]] = 0.0
    idx, sc = exact_topk(x, 4)
    assert idx[5].tolist() == [0, 1, 2, 3]
    assert idx[0].tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(sc[5], 0.0)
    ref_idx, _ = brute_force_topk(x, 4)
    np.testing.assert_array_equal(idx, ref_idx)


def test_query_against_database_with_offset_and_chunking():
    x = clustered(800, seed=7)
    queries = np.array([3, 250, 799, 400])
    full_idx, _ = exact_topk(x, 8)
    idx, sc = exact_search(x[queries], x, 8, query_rows=queries)
    np.testing.assert_array_equal(idx, full_idx[queries])
    chunked_idx, chunked_sc = exact_search_chunked(x[queries], x, 8, query_rows=queries, chunk_rows=97)
    np.testing.assert_array_equal(chunked_idx, idx)
    np.testing.assert_array_equal(chunked_sc, sc)
    part = exact_search(x[queries], x[200:300], 8, query_rows=queries, database_offset=200)
    assert 250 not in part[0][1] and part[0].min() >= 200 and part[0].max() < 300


def test_padding_when_the_database_is_smaller_than_k():
    x = clustered(50, seed=8)
    idx, sc = exact_search(x[:2], x[:4], 6, query_rows=np.array([0, 1]))
    assert idx[0, :3].tolist() != [] and (idx[:, 3:] == -1).all() and np.isneginf(sc[:, 3:]).all()
    merged = merge_topk(
        [(idx, sc), exact_search(x[:2], x[4:10], 6, query_rows=np.array([0, 1]), database_offset=4)], 6
    )
    np.testing.assert_array_equal(merged[0], exact_search(x[:2], x[:10], 6, query_rows=np.array([0, 1]))[0])


def test_rejects_bad_input():
    x = clustered(20)
    with pytest.raises(ValueError, match="k="):
        exact_topk(x, 20)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        exact_topk(bad, 3)
    with pytest.raises(ValueError, match="2-D"):
        exact_topk(x[0], 3)


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.array([[3, 2, 9], [9, 9, 9]]), exact) == pytest.approx(2 / 6)
