"""Exact cosine top-k neighbours without ever holding an N x N matrix: query rows are scored in blocks against
the whole database (memory O(block x N)) and only each row's candidates are kept. (LLM-ESR's Eq. (7): each
user's N most similar users by the cosine of their LLM user embeddings.)

The official notebook builds the full N x N cosine matrix (about 22 GB in float64 for Beauty) and drops column
0 assuming the user ranks first; duplicate prompts break that. Here:

* the ranking key is a *canonical* float64 cosine, then the lower row index first, so results are
  deterministic and identical for every block size and for any sharding of the database (see
  ``canonical_cosine``);
* float32 torch matmuls + ``torch.topk`` pre-select ``k + margin`` candidates per row; each row is then
  certified against the float32 rounding bound, and the rare rows whose tie region crosses the cut (many
  duplicates) are re-selected from the whole float32 row, so the pre-selection never changes the answer;
* the user itself is excluded by index, never by position;
* zero-norm rows (empty prompts) have cosine 0 with everything: their neighbours are the lowest rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_BLOCK_BYTES = 256 << 20  # float32 score buffer per query block (query-vs-database search)
_CANONICAL_CHUNK = 64  # query rows per float64 rescoring chunk (bounds the (rows, candidates, dim) temporary)
_NORMALISE_CHUNK = 65_536


# ---------------------------------------------------------------------------------------------- arithmetic
def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Unit rows in float64 (zero rows stay zero). Row-wise arithmetic only, so a row's result never depends
    on which other rows are normalised with it."""
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.sqrt((x64 * x64).sum(axis=-1))
    out = np.zeros_like(x64)
    nonzero = norms > 0
    out[nonzero] = x64[nonzero] / norms[nonzero, None]
    return out


def canonical_cosine(query_unit: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Float64 cosine of unit query rows ``(b, d)`` with raw candidate rows ``(b, c, d)``: the one formula
    every exact path ranks by (element-wise products summed along the contiguous axis, identical for identical
    inputs)."""
    b, c, d = candidates.shape
    cand_unit = normalise_rows(candidates.reshape(b * c, d)).reshape(b, c, d)
    return (cand_unit * query_unit[:, None, :]).sum(axis=-1)


def float32_error_bound(dim: int) -> float:
    """Worst-case |float32 dot - float64 dot| for unit vectors of this dimension (rounded inputs plus
    recursive summation), doubled for safety."""
    return float((dim + 16) * 2.0**-23)


def order_by_score_then_index(indices: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-row permutation sorting by score descending, then index ascending (the deterministic tie-break)."""
    return np.lexsort((indices, -scores), axis=-1)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (indices, scores) candidate lists into the global top-k under the same ordering."""
    indices = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1)
    order = order_by_score_then_index(indices, scores)[:, :k]
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(scores, order, axis=1)


def empty_topk(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Padding rows: index -1, score -inf (sorted last by ``merge_topk``)."""
    return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float64)


def recall_at_k(approx: np.ndarray, exact: np.ndarray, chunk: int = 4096) -> float:
    """Mean fraction of each row's exact top-k found in the approximate top-k (set overlap; order ignored)."""
    approx = np.asarray(approx)
    exact = np.asarray(exact)
    if approx.shape != exact.shape:
        raise ValueError(f"shape mismatch: approx {approx.shape} vs exact {exact.shape}")
    if approx.size == 0:
        return 1.0
    hits = 0
    for start in range(0, len(exact), chunk):
        a, e = approx[start : start + chunk], exact[start : start + chunk]
        hits += int((e[:, :, None] == a[:, None, :]).any(axis=2).sum())
    return hits / exact.size


