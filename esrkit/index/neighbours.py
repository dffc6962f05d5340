"""The similar-user table that retrieval-augmented self-distillation trains with, and how to build it.

``NeighbourTable.rows[u]`` lists user row u's most similar users (0-based rows, most similar first, never u
itself): the format of the official ``sim_user_100`` array, so ``from_official`` loads that file unchanged.
Raw user ids are kept beside the rows so callers can key by user id instead of trusting row positions.

On disk (a directory): ``neighbours.npy`` (int32), optional ``scores.npy`` (float32), ``user_ids.json`` and,
written last, ``table.json`` (counts, fingerprints of the other files, how it was built). No pickle; every
file is written atomically and ``load`` checks the fingerprints, so a torn save is detected rather than
half-read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import esrkit
from esrkit.index.exact import (
    check_embeddings,
    exact_search_chunked,
    exact_topk,
    fingerprint_embeddings,
    recall_at_k,
)
from esrkit.index.hnsw import HnswIndex
from esrkit.utils.io import atomic_save_npy, atomic_write_json, load_npy, read_json

if TYPE_CHECKING:
    from esrkit.config import RetrievalConfig

log = logging.getLogger(__name__)

FORMAT_NAME = "esrkit-neighbours"
FORMAT_VERSION = 1
METHODS = ("auto", "exact", "hnsw")


class NeighbourFormatError(ValueError):
    """A neighbour table is malformed: wrong shape or dtype, out-of-range rows, self-neighbours, torn save."""


def default_user_ids(n: int) -> list[str]:
    """``"1".."n"``: the official convention (row r is user r+1), also ``SequenceData``'s default."""
    return [str(r + 1) for r in range(n)]


@dataclass
class NeighbourTable:
    rows: np.ndarray  # int32 (n_users, k): 0-based user rows, most similar first
    user_ids: list[str]  # raw id of each row
    scores: np.ndarray | None = None  # float32 (n_users, k) cosine, when known
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = _as_int32_rows(self.rows)
        self.user_ids = [str(u) for u in self.user_ids]
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32)
        self._row_of: dict[str, int] | None = None
        self.validate()

    # ------------------------------------------------------------------ shape and checks
    @property
    def n_users(self) -> int:
        return int(self.rows.shape[0])

    @property
    def k(self) -> int:
        return int(self.rows.shape[1])

    def validate(self) -> None:
        """Shape, range, unique ids, no duplicate neighbours and, above all, no user listed as its own
        neighbour."""
        n = self.rows.shape[0]
        if len(self.user_ids) != n:
            raise NeighbourFormatError(f"{len(self.user_ids)} user ids for {n} rows")
        if len(set(self.user_ids)) != n:
            raise NeighbourFormatError("user ids are not unique")
        if self.scores is not None and self.scores.shape != self.rows.shape:
            raise NeighbourFormatError(f"scores shape {self.scores.shape} != rows shape {self.rows.shape}")
        if n and (self.rows.min() < 0 or self.rows.max() >= n):
            raise NeighbourFormatError(
                f"neighbour rows must lie in [0, {n}); got [{self.rows.min()}, {self.rows.max()}]"
            )
        self.check_no_self()
        _check_no_repeats(self.rows)

    def check_no_self(self) -> None:
        """Raise if any user lists itself (the official 'drop column 0' breaks on duplicate prompts)."""
        bad = self_neighbour_rows(self.rows)
        if len(bad):
            raise NeighbourFormatError(
                f"{len(bad)} user(s) list themselves as a neighbour, e.g. rows {bad[:5].tolist()}"
            )

    # ------------------------------------------------------------------ access
    def row_of(self, user_id: str | int) -> int:
        if self._row_of is None:
            self._row_of = {u: r for r, u in enumerate(self.user_ids)}
        try:
            return self._row_of[str(user_id)]
        except KeyError:
            raise KeyError(f"unknown user id {user_id!r}") from None

    def lookup(self, user_id: str | int, n: int | None = None) -> list[str]:
        """The user ids of ``user_id``'s n most similar users (all k by default)."""
        return [self.user_ids[r] for r in self.rows[self.row_of(user_id), : self._width(n)]]

    def lookup_scored(self, user_id: str | int, n: int | None = None) -> list[tuple[str, float | None]]:
        row = self.row_of(user_id)
        cols = range(self._width(n))
        return [
            (self.user_ids[self.rows[row, c]], None if self.scores is None else float(self.scores[row, c]))
            for c in cols
        ]

    def first(self, n: int) -> np.ndarray:
        """``(n_users, n)`` int32 rows: the training input (the official code uses the first 10 of 100)."""
        return np.ascontiguousarray(self.rows[:, : self._width(n)])

    def _width(self, n: int | None) -> int:
        if n is None:
            return self.k
        if not 1 <= n <= self.k:
            raise ValueError(f"asked for {n} neighbours; the table holds 1..{self.k}")
        return n

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        path = Path(path)
        header = path / "table.json"
        if header.exists() and not overwrite:
            raise FileExistsError(
                f"{path} already holds a neighbour table (pass overwrite=True / --overwrite)"
            )
        path.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(path / "neighbours.npy", self.rows)
        if self.scores is not None:
            atomic_save_npy(path / "scores.npy", self.scores)
        elif (path / "scores.npy").exists():
            (path / "scores.npy").unlink()
        atomic_write_json(path / "user_ids.json", self.user_ids, indent=None)
        atomic_write_json(header, self._header())
        return path

    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "n_users": self.n_users,
            "k": self.k,
            "has_scores": self.scores is not None,
            "fingerprints": self._fingerprints(),
            "meta": self.meta,
        }

    def _fingerprints(self) -> dict[str, str]:
        out = {
            "rows": fingerprint_embeddings(self.rows),
            "user_ids": fingerprint_embeddings(np.asarray(self.user_ids, dtype=str)),
        }
        if self.scores is not None:
            out["scores"] = fingerprint_embeddings(self.scores)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False, verify: bool = True) -> NeighbourTable:
        path = Path(path)
        header_path = path / "table.json"
        if not header_path.is_file():
            raise NeighbourFormatError(f"{path}: no table.json (not a neighbour table directory)")
        header = read_json(header_path)
        if header.get("format") != FORMAT_NAME or header.get("format_version") != FORMAT_VERSION:
            raise NeighbourFormatError(f"{header_path}: not an {FORMAT_NAME} v{FORMAT_VERSION} table")
        table = cls(
            rows=load_npy(path / "neighbours.npy", mmap=mmap),
            user_ids=read_json(path / "user_ids.json"),
            scores=load_npy(path / "scores.npy", mmap=mmap) if header.get("has_scores") else None,
            meta=header.get("meta", {}),
        )
        if table.rows.shape != (header["n_users"], header["k"]):
            raise NeighbourFormatError(
                f"{path}: neighbours.npy shape {table.rows.shape} disagrees with table.json"
            )
        if verify and table._fingerprints() != header.get("fingerprints"):
            raise NeighbourFormatError(
                f"{path}: files do not match the fingerprints in table.json (torn or edited save)"
            )
        return table

    @classmethod
    def from_official(
        cls, path: str | os.PathLike, user_ids: Sequence[str | int] | None = None
    ) -> NeighbourTable:
        """The official ``sim_user_100``-style int array ``(n_users, k)`` of 0-based rows, as ``.npy``.
        User ids default to the official convention (row r is user ``r + 1``)."""
        rows = load_npy(path)
        ids = list(user_ids) if user_ids is not None else default_user_ids(len(rows))
        return cls(rows=rows, user_ids=ids, meta={"method": "official", "source": str(path)})


