"""Similar-user search for more users than one index holds in memory.

hnswlib has no sharding, so (as FAISS ``IndexShards`` does) users are split by row range into shards, one
index per shard; every user is queried against every shard and the per-shard top-k lists are merged into the
global top-k (self excluded, ties by lower row). Shards are built, saved and queried one at a time: peak
memory is one shard's index, the embeddings (a memory map is fine) and the (n, k) running result.

* ``method="exact"`` gives exactly the unsharded ``exact_topk`` answer (both rank by the same canonical
  cosine).
* ``method="hnsw"`` gives the per-shard hnswlib answers merged; recall per shard is typically a little higher
  than one big index at the same ef, but every user pays one graph search per shard.

On disk: ``manifest.json`` (written first: method, shard ranges, parameters, embedding fingerprint) and one
``shard-NNNNN/`` directory per shard, each written atomically with ``shard.json`` as its completion record, so
an interrupted build resumes at the first missing shard.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import esrkit
from esrkit.index.exact import (
    check_embeddings,
    empty_topk,
    exact_search,
    fingerprint_embeddings,
    merge_topk,
)
from esrkit.index.hnsw import HnswIndex
from esrkit.index.neighbours import NeighbourTable, default_user_ids, recall_on_sample
from esrkit.utils.io import atomic_directory, atomic_save_npy, atomic_write_json, load_npy, read_json

log = logging.getLogger(__name__)

FORMAT_NAME = "esrkit-sharded-index"
FORMAT_VERSION = 1
SHARD_METHODS = ("exact", "hnsw")
_QUERY_BLOCK = 65_536  # users per hnsw query call (bounds the result buffers, gives progress points)


class ShardSearcher(Protocol):
    start: int
    stop: int

    def search(
        self,
        queries: np.ndarray,
        k: int,
        query_rows: np.ndarray | None,
        num_threads: int | None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Global rows int64 (q, k) and float64 scores, padded with -1 / -inf."""
        ...

    def save(self, path: Path) -> None: ...


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` row ranges of at most ``shard_size`` users."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


class ExactShard:
    """A row range searched exactly; its 'index' is simply the raw rows."""

    def __init__(self, rows: np.ndarray, start: int) -> None:
        self.rows = rows
        self.start = int(start)
        self.stop = self.start + len(rows)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        query_rows: np.ndarray | None,
        num_threads: int | None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search (``ef`` is ignored)."""
        return exact_search(
            queries, self.rows, k, query_rows=query_rows, database_offset=self.start, num_threads=num_threads
        )

    def save(self, path: Path) -> None:
        atomic_save_npy(path / "emb.npy", np.asarray(self.rows))

    @classmethod
    def load(cls, path: Path, start: int) -> ExactShard:
        return cls(load_npy(path / "emb.npy", mmap=True), start)


class HnswShard:
    """A row range in its own hnswlib index, labelled with global rows."""

    def __init__(self, index: HnswIndex, start: int, stop: int) -> None:
        self.index = index
        self.start = int(start)
        self.stop = int(stop)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        query_rows: np.ndarray | None,
        num_threads: int | None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """hnswlib search at ``ef`` (default: the ef stored with the index)."""
        best = empty_topk(len(queries), k)
        for qs in range(0, len(queries), _QUERY_BLOCK):
            qe = min(qs + _QUERY_BLOCK, len(queries))
            exclude = None if query_rows is None else query_rows[qs:qe]
            labels, scores = self.index.query(
                queries[qs:qe], k, exclude=exclude, ef=ef, num_threads=num_threads
            )
            best[0][qs:qe], best[1][qs:qe] = labels, scores.astype(np.float64)
        return best

    def save(self, path: Path) -> None:
        self.index.save(path / "index.bin")

    @classmethod
    def load(cls, path: Path, start: int, stop: int, num_threads: int | None = None) -> HnswShard:
        return cls(HnswIndex.load(path / "index.bin", num_threads=num_threads), start, stop)


def _build_shard(
    emb: np.ndarray, start: int, stop: int, method: str, hnsw: dict[str, int], num_threads: int | None
) -> ShardSearcher:
    rows = emb[start:stop]
    if method == "exact":
        return ExactShard(rows, start)
    index = HnswIndex.build(rows, labels=np.arange(start, stop), num_threads=num_threads, **hnsw)
    return HnswShard(index, start, stop)


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def _load_shard(root: Path, entry: dict[str, Any], method: str, num_threads: int | None) -> ShardSearcher:
    path = root / entry["name"]
    if method == "exact":
        return ExactShard.load(path, entry["start"])
    return HnswShard.load(path, entry["start"], entry["stop"], num_threads)


def _shard_is_complete(root: Path, entry: dict[str, Any]) -> bool:
    record = root / entry["name"] / "shard.json"
    return record.is_file() and read_json(record).get("fingerprint") == entry["fingerprint"]


# ---------------------------------------------------------------------------------------------- on-disk index
class ShardedIndex:
    """Shard indexes on disk, queried one shard at a time (bounded memory)."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest

    @property
    def method(self) -> str:
        return str(self.manifest["method"])

    @property
    def n_users(self) -> int:
        return int(self.manifest["n_users"])

    @property
    def shards(self) -> list[dict[str, Any]]:
        return list(self.manifest["shards"])

    @classmethod
    def load(cls, root: str | os.PathLike) -> ShardedIndex:
        root = Path(root)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{root}: no manifest.json (not a sharded index)")
        manifest = read_json(manifest_path)
        if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: not an {FORMAT_NAME} v{FORMAT_VERSION} manifest")
        missing = [e["name"] for e in manifest["shards"] if not _shard_is_complete(root, e)]
        if missing:
            raise ValueError(f"{root}: incomplete shards {missing[:5]} (rerun the build to finish them)")
        return cls(root, manifest)

    def iter_shards(self, num_threads: int | None = None) -> Iterator[ShardSearcher]:
        for entry in self.manifest["shards"]:
            yield _load_shard(self.root, entry, self.method, num_threads)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        query_rows: np.ndarray | None = None,
        num_threads: int | None = None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Global top-k over all shards: ``(rows int64 (q, k), scores float64 (q, k))``; ``query_rows`` are
        the queries' own global rows (excluded). ``ef`` overrides the stored hnsw search breadth for this
        call."""
        queries = check_embeddings(queries, "queries")
        rows = None if query_rows is None else np.asarray(query_rows, dtype=np.int64)
        best = empty_topk(len(queries), k)
        for shard in self.iter_shards(num_threads):
            best = merge_topk([best, shard.search(queries, k, rows, num_threads, ef)], k)
            del shard
        return best


def _manifest(
    emb: np.ndarray, ranges: list[tuple[int, int]], shard_size: int, method: str, hnsw: dict[str, int]
) -> dict[str, Any]:
    shards = [
        {"name": _shard_name(i), "start": s, "stop": e, "fingerprint": fingerprint_embeddings(emb[s:e])}
        for i, (s, e) in enumerate(ranges)
    ]
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "method": method,
        "n_users": len(emb),
        "dim": int(emb.shape[1]),
        "shard_size": int(shard_size),
        "hnsw": hnsw if method == "hnsw" else None,
        "shards": shards,
        "embedding_fingerprint": fingerprint_embeddings(emb),
        "esrkit_version": esrkit.__version__,
    }


def _start_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest, or check that an existing one (an interrupted build) describes the same build."""
    path = root / "manifest.json"
    if path.is_file():
        old = read_json(path)
        same = {k: old.get(k) for k in ("method", "shard_size", "hnsw", "embedding_fingerprint")}
        if same != {k: manifest[k] for k in same}:
            raise FileExistsError(f"{root} holds a different sharded index (other embeddings or parameters)")
        return
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, manifest)


def _save_shard(root: Path, entry: dict[str, Any], shard: ShardSearcher, seconds: float) -> None:
    with atomic_directory(root / entry["name"], overwrite=True) as tmp:
        shard.save(tmp)
        atomic_write_json(tmp / "shard.json", {**entry, "build_s": seconds})


def _shards(
    emb: np.ndarray,
    ranges: list[tuple[int, int]],
    method: str,
    hnsw: dict[str, int],
    num_threads: int | None,
    out_dir: Path | None,
    manifest: dict[str, Any] | None,
    timings: list[dict[str, Any]],
) -> Iterator[ShardSearcher]:
    """Yield each shard, built (and saved) now or, when already complete on disk, loaded; one at a time."""
    for i, (start, stop) in enumerate(ranges):
        entry = manifest["shards"][i] if manifest else None
        t0 = time.perf_counter()
        if out_dir is not None and entry is not None and _shard_is_complete(out_dir, entry):
            shard = _load_shard(out_dir, entry, method, num_threads)
            reused = True
        else:
            shard = _build_shard(emb, start, stop, method, hnsw, num_threads)
            reused = False
            if out_dir is not None and entry is not None:
                _save_shard(out_dir, entry, shard, time.perf_counter() - t0)
        timings.append(
            {"shard": i, "start": start, "stop": stop, "reused": reused, "build_s": time.perf_counter() - t0}
        )
        log.info(
            "shard %d/%d [%d, %d): %s in %.1fs",
            i + 1,
            len(ranges),
            start,
            stop,
            "loaded" if reused else "built",
            timings[-1]["build_s"],
        )
        yield shard


def build_shard_indexes(
    emb: np.ndarray,
    shard_size: int,
    out_dir: str | os.PathLike,
    method: str = "hnsw",
    *,
    shards: Sequence[int] | None = None,
    hnsw_m: int = 32,
    hnsw_ef_construction: int = 200,
    hnsw_ef: int = 200,
    seed: int = 100,
    num_threads: int | None = None,
) -> list[int]:
    """Build and save shard indexes without querying them: all shards, or only those listed (e.g. one per job,
    in parallel on several machines). Finished shards are skipped. Returns the shards built now; once every
    shard exists, ``ShardedIndex.load(out_dir)`` queries them."""
    if method not in SHARD_METHODS:
        raise ValueError(f"sharded method must be one of {SHARD_METHODS}, got {method!r}")
    emb = check_embeddings(emb, "user embeddings")
    hnsw = {"M": hnsw_m, "ef_construction": hnsw_ef_construction, "ef": hnsw_ef, "seed": seed}
    ranges = shard_ranges(len(emb), shard_size)
    root = Path(out_dir)
    manifest = _manifest(emb, ranges, shard_size, method, hnsw)
    _start_manifest(root, manifest)
    wanted = range(len(ranges)) if shards is None else shards
    built = []
    for i in wanted:
        if not 0 <= i < len(ranges):
            raise ValueError(f"shard {i} does not exist (0..{len(ranges) - 1})")
        entry = manifest["shards"][i]
        if _shard_is_complete(root, entry):
            continue
        t0 = time.perf_counter()
        shard = _build_shard(emb, entry["start"], entry["stop"], method, hnsw, num_threads)
        _save_shard(root, entry, shard, time.perf_counter() - t0)
        built.append(i)
        del shard
    return built


def build_sharded_neighbours(
    emb: np.ndarray,
    k: int,
    shard_size: int,
    method: str = "hnsw",
    *,
    out_dir: str | os.PathLike | None = None,
    user_ids: Sequence[str | int] | None = None,
    hnsw_m: int = 32,
    hnsw_ef_construction: int = 200,
    hnsw_ef: int = 200,
    seed: int = 100,
    num_threads: int | None = None,
    measure_recall: int = 0,
    recall_seed: int = 0,
) -> NeighbourTable:
    """Top-k similar users via per-shard indexes merged. With ``out_dir`` the shard indexes are also saved
    there (one at a time, resumable) and can be queried later with ``ShardedIndex.load(out_dir)``."""
    if method not in SHARD_METHODS:
        raise ValueError(f"sharded method must be one of {SHARD_METHODS}, got {method!r}")
    emb = check_embeddings(emb, "user embeddings")
    n = len(emb)
    if not 1 <= k < n:
        raise ValueError(f"k={k} must be between 1 and {n - 1} (n_users - 1)")
    ids = list(user_ids) if user_ids is not None else default_user_ids(n)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} user ids for {n} embeddings")
    hnsw = {"M": hnsw_m, "ef_construction": hnsw_ef_construction, "ef": hnsw_ef, "seed": seed}
    ranges = shard_ranges(n, shard_size)
    root = Path(out_dir) if out_dir is not None else None
    manifest = _manifest(emb, ranges, shard_size, method, hnsw) if root is not None else None
    if root is not None:
        _start_manifest(root, manifest)
    all_rows = np.arange(n, dtype=np.int64)
    best = empty_topk(n, k)
    timings: list[dict[str, Any]] = []
    for shard in _shards(emb, ranges, method, hnsw, num_threads, root, manifest, timings):
        t0 = time.perf_counter()
        best = merge_topk([best, shard.search(emb, k, all_rows, num_threads)], k)
        timings[-1]["query_s"] = time.perf_counter() - t0
        log.info("shard %d queried by all %d users in %.1fs", timings[-1]["shard"], n, timings[-1]["query_s"])
        del shard
    rows, scores = best
    if (rows < 0).any():
        raise RuntimeError("some users got fewer than k neighbours; raise ef or M")
    meta: dict[str, Any] = {
        "method": f"sharded-{method}",
        "k": k,
        "n_users": n,
        "dim": int(emb.shape[1]),
        "shard_size": shard_size,
        "n_shards": len(ranges),
        "hnsw": hnsw if method == "hnsw" else None,
        "shard_timings": timings,
        "embedding_fingerprint": manifest["embedding_fingerprint"]
        if manifest
        else fingerprint_embeddings(emb),
        "esrkit_version": esrkit.__version__,
    }
    if root is not None:
        meta["shard_dir"] = str(root)
    if method == "hnsw" and measure_recall > 0:
        meta["recall"] = recall_on_sample(emb, rows, measure_recall, recall_seed, num_threads)
        log.info(
            "sharded hnsw recall@%d on %d users: %.4f",
            k,
            meta["recall"]["sample"],
            meta["recall"]["recall_at_k"],
        )
    return NeighbourTable(
        rows=rows.astype(np.int32), user_ids=ids, scores=scores.astype(np.float32), meta=meta
    )
