"""Content-addressed embedding cache: one SQLite file per provider identity, one row per distinct text.

Layout: ``<workdir>/cache/<identity hash[:16]>/vectors.sqlite`` (+ ``identity.json``, for people). A row is
(sha256 of the exact text embedded, little-endian float32 vector bytes). So:

* two providers never mix: each identity has its own file, and the file records its identity and refuses any
  other;
* a changed template re-embeds only prompts whose text changed; duplicate texts are stored and embedded once;
* every finished batch is one SQLite transaction (WAL journal): a run killed with ``kill -9`` keeps every
  batch committed before the kill, and the next run embeds only what is missing. A torn transaction is rolled
  back by SQLite on the next open; nothing half-written is ever read;
* safe formats only: raw float32 bytes and JSON text, never pickle. Texts themselves are not stored (only
  hashes);
* every vector has a CRC-32 of its bytes (table ``vector_crc32``), checked whenever it is read: a damaged
  vector is reported (``read``) and ``embed`` recomputes it with a warning, instead of training on garbage.
  Rows written by an esrkit without checksums are read unverified once and get their checksum then (trust on
  first read); the separate table keeps such older esrkit versions able to read and write the same file.

Concurrency: one writer per provider identity is the supported case. Concurrent writers are still safe (SQLite
serialises transactions, waiting up to ``busy_timeout``; ``INSERT OR IGNORE`` makes a text embedded by two
writers harmless), they just duplicate work. Any number of readers may run alongside.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esrkit.providers.base import ProviderIdentity
from esrkit.utils.io import atomic_write_json

log = logging.getLogger(__name__)

CACHE_FORMAT = "esrkit-embedding-cache"
CACHE_VERSION = 1
_QUERY_CHUNK = 500  # well under SQLite's bound-parameter limit


class CacheError(RuntimeError):
    """The cache file is unusable or belongs to another provider identity."""


@dataclass
class CachedRows:
    """What ``read`` found: ``vectors`` (n, d) float32 in the order asked, valid where ``ok``; ``corrupt``
    lists the hashes whose stored bytes fail their checksum (their rows are not valid)."""

    vectors: np.ndarray
    ok: np.ndarray
    corrupt: list[str]


def checksum(blob: bytes) -> int:
    return zlib.crc32(blob)


@contextlib.contextmanager
def sqlite_errors(path: Path, action: str) -> Iterator[None]:
    """SQLite's errors as CacheError naming the file and what to do (its own say neither)."""
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc)
        if "full" in text:
            hint = (
                f"the disk holding {path.parent} is full: free space (or move --workdir elsewhere) and "
                "run the command again; batches committed before are kept, only the rest is embedded"
            )
        elif "not a database" in text or "malformed" in text or "encrypted" in text:
            hint = (
                f"the file is damaged or not an esrkit cache: delete {path.parent} (its vectors are "
                "recomputed on the next run) or restore it from a copy"
            )
        elif "locked" in text or "busy" in text:
            hint = "another process holds it too long: wait for it, or run one esrkit per cache"
        else:
            hint = "check the file and its folder's permissions and free space"
        raise CacheError(f"{path}: {action} failed ({text}); {hint}") from None


def cache_directory(workdir: str | Path, identity: ProviderIdentity) -> Path:
    return Path(workdir) / "cache" / identity.hash()[:16]