# ---------------------------------------------------------------------------------------------- search
@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (None keeps the current setting)."""
    import torch  # lazy: index queries and numpy searches start without torch

    if not num_threads or num_threads <= 0:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def default_block(n_database: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Query rows per block so the float32 score buffer stays within ``block_bytes``."""
    return int(max(1, min(8192, block_bytes // (4 * max(1, n_database)))))


def default_margin(k: int) -> int:
    """Extra float32 candidates per row: enough that certification almost never falls back."""
    return max(16, k // 4)


def fingerprint_embeddings(emb: np.ndarray, chunk_rows: int = _NORMALISE_CHUNK) -> str:
    """Same digest as ``esrkit.utils.io.fingerprint_array`` but hashed in row chunks, so a memory-mapped
    matrix is never copied whole."""
    arr = np.asarray(emb)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    for start in range(0, len(arr), chunk_rows):
        h.update(np.ascontiguousarray(arr[start : start + chunk_rows]).tobytes())
    return h.hexdigest()


def check_embeddings(emb: np.ndarray, name: str = "embeddings") -> np.ndarray:
    arr = np.asarray(emb)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {arr.dtype}")
    for start in range(0, len(arr), _NORMALISE_CHUNK):
        if not np.isfinite(arr[start : start + _NORMALISE_CHUNK]).all():
            raise ValueError(f"{name} contain NaN or infinite values (first bad block starts at row {start})")
    return arr


def _unit_float32(database: np.ndarray) -> np.ndarray:
    """Canonical unit rows rounded to float32, normalised in chunks (no full float64 copy)."""
    out = np.empty(database.shape, dtype=np.float32)
    for start in range(0, len(database), _NORMALISE_CHUNK):
        stop = start + _NORMALISE_CHUNK
        out[start:stop] = normalise_rows(database[start:stop])
    return out


def _rescore(query_unit: np.ndarray, database: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Canonical cosines for candidate rows (local indices), chunked to bound the 3-D temporary."""
    out = np.empty(cand.shape, dtype=np.float64)
    for start in range(0, len(cand), _CANONICAL_CHUNK):
        c = cand[start : start + _CANONICAL_CHUNK]
        gathered = np.asarray(database[c.ravel()]).reshape(c.shape[0], c.shape[1], -1)
        out[start : start + _CANONICAL_CHUNK] = canonical_cosine(
            query_unit[start : start + _CANONICAL_CHUNK], gathered
        )
    return out


def _select(local: np.ndarray, scores: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of candidate rows by (score desc, global index asc); pads with -1/-inf when fewer than k."""
    glob = local.astype(np.int64) + offset
    glob = np.where(np.isneginf(scores), -1, glob)
    order = order_by_score_then_index(glob, scores)[..., :k]
    idx = np.take_along_axis(glob, order, axis=-1)
    sc = np.take_along_axis(scores, order, axis=-1)
    if idx.shape[-1] < k:
        pad = k - idx.shape[-1]
        idx = np.concatenate([idx, np.full(idx.shape[:-1] + (pad,), -1, np.int64)], axis=-1)
        sc = np.concatenate([sc, np.full(sc.shape[:-1] + (pad,), -np.inf)], axis=-1)
    return idx, sc


def _zero_query_result(self_local: int, m: int, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A zero-norm query has cosine 0 with every row: the lowest rows win the tie."""
    rows = [r for r in range(min(m, k + 1)) if r != self_local][:k]
    idx = np.full(k, -1, np.int64)
    sc = np.full(k, -np.inf)
    idx[: len(rows)] = np.asarray(rows, dtype=np.int64) + offset
    sc[: len(rows)] = 0.0
    return idx, sc


def exact_search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    query_rows: np.ndarray | None = None,
    database_offset: int = 0,
    block: int | None = None,
    margin: int | None = None,
    num_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k database rows for each query.

    ``query_rows[i]`` is query i's own global row: it is excluded when it falls inside this database, whose
    global rows are ``database_offset + arange(len(database))``. Returns global rows ``int64 (q, k)`` and
    canonical float64 cosines; rows with fewer than k candidates are padded with -1 / -inf. Memory: ``block x
    len(database)`` float32 scores plus a float32 unit copy of the database.
    """
    import torch  # lazy: index queries and numpy searches start without torch

    queries = check_embeddings(queries, "queries")
    database = check_embeddings(database, "database")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"dimension mismatch: queries {queries.shape[1]} vs database {database.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_q, m, dim = len(queries), len(database), database.shape[1]
    self_local = _self_local(query_rows, n_q, database_offset, m)
    block = block or default_block(m)
    c = min(k + (margin if margin is not None else default_margin(k)), m)
    tol = float32_error_bound(dim)
    out_idx, out_sc = empty_topk(n_q, k)
    fallbacks = 0
    with torch_threads(num_threads), torch.inference_mode():
        db32 = torch.from_numpy(_unit_float32(database))
        for start in range(0, n_q, block):
            stop = min(start + block, n_q)
            fallbacks += _search_block(
                queries[start:stop],
                database,
                db32,
                self_local[start:stop],
                database_offset,
                k,
                c,
                tol,
                out_idx[start:stop],
                out_sc[start:stop],
            )
    if fallbacks:
        log.debug(
            "exact_search: %d of %d rows re-selected from the full row (ties at the cut)", fallbacks, n_q
        )
    return out_idx, out_sc


def _self_local(query_rows: np.ndarray | None, n_q: int, offset: int, m: int) -> np.ndarray:
    if query_rows is None:
        return np.full(n_q, -1, dtype=np.int64)
    rows = np.asarray(query_rows, dtype=np.int64)
    if rows.shape != (n_q,):
        raise ValueError(f"query_rows must have shape ({n_q},), got {rows.shape}")
    local = rows - offset
    return np.where((local >= 0) & (local < m), local, -1)


def _search_block(
    queries: np.ndarray,
    database: np.ndarray,
    db32,
    self_local: np.ndarray,
    offset: int,
    k: int,
    c: int,
    tol: float,
    out_idx: np.ndarray,
    out_sc: np.ndarray,
) -> int:
    """Fill one block of query results in place; returns how many rows needed the full-row fallback."""
    import torch  # lazy: index queries and numpy searches start without torch

    q_unit = normalise_rows(queries)
    scores32 = torch.from_numpy(q_unit.astype(np.float32)) @ db32.T
    has_self = np.flatnonzero(self_local >= 0)
    if len(has_self):
        scores32[torch.from_numpy(has_self), torch.from_numpy(self_local[has_self])] = float("-inf")
    vals, cand = torch.topk(scores32, c, dim=1, sorted=False)
    cut32 = vals.min(dim=1).values.numpy().astype(np.float64)
    return _finalise(
        q_unit,
        database,
        cand.numpy(),
        cut32,
        self_local,
        offset,
        k,
        c == len(database),
        tol,
        lambda r: scores32[r],
        out_idx,
        out_sc,
    )


def _finalise(
    q_unit: np.ndarray,
    database: np.ndarray,
    cand: np.ndarray,
    cut32: np.ndarray,
    self_local: np.ndarray,
    offset: int,
    k: int,
    saw_everything: bool,
    tol: float,
    full_row: Callable[[int], Any],
    out_idx: np.ndarray,
    out_sc: np.ndarray,
) -> int:
    """Rank float32 candidates by the canonical cosine, certify each row, and redo uncertified rows from their
    full float32 row. ``cut32`` is each row's lowest float32 candidate score: every non-candidate scores at
    most that, hence (within ``tol``) cannot beat the k-th canonical score when ``cut32 < kth - tol``."""
    m = len(database)
    canon = _rescore(q_unit, database, cand)
    canon[cand == self_local[:, None]] = -np.inf
    out_idx[:], out_sc[:] = _select(cand, canon, offset, k)
    zero_q = ~(np.abs(q_unit).sum(axis=1) > 0)
    certified = saw_everything | (cut32 < out_sc[:, k - 1] - tol)
    redo = np.flatnonzero(~certified & ~zero_q)
    for r in redo:
        row = full_row(int(r))
        full = (row >= out_sc[r, k - 1] - tol).nonzero().ravel().numpy()
        row_scores = _rescore(q_unit[r : r + 1], database, full[None, :])[0]
        row_scores[full == self_local[r]] = -np.inf
        out_idx[r], out_sc[r] = _select(full, row_scores, offset, k)
    for r in np.flatnonzero(zero_q):
        out_idx[r], out_sc[r] = _zero_query_result(int(self_local[r]), m, offset, k)
    return len(redo)


def exact_search_chunked(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    query_rows: np.ndarray | None = None,
    chunk_rows: int = 262_144,
    num_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``exact_search`` over database row ranges merged one at a time: the same answer, with memory bounded by
    one chunk (the database may be a memory map)."""
    best = empty_topk(len(queries), k)
    for start in range(0, len(database), chunk_rows):
        part = exact_search(
            queries,
            database[start : start + chunk_rows],
            k,
            query_rows=query_rows,
            database_offset=start,
            num_threads=num_threads,
        )
        best = merge_topk([best, part], k)
    return best


def exact_topk(
    emb: np.ndarray,
    k: int,
    block: int | None = None,
    exclude_self: bool = True,
    num_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs exact cosine top-k: ``(indices int32 (n, k), scores float32 (n, k))``, most similar first,
    ties by lower row. ``block`` = query rows per matmul (default: a 256 MiB float32 score buffer); the answer
    never depends on it. With ``exclude_self`` the row itself is removed by index (duplicates of it stay
    and rank first)."""
    emb = check_embeddings(emb)
    n = len(emb)
    limit = n - 1 if exclude_self else n
    if not 1 <= k <= limit:
        raise ValueError(f"k={k} must be between 1 and {limit} for {n} rows (exclude_self={exclude_self})")
    rows = np.arange(n, dtype=np.int64) if exclude_self else None
    idx, sc = exact_search(emb, emb, k, query_rows=rows, block=block, num_threads=num_threads)
    return idx.astype(np.int32), sc.astype(np.float32)
