"""A read-only hnswlib index for approximate similar-user search (cosine space).

Why a wrapper:

* hnswlib is not thread-safe when ``add_items`` runs concurrently with ``knn_query``. ``HnswIndex`` has no add
  method: items go in only inside ``HnswIndex.build`` (which returns a finished index) or come from ``load``,
  so a query can never overlap an insertion.
* ``load_index`` does not restore ``ef``; the JSON beside the index file records every parameter (space, dim,
  M, ef_construction, ef, count, seed, label range, embedding fingerprint, versions) and ``load`` applies it.
* Self exclusion over-fetches k+1 in one batched, multi-threaded ``knn_query`` and drops the query's own
  label. hnswlib's ``filter=`` takes one Python callable for the whole batch, evaluated per visited node under
  the GIL, so excluding a different label per user means one call per user: correct but much slower (measured
  in benchmarks/RESULTS.md). Over-fetching is exact with respect to the graph search: when the user is not
  among its k+1 results (e.g. many duplicates of it), the first k are kept.
* Builds with ``num_threads=1`` are deterministic for a given seed; multi-threaded insertion order is not.
"""

from __future__ import annotations

import contextlib
import os
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

import esrkit
from esrkit.index.exact import check_embeddings, fingerprint_embeddings
from esrkit.utils.io import atomic_path, atomic_write_json, read_json

FORMAT_NAME = "esrkit-hnsw-index"
FORMAT_VERSION = 1
SPACE = "cosine"
_ADD_CHUNK = 50_000


class IndexFormatError(ValueError):
    """An index file or its parameter JSON is missing, corrupt or inconsistent."""


def _hnswlib():
    import hnswlib  # optional heavy import: hnswlib loads only for hnsw indexes

    return hnswlib


def _hnswlib_version() -> str:
    for dist in ("hnswlib", "chroma-hnswlib"):
        with contextlib.suppress(PackageNotFoundError):
            return f"{dist} {version(dist)}"
    return "unknown"


def _threads(num_threads: int | None) -> int:
    return int(num_threads) if num_threads and num_threads > 0 else -1


def params_path(index_path: str | os.PathLike) -> Path:
    """The JSON that sits beside an index file: ``users.bin`` -> ``users.json``."""
    return Path(index_path).with_suffix(".json")