class EmbeddingCache:
    """Vectors of one provider identity keyed by ``sha256(text)`` (hex)."""

    def __init__(
        self,
        workdir: str | Path,
        identity: ProviderIdentity,
        readonly: bool = False,
        busy_timeout_s: float = 60.0,
    ) -> None:
        self.identity = identity
        self.identity_hash = identity.hash()
        self.directory = cache_directory(workdir, identity)
        self.path = self.directory / "vectors.sqlite"
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None
        self._dim: int | None = None
        self._has_checksums = False
        if readonly and not self.path.exists():
            return  # an empty read-only view: everything is missing
        if not readonly:
            self.directory.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode={'ro' if readonly else 'rwc'}"
        deadline = time.monotonic() + busy_timeout_s
        with sqlite_errors(self.path, "opening the embedding cache"):
            while True:
                try:
                    self._open(uri, busy_timeout_s)
                    break
                except sqlite3.OperationalError as exc:
                    # processes opening one new cache at once: switching it to WAL can report "locked" at
                    # once, without SQLite's busy wait; try again until the same timeout
                    self.close()
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def _open(self, uri: str, busy_timeout_s: float) -> None:
        self._conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
        if not self.readonly:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process kills
            self._initialise()
        self._check_identity()
        self._has_checksums = not self.readonly or self._table_exists("vector_crc32")

    # -------------------------------------------------------------- setup
    def _initialise(self) -> None:
        conn = self._require()
        with _transaction(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors (text_sha256 TEXT PRIMARY KEY, vector BLOB NOT NULL)"
                " WITHOUT ROWID"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vector_crc32 (text_sha256 TEXT PRIMARY KEY, "
                "crc32 INTEGER NOT NULL) WITHOUT ROWID"
            )
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (CACHE_FORMAT,))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (str(CACHE_VERSION),))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('identity_hash', ?)", (self.identity_hash,))
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('identity', ?)",
                (json.dumps(self.identity.to_dict(), sort_keys=True),),
            )
        readme = self.directory / "identity.json"
        if not readme.exists():
            atomic_write_json(
                readme, {"identity_hash": self.identity_hash, "identity": self.identity.to_dict()}
            )

    def _check_identity(self) -> None:
        meta = dict(self._require().execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != CACHE_FORMAT:
            raise CacheError(f"{self.path} is not an esrkit embedding cache")
        if int(meta.get("version", 0)) > CACHE_VERSION:
            raise CacheError(f"{self.path}: cache version {meta['version']} is newer than this esrkit")
        if meta.get("identity_hash") != self.identity_hash:
            raise CacheError(
                f"{self.path} holds vectors of provider identity {meta.get('identity_hash', '?')[:16]}, not "
                f"{self.identity_hash[:16]}: refusing to mix providers"
            )
        if meta.get("dim"):
            self._dim = int(meta["dim"])

    def _table_exists(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
        return self._require().execute(query, (name,)).fetchone() is not None

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CacheError("cache is closed")
        return self._conn

    # -------------------------------------------------------------- reading
    @property
    def dim(self) -> int | None:
        return self._dim

    def __len__(self) -> int:
        if self._conn is None:
            return 0
        return int(self._conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def contains(self, hashes: Sequence[str]) -> np.ndarray:
        """Boolean mask: which hashes have a vector."""
        found: set[str] = set()
        if self._conn is not None:
            with sqlite_errors(self.path, "reading the embedding cache"):
                for chunk in _chunks(hashes, _QUERY_CHUNK):
                    marks = ",".join("?" * len(chunk))
                    query = f"SELECT text_sha256 FROM vectors WHERE text_sha256 IN ({marks})"
                    found.update(r[0] for r in self._conn.execute(query, chunk))
        return np.fromiter((h in found for h in hashes), dtype=bool, count=len(hashes))

    def get(self, hashes: Sequence[str]) -> np.ndarray:
        """(n, d) float32 in the order given; every hash must be present and intact."""
        if not hashes:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        rows = self.read(hashes)
        if rows.corrupt:
            raise CacheError(
                f"{self.path}: {len(rows.corrupt)} stored vector(s) fail their checksum "
                "(damaged); run `esrkit embed` again to recompute them"
            )
        if not rows.ok.all():
            raise CacheError(f"{self.path}: {int((~rows.ok).sum())} requested vectors are not in the cache")
        return rows.vectors

    def read(self, hashes: Sequence[str]) -> CachedRows:
        """The stored vectors of ``hashes``, each checked against its checksum; missing or damaged ones are
        reported in the result, not raised. Rows without a checksum (an older esrkit wrote them) are trusted
        and get one now when the cache is writable."""
        conn = self._require()
        position: dict[str, list[int]] = {}
        for i, h in enumerate(hashes):
            position.setdefault(h, []).append(i)
        ok = np.zeros(len(hashes), dtype=bool)
        out = np.zeros((len(hashes), self._dim or 0), dtype=np.float32)
        corrupt: list[str] = []
        adopted: list[tuple[str, int]] = []
        with sqlite_errors(self.path, "reading the embedding cache"):
            for chunk in _chunks(list(position), _QUERY_CHUNK):
                for h, blob, crc in self._select(conn, chunk):
                    if crc is None:
                        adopted.append((h, checksum(blob)))
                    elif checksum(blob) != crc:
                        corrupt.append(h)
                        continue
                    vec = np.frombuffer(blob, dtype="<f4")
                    if out.shape[1] == 0 and len(hashes):
                        out = np.zeros((len(hashes), vec.shape[0]), dtype=np.float32)
                    if vec.shape[0] != out.shape[1]:
                        raise CacheError(f"{self.path}: stored vectors have inconsistent widths")
                    out[position[h]] = vec
                    ok[position[h]] = True
            if adopted and not self.readonly:
                with _transaction(conn):
                    conn.executemany("INSERT OR IGNORE INTO vector_crc32 VALUES (?, ?)", adopted)
        return CachedRows(out, ok, corrupt)

    def _select(self, conn: sqlite3.Connection, chunk: list[str]) -> Iterable[tuple[str, bytes, int | None]]:
        marks = ",".join("?" * len(chunk))
        if not self._has_checksums:  # a read-only view of a cache no checksumming esrkit has opened yet
            query = f"SELECT text_sha256, vector FROM vectors WHERE text_sha256 IN ({marks})"
            return ((h, blob, None) for h, blob in conn.execute(query, chunk))
        return conn.execute(
            "SELECT v.text_sha256, v.vector, c.crc32 FROM vectors v LEFT JOIN vector_crc32 c "
            f"ON c.text_sha256 = v.text_sha256 WHERE v.text_sha256 IN ({marks})",
            chunk,
        )

    def discard(self, hashes: Sequence[str]) -> None:
        """Remove damaged vectors, so they count as missing and are embedded again."""
        if self.readonly:
            raise CacheError(f"{self.path}: cannot discard damaged vectors of a cache opened read-only")
        conn = self._require()
        with sqlite_errors(self.path, "removing damaged vectors from the cache"), _transaction(conn):
            for chunk in _chunks(hashes, _QUERY_CHUNK):
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM vectors WHERE text_sha256 IN ({marks})", chunk)
                conn.execute(f"DELETE FROM vector_crc32 WHERE text_sha256 IN ({marks})", chunk)

    # -------------------------------------------------------------- writing
    def put(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store one finished batch in one transaction (all rows or none)."""
        if self.readonly:
            raise CacheError("cache opened read-only")
        vectors = np.asarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[0] != len(hashes):
            raise CacheError(f"put: {len(hashes)} hashes for vectors of shape {vectors.shape}")
        if len(hashes) == 0:
            return
        conn = self._require()
        width = int(vectors.shape[1])
        if self._dim is not None and width != self._dim:
            raise CacheError(f"{self.path}: vectors of width {width} for a cache of width {self._dim}")
        rows = [(h, vectors[i].tobytes()) for i, h in enumerate(hashes)]
        sums = [(h, checksum(blob)) for h, blob in rows]
        with sqlite_errors(self.path, "writing to the embedding cache"), _transaction(conn):
            if self._dim is None:
                stored = conn.execute("SELECT value FROM meta WHERE key='dim'").fetchone()
                if stored is not None and int(stored[0]) != width:
                    raise CacheError(
                        f"{self.path}: vectors of width {width} for a cache of width {stored[0]}"
                    )
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('dim', ?)", (str(width),))
            conn.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", rows)
            # a row another writer stored first keeps the checksum that writer stored with it
            conn.executemany("INSERT OR IGNORE INTO vector_crc32 VALUES (?, ?)", sums)
        self._dim = width

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> EmbeddingCache:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock up front so writers queue
    cleanly."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not exc_type:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:  # after some errors (a full disk) SQLite has rolled back already
            self.conn.execute("ROLLBACK")


def _chunks(items: Sequence[str] | Iterable[str], size: int) -> Iterable[list[str]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------------------- moving caches
@dataclass
class CacheSummary:
    """One provider identity's cache file, as `esrkit cache list|merge` reports it."""

    directory: Path
    identity: ProviderIdentity
    identity_hash: str
    vectors: int
    dim: int | None
    added: int = 0  # merge only: rows this merge wrote


def cache_folders(source: str | Path) -> list[Path]:
    """The identity folders under a workdir (``<workdir>/cache/*``), a ``cache/`` folder, or one identity
    folder."""
    source = Path(source)
    if (source / "vectors.sqlite").is_file():
        return [source]
    root = source / "cache" if (source / "cache").is_dir() else source
    folders = sorted(p for p in root.iterdir() if (p / "vectors.sqlite").is_file()) if root.is_dir() else []
    if not folders:
        raise CacheError(f"{source}: no embedding cache here (expected <workdir>/cache/<id>/vectors.sqlite)")
    return folders


def read_cache_identity(folder: Path) -> tuple[ProviderIdentity, int | None, int]:
    """(identity, dim, number of vectors) of a cache file, checking that its identity record is intact."""
    path = folder / "vectors.sqlite"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            count = int(conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise CacheError(f"{path}: not a readable esrkit embedding cache ({exc})") from None
    if meta.get("format") != CACHE_FORMAT or "identity" not in meta:
        raise CacheError(f"{path} is not an esrkit embedding cache")
    identity = ProviderIdentity.from_dict(json.loads(meta["identity"]))
    if identity.hash() != meta.get("identity_hash"):
        raise CacheError(f"{path}: its identity record does not match its identity hash; refusing to use it")
    return identity, (int(meta["dim"]) if meta.get("dim") else None), count


def list_caches(workdir: str | Path) -> list[CacheSummary]:
    out = []
    for folder in cache_folders(workdir):
        identity, dim, count = read_cache_identity(folder)
        out.append(CacheSummary(folder, identity, identity.hash(), count, dim))
    return out


def merge_caches(source: str | Path, workdir: str | Path, batch: int = 2000) -> list[CacheSummary]:
    """Copy every vector of ``source``'s caches that ``workdir``'s caches lack, identity by identity.

    Why: vectors are keyed by provider identity and text, so caches filled on different machines (a GPU box
    embedding, a laptop training) combine safely; identities never mix, existing rows are never overwritten,
    and each batch is one transaction, so an interrupted merge resumes by running it again."""
    summaries = []
    for folder in cache_folders(source):
        identity, dim, _ = read_cache_identity(folder)
        target = cache_directory(workdir, identity)
        if target.resolve() == folder.resolve():
            raise CacheError(f"{folder}: source and destination are the same cache")
        source_path = folder / "vectors.sqlite"
        conn = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        added = damaged = 0
        try:
            with EmbeddingCache(workdir, identity) as dest, sqlite_errors(source_path, "reading the cache"):
                rows = conn.execute(_source_query(conn))
                while chunk := rows.fetchmany(batch):
                    intact = [(h, blob) for h, blob, crc in chunk if crc is None or checksum(blob) == crc]
                    damaged += len(chunk) - len(intact)
                    hashes = [h for h, _ in intact]
                    new = ~dest.contains(hashes)
                    if new.any():
                        vectors = [
                            np.frombuffer(blob, dtype="<f4") for (_, blob), keep in zip(intact, new) if keep
                        ]
                        if len({v.shape[0] for v in vectors}) != 1:
                            raise CacheError(f"{source_path}: stored vectors have inconsistent widths")
                        dest.put([h for h, keep in zip(hashes, new) if keep], np.stack(vectors))
                        added += int(new.sum())
                total, dest_dim = len(dest), dest.dim
        finally:
            conn.close()
        if damaged:
            log.warning(
                "%s: %d damaged vector(s) (failed checksum) were not merged; `esrkit embed` computes them",
                source_path,
                damaged,
            )
        summaries.append(CacheSummary(target, identity, identity.hash(), total, dest_dim or dim, added))
    return summaries


def _source_query(conn: sqlite3.Connection) -> str:
    """Every (hash, vector, checksum or NULL) of a cache file, with or without a checksum table."""
    query = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='vector_crc32'"
    has_sums = conn.execute(query).fetchone()
    if not has_sums:
        return "SELECT text_sha256, vector, NULL FROM vectors ORDER BY text_sha256"
    return (
        "SELECT v.text_sha256, v.vector, c.crc32 FROM vectors v LEFT JOIN vector_crc32 c "
        "ON c.text_sha256 = v.text_sha256 ORDER BY v.text_sha256"
    )