def _as_int32_rows(rows: np.ndarray) -> np.ndarray:
    arr = np.asarray(rows)
    if arr.ndim != 2:
        raise NeighbourFormatError(f"neighbour rows must be 2-D (n_users, k), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise NeighbourFormatError(f"neighbour rows must be integers, got {arr.dtype}")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise NeighbourFormatError("neighbour rows do not fit int32")
    return arr if arr.dtype == np.int32 else arr.astype(np.int32)


def self_neighbour_rows(rows: np.ndarray) -> np.ndarray:
    """Rows that list themselves."""
    rows = np.asarray(rows)
    return np.flatnonzero((rows == np.arange(len(rows))[:, None]).any(axis=1))


def _check_no_repeats(rows: np.ndarray, chunk: int = 65_536) -> None:
    for start in range(0, len(rows), chunk):
        block = np.sort(rows[start : start + chunk], axis=1)
        bad = np.flatnonzero((block[:, 1:] == block[:, :-1]).any(axis=1))
        if len(bad):
            raise NeighbourFormatError(f"row {start + int(bad[0])} lists the same neighbour twice")


# ---------------------------------------------------------------------------------------------- building
def resolve_method(method: str, n_users: int, exact_below: int) -> str:
    """``auto`` -> exact below ``exact_below`` users (exact is simpler and not slower there), else hnsw."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "exact" if n_users < exact_below else "hnsw"
    return method


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A sorted random sample of rows for recall checks."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False)).astype(np.int64)


def recall_on_sample(
    emb: np.ndarray, rows: np.ndarray, sample: int, seed: int = 0, num_threads: int | None = None
) -> dict[str, Any]:
    """Recall@k of an approximate table against exact top-k on a random sample of users (memory bounded: the
    exact reference scans the users in chunks)."""
    k = rows.shape[1]
    users = sample_rows(len(emb), sample, seed)
    t0 = time.perf_counter()
    exact_idx, _ = exact_search_chunked(emb[users], emb, k, query_rows=users, num_threads=num_threads)
    recall = recall_at_k(np.asarray(rows)[users], exact_idx)
    return {
        "k": k,
        "sample": len(users),
        "seed": seed,
        "recall_at_k": recall,
        "seconds": time.perf_counter() - t0,
    }


def build_neighbours(
    user_emb: np.ndarray,
    k: int = 100,
    method: str = "auto",
    exact_below: int = 200_000,
    user_ids: Sequence[str | int] | None = None,
    *,
    hnsw_m: int = 32,
    hnsw_ef_construction: int = 200,
    hnsw_ef: int = 200,
    seed: int = 100,
    num_threads: int | None = None,
    measure_recall: int = 0,
    recall_seed: int = 0,
    block: int | None = None,
    index_path: str | os.PathLike | None = None,
) -> NeighbourTable:
    """Each user's k most similar users by cosine of their LLM embeddings.

    ``method="auto"`` uses exact blocked search below ``exact_below`` users and hnswlib above. With hnsw and
    ``measure_recall > 0``, recall@k against exact search on that many random users is logged and stored in
    ``table.meta["recall"]``. ``index_path`` also saves the hnsw index (plus its parameter JSON) for later
    queries.
    """
    emb = check_embeddings(user_emb, "user embeddings")
    n = len(emb)
    if not 1 <= k < n:
        raise ValueError(f"k={k} must be between 1 and {n - 1} (n_users - 1)")
    ids = list(user_ids) if user_ids is not None else default_user_ids(n)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} user ids for {n} embeddings")
    chosen = resolve_method(method, n, exact_below)
    meta: dict[str, Any] = {
        "method": chosen,
        "requested_method": method,
        "k": k,
        "n_users": n,
        "dim": int(emb.shape[1]),
        "embedding_fingerprint": fingerprint_embeddings(emb),
        "esrkit_version": esrkit.__version__,
    }
    if chosen == "exact":
        rows, scores = _exact_table(emb, k, block, num_threads, meta)
    else:
        hnsw_params = {"M": hnsw_m, "ef_construction": hnsw_ef_construction, "ef": hnsw_ef, "seed": seed}
        rows, scores = _hnsw_table(emb, k, hnsw_params, num_threads, index_path, meta)
        if measure_recall > 0:
            meta["recall"] = recall_on_sample(emb, rows, measure_recall, recall_seed, num_threads)
            log.info(
                "hnsw recall@%d on %d sampled users: %.4f",
                k,
                meta["recall"]["sample"],
                meta["recall"]["recall_at_k"],
            )
    return NeighbourTable(rows=rows, user_ids=ids, scores=scores, meta=meta)


def _exact_table(
    emb: np.ndarray, k: int, block: int | None, num_threads: int | None, meta: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    t0 = time.perf_counter()
    rows, scores = exact_topk(emb, k, block=block, num_threads=num_threads)
    meta["timings"] = {"search_s": time.perf_counter() - t0}
    return rows, scores


def _hnsw_table(
    emb: np.ndarray,
    k: int,
    params: dict[str, int],
    num_threads: int | None,
    index_path: str | os.PathLike | None,
    meta: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    t0 = time.perf_counter()
    index = HnswIndex.build(emb, num_threads=num_threads, **params)
    t1 = time.perf_counter()
    labels, scores = index.query(emb, k, exclude=np.arange(len(emb)), num_threads=num_threads)
    t2 = time.perf_counter()
    if (labels < 0).any():
        raise RuntimeError("hnswlib returned fewer than k neighbours for some users; raise ef or M")
    if index_path is not None:
        index.save(index_path)
        meta["index_file"] = Path(index_path).name
    meta["hnsw"] = {key: index.params[key] for key in ("M", "ef_construction", "ef", "seed")}
    meta["timings"] = {"build_s": t1 - t0, "query_s": t2 - t1}
    return labels.astype(np.int32), scores


def build_neighbours_from_config(
    user_emb: np.ndarray,
    cfg: RetrievalConfig,
    user_ids: Sequence[str | int] | None = None,
    **kwargs: Any,
) -> NeighbourTable:
    """``build_neighbours`` with ``RetrievalConfig``'s top_k, method, exact_below and hnsw_* settings."""
    return build_neighbours(
        user_emb,
        k=cfg.top_k,
        method=cfg.method,
        exact_below=cfg.exact_below,
        user_ids=user_ids,
        hnsw_m=cfg.hnsw_m,
        hnsw_ef_construction=cfg.hnsw_ef_construction,
        hnsw_ef=cfg.hnsw_ef,
        **kwargs,
    )


def neighbours_for_config(
    cfg: RetrievalConfig,
    user_emb: np.ndarray | None = None,
    user_ids: Sequence[str | int] | None = None,
    **kwargs: Any,
) -> NeighbourTable:
    """The table a run trains with: ``cfg.neighbours`` (an official-style int ``.npy``) when set, else built
    from ``user_emb``. Checks that it holds at least ``cfg.n_similar`` neighbours per user."""
    if cfg.neighbours:
        table = NeighbourTable.from_official(cfg.neighbours, user_ids=user_ids)
    elif user_emb is None:
        raise ValueError("retrieval.neighbours is empty, so user embeddings are needed to build the table")
    else:
        table = build_neighbours_from_config(user_emb, cfg, user_ids=user_ids, **kwargs)
    if table.k < cfg.n_similar:
        raise ValueError(
            f"the neighbour table holds {table.k} per user; retrieval.n_similar asks for {cfg.n_similar}"
        )
    if user_emb is not None and len(user_emb) != table.n_users:
        raise ValueError(f"the neighbour table has {table.n_users} users, the embeddings {len(user_emb)}")
    return table