class HnswIndex:
    """A finished hnswlib index (cosine). Create with ``build`` or ``load``; query with ``query``."""

    def __init__(self, index: Any, params: dict[str, Any], *, _token: object = None) -> None:
        if _token is not _CONSTRUCT:
            raise TypeError("use HnswIndex.build(...) or HnswIndex.load(...)")
        self._index = index
        self._params = dict(params)
        self._lock = threading.Lock()  # guards set_ef + knn_query pairs

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        emb: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        M: int = 32,
        ef_construction: int = 200,
        ef: int = 200,
        seed: int = 100,
        num_threads: int | None = None,
    ) -> HnswIndex:
        """Index every row of ``emb`` (labels default to ``0..n-1``). Deterministic when ``num_threads=1``."""
        emb = check_embeddings(emb)
        n, dim = emb.shape
        labels = _check_labels(labels, n)
        index = _hnswlib().Index(space=SPACE, dim=dim)
        index.init_index(max_elements=n, M=M, ef_construction=ef_construction, random_seed=seed)
        for start in range(0, n, _ADD_CHUNK):
            chunk = np.ascontiguousarray(emb[start : start + _ADD_CHUNK], dtype=np.float32)
            index.add_items(chunk, labels[start : start + _ADD_CHUNK], num_threads=_threads(num_threads))
        index.set_ef(ef)
        params = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "space": SPACE,
            "dim": int(dim),
            "M": int(M),
            "ef_construction": int(ef_construction),
            "ef": int(ef),
            "count": int(n),
            "seed": int(seed),
            "label_min": int(labels.min()),
            "label_max": int(labels.max()),
            "labels_contiguous": bool(np.array_equal(labels, np.arange(labels[0], labels[0] + n))),
            "embedding_fingerprint": fingerprint_embeddings(emb),
            "esrkit_version": esrkit.__version__,
            "hnswlib_version": _hnswlib_version(),
        }
        return cls(index, params, _token=_CONSTRUCT)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        num_threads: int | None = None,
        expected_fingerprint: str | None = None,
    ) -> HnswIndex:
        """Load an index file and re-apply every parameter from its JSON (``ef`` included)."""
        path = Path(path)
        meta_path = params_path(path)
        if not path.is_file() or not meta_path.is_file():
            raise IndexFormatError(f"{path}: need both the index file and {meta_path.name} beside it")
        params = read_json(meta_path)
        if params.get("format") != FORMAT_NAME or params.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(f"{meta_path}: not an {FORMAT_NAME} v{FORMAT_VERSION} parameter file")
        if params.get("file_bytes") is not None and path.stat().st_size != params["file_bytes"]:
            raise IndexFormatError(f"{path}: size {path.stat().st_size} != {params['file_bytes']} recorded")
        if expected_fingerprint and params.get("embedding_fingerprint") != expected_fingerprint:
            raise IndexFormatError(f"{path}: built from different embeddings than the ones given")
        index = _hnswlib().Index(space=params["space"], dim=int(params["dim"]))
        index.load_index(str(path), max_elements=int(params["count"]))
        if index.get_current_count() != params["count"]:
            raise IndexFormatError(
                f"{path}: holds {index.get_current_count()} items, JSON says {params['count']}"
            )
        index.set_ef(int(params["ef"]))
        if num_threads:
            index.set_num_threads(int(num_threads))
        return cls(index, params, _token=_CONSTRUCT)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index file atomically, then its parameter JSON (the JSON last: it marks a complete
        save)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self._index.save_index(str(tmp))
        self._params["file_bytes"] = path.stat().st_size
        atomic_write_json(params_path(path), self._params)
        return path

    # ------------------------------------------------------------------ queries
    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    @property
    def count(self) -> int:
        return int(self._params["count"])

    @property
    def dim(self) -> int:
        return int(self._params["dim"])

    @property
    def ef(self) -> int:
        return int(self._params["ef"])

    def set_ef(self, ef: int) -> None:
        """Change the default search breadth (recorded in the JSON on the next save)."""
        with self._lock:
            self._index.set_ef(int(ef))
            self._params["ef"] = int(ef)

    def query(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: np.ndarray | None = None,
        ef: int | None = None,
        num_threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k labels per query: ``(labels int64 (q, k), cosine float32 (q, k))``.

        ``exclude[i]`` is a label to drop from query i's answer (its own row; -1 for none). Rows are padded
        with -1 / -inf when the index holds fewer than k eligible items.
        """
        queries = check_embeddings(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {queries.shape[1]}, the index {self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        fetch = min(k + (1 if exclude is not None else 0), self.count)
        search_ef = max(int(ef or self.ef), fetch)
        data = np.ascontiguousarray(queries, dtype=np.float32)
        with self._lock:
            self._index.set_ef(search_ef)
            try:
                labels, dist = self._index.knn_query(data, k=fetch, num_threads=_threads(num_threads))
            except RuntimeError as exc:
                raise RuntimeError(
                    f"hnswlib found fewer than {fetch} results; raise ef or M ({exc})"
                ) from exc
            finally:
                self._index.set_ef(self.ef)
        labels = labels.astype(np.int64)
        scores = (1.0 - dist).astype(np.float32)
        if exclude is not None:
            labels, scores = _drop_excluded(labels, scores, np.asarray(exclude, dtype=np.int64))
        return _pad(labels[:, :k], scores[:, :k], k)


_CONSTRUCT = object()


def _check_labels(labels: np.ndarray | None, n: int) -> np.ndarray:
    if labels is None:
        return np.arange(n, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if labels.min() < 0 or len(np.unique(labels)) != n:
        raise ValueError("labels must be unique non-negative integers")
    return labels


def _drop_excluded(
    labels: np.ndarray, scores: np.ndarray, exclude: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's excluded label to the end (stable), keeping the others in rank order."""
    if exclude.shape != (len(labels),):
        raise ValueError(f"exclude must have shape ({len(labels)},), got {exclude.shape}")
    is_self = labels == exclude[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")
    labels = np.take_along_axis(labels, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    moved = np.take_along_axis(is_self, order, axis=1)
    labels[moved] = -1
    scores[moved] = -np.inf
    return labels, scores


def _pad(labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if labels.shape[1] == k:
        return labels, scores
    extra = k - labels.shape[1]
    labels = np.concatenate([labels, np.full((len(labels), extra), -1, np.int64)], axis=1)
    scores = np.concatenate([scores, np.full((len(scores), extra), -np.inf, np.float32)], axis=1)
    return labels, scores
