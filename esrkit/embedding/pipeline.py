"""Dataset -> prompts -> cached provider vectors -> aligned item/user matrices on disk.

``embed_dataset`` renders the item and user prompts, embeds only the distinct texts that the provider's cache
lacks (committing every finished batch, so an interrupted run resumes), and writes

    <workdir>/embeddings/<dataset fp[:12]>-<prompts hash[:12]>-<provider identity hash[:12]>/
        items.npy       (n_items, d) float32, row i-1 = item i
        users.npy       (n_users, d) float32, row u = user row u
        embedding.json  provider identity, dims, template name and hashes, counts, timings

The middle segment hashes the template hashes together with the rendered prompts: the dataset fingerprint
covers the interactions only, not the item attributes the prompts are made from, so two datasets with equal
interactions but different metadata must not share a directory. ``embedding_directory`` computes the path
without embedding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import esrkit
from esrkit.data.sequences import SequenceData
from esrkit.embedding.cache import EmbeddingCache
from esrkit.prompts.templates import PromptTemplates, build_item_prompts, build_user_prompts
from esrkit.providers.base import Provider
from esrkit.utils.io import (
    atomic_save_npy,
    atomic_write_json,
    fingerprint_array,
    load_npy,
    read_json,
    sha256_text,
    stable_json_hash,
)

log = logging.getLogger(__name__)

FORMAT_NAME = "esrkit-embedding"
FORMAT_VERSION = 1
PARTS = {"items": ("items",), "users": ("users",), "both": ("items", "users")}


@dataclass
class EmbedStats:
    """What one part cost: distinct texts found in the cache vs computed now, and the provider's speed."""

    n_texts: int = 0
    n_unique: int = 0
    cached: int = 0
    computed: int = 0
    damaged: int = 0  # cached vectors that failed their checksum and were computed again
    tokens: int = 0
    seconds: float = 0.0  # embedding only
    load_seconds: float = 0.0  # loading the model / client before the first batch

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_texts": self.n_texts,
            "n_unique": self.n_unique,
            "cached": self.cached,
            "computed": self.computed,
            "damaged": self.damaged,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
            "texts_per_s": round(self.computed / self.seconds, 2) if self.seconds > 0 else None,
            "tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds > 0 else None,
        }


@dataclass
class EmbeddingResult:
    items: np.ndarray | None
    users: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)
    directory: Path = Path(".")


# ---------------------------------------------------------------------------------------------- texts
def text_hashes(texts: Sequence[str]) -> list[str]:
    return [sha256_text(t) for t in texts]


def embed_texts(
    texts: Sequence[str], provider: Provider, cache: EmbeddingCache, progress: bool = True, desc: str = ""
) -> tuple[np.ndarray, EmbedStats]:
    """Vectors for ``texts`` in order: cached ones read (and checked), missing or damaged distinct ones
    embedded and committed per batch."""
    prepared = provider.prepare_texts(texts)
    hashes = text_hashes(prepared)
    unique = list(dict.fromkeys(hashes))
    if not unique:
        return np.zeros((0, provider.dim or cache.dim or 0), dtype=np.float32), EmbedStats(n_texts=len(texts))
    first_text = {}
    for h, t in zip(hashes, prepared):
        first_text.setdefault(h, t)
    cached = cache.read(unique)
    if cached.corrupt:
        log.warning(
            "%s: %d cached vector(s) failed their checksum (damaged); computing them again",
            cache.path,
            len(cached.corrupt),
        )
        cache.discard(cached.corrupt)
    missing = [h for h, ok in zip(unique, cached.ok) if not ok]
    stats = EmbedStats(
        n_texts=len(texts),
        n_unique=len(unique),
        cached=len(unique) - len(missing),
        damaged=len(cached.corrupt),
    )
    matrix = cached.vectors
    if missing:
        _embed_missing(missing, [first_text[h] for h in missing], provider, cache, stats, progress, desc)
        fresh = cache.get(missing)
        if matrix.shape[1] != fresh.shape[1]:
            matrix = np.zeros((len(unique), fresh.shape[1]), dtype=np.float32)
        matrix[~cached.ok] = fresh
    row_of = {h: i for i, h in enumerate(unique)}
    return matrix[[row_of[h] for h in hashes]], stats


def _embed_missing(
    missing: list[str],
    texts: list[str],
    provider: Provider,
    cache: EmbeddingCache,
    stats: EmbedStats,
    progress: bool,
    desc: str,
) -> None:
    from tqdm.auto import tqdm  # lazy: tqdm loads only when a bar is shown

    start = time.perf_counter()
    provider.load()
    stats.load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with tqdm(
        total=len(missing), unit="text", desc=desc or provider.name, disable=not progress, dynamic_ncols=True
    ) as bar:
        for batch in provider.iter_embed(texts):
            cache.put([missing[i] for i in batch.indices.tolist()], batch.vectors)
            stats.computed += len(batch.indices)
            stats.tokens += int(batch.tokens)
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.update(len(batch.indices))
            bar.set_postfix_str(f"{stats.tokens / elapsed:,.0f} tok/s", refresh=False)
    stats.seconds = time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- datasets
def _parts(what: str) -> tuple[str, ...]:
    try:
        return PARTS[what]
    except KeyError:
        raise ValueError(f"what must be one of {', '.join(PARTS)}, not {what!r}") from None


def dataset_prompts(data: SequenceData, templates: PromptTemplates) -> dict[str, list[str]]:
    return {"items": build_item_prompts(data, templates), "users": build_user_prompts(data, templates)}


def prompts_hash(templates: PromptTemplates, prompts: dict[str, list[str]]) -> str:
    return stable_json_hash(
        {
            "item_template": templates.item_hash(),
            "user_template": templates.user_hash(),
            "items": sha256_text("\n".join(text_hashes(prompts["items"]))),
            "users": sha256_text("\n".join(text_hashes(prompts["users"]))),
        }
    )


def embedding_directory(
    data: SequenceData,
    provider: Provider,
    templates: PromptTemplates,
    workdir: str | Path = ".esrkit",
    prompts: dict[str, list[str]] | None = None,
) -> Path:
    prompts = prompts or dataset_prompts(data, templates)
    name = (
        f"{data.fingerprint()[:12]}-{prompts_hash(templates, prompts)[:12]}-{provider.identity.hash()[:12]}"
    )
    return Path(workdir) / "embeddings" / name


def embed_dataset(
    data: SequenceData,
    provider: Provider,
    templates: PromptTemplates,
    what: str = "both",
    workdir: str | Path = ".esrkit",
    progress: bool = True,
) -> EmbeddingResult:
    """Embed item and/or user prompts of ``data``; see the module docstring for what is written where."""
    parts = _parts(what)
    prompts = dataset_prompts(data, templates)
    directory = embedding_directory(data, provider, templates, workdir, prompts)
    matrices: dict[str, np.ndarray] = {}
    part_meta: dict[str, Any] = {}
    changed = False
    with EmbeddingCache(workdir, provider.identity) as cache:
        for part in parts:
            matrix, stats = embed_texts(
                prompts[part], provider, cache, progress, desc=f"{provider.name} {part}"
            )
            _check_alignment(part, matrix, data)
            fingerprint = fingerprint_array(matrix)
            if not _on_disk(directory, part, fingerprint):
                atomic_save_npy(directory / f"{part}.npy", matrix)
                changed = True
            matrices[part] = matrix
            part_meta[part] = {
                "file": f"{part}.npy",
                "shape": list(matrix.shape),
                "array_fingerprint": fingerprint,
                **stats.to_dict(),
            }
            log.info(
                "%s %s: %d texts (%d distinct): %d cached, %d computed in %.1f s",
                provider.name,
                part,
                stats.n_texts,
                stats.n_unique,
                stats.cached,
                stats.computed,
                stats.seconds,
            )
    # a fully cached rerun (every `esrkit evaluate`) writes nothing: the files on disk are already these
    meta = _write_meta(directory, data, provider, templates, prompts, part_meta, matrices, write=changed)
    return EmbeddingResult(
        items=matrices.get("items"), users=matrices.get("users"), meta=meta, directory=directory
    )


def _on_disk(directory: Path, part: str, fingerprint: str) -> bool:
    """Whether ``directory`` already holds exactly this matrix for ``part`` (the file itself is compared, so a
    damaged or edited file is written again)."""
    if not (directory / "embedding.json").is_file():
        return False
    try:
        return fingerprint_array(load_npy(directory / f"{part}.npy", mmap=True)) == fingerprint
    except (OSError, ValueError):  # missing or damaged: written again
        return False


def _check_alignment(part: str, matrix: np.ndarray, data: SequenceData) -> None:
    expected = data.n_items if part == "items" else data.n_users
    if matrix.shape[0] != expected:
        raise RuntimeError(f"{part}: {matrix.shape[0]} rows for {expected} {part}")


def _write_meta(
    directory: Path,
    data: SequenceData,
    provider: Provider,
    templates: PromptTemplates,
    prompts: dict[str, list[str]],
    part_meta: dict[str, Any],
    matrices: dict[str, np.ndarray],
    write: bool = True,
) -> dict[str, Any]:
    """embedding.json (written when ``write`` or missing); parts embedded by earlier runs are kept."""
    path = directory / "embedding.json"
    try:
        previous = read_json(path) if path.is_file() else {}
    except ValueError:  # damaged metadata of vectors that are all in the cache: written again
        previous, write = {}, True
    parts = {k: v for k, v in previous.get("parts", {}).items() if (directory / v.get("file", "")).is_file()}
    for name, now in part_meta.items():
        parts[name] = {**now, "cold": _cold_cost(parts.get(name, {}), now)}
    dim = next((int(m.shape[1]) for m in matrices.values()), previous.get("dim"))
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "esrkit_version": esrkit.__version__,
        "dataset": {
            "name": data.name,
            "fingerprint": data.fingerprint(),
            "n_items": data.n_items,
            "n_users": data.n_users,
        },
        "provider": provider.describe(),
        "provider_stats": provider_run_stats(provider),
        "dim": dim,
        "templates": {
            "name": templates.name,
            "source": templates.source,
            "item_hash": templates.item_hash(),
            "user_hash": templates.user_hash(),
            "prompts_hash": prompts_hash(templates, prompts),
        },
        "tokens_exact": bool(provider.tokens_exact),
        "parts": parts,
    }
    if write or not path.is_file():
        atomic_write_json(path, meta)
    return meta


def _cold_cost(previous: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """What computing this part's vectors has cost over every run that computed some (an interrupted run plus
    its resume add up). A fully cached rerun costs nothing, and must not erase what the first run cost."""
    before = previous.get("cold")
    if before is None:  # metadata written before "cold" existed: its own counts are the best record
        before = {
            "computed": previous.get("computed", 0),
            "seconds": previous.get("seconds", 0.0),
            "tokens": previous.get("tokens", 0),
        }
    return {
        "computed": int(before["computed"]) + int(now["computed"]),
        "seconds": round(float(before["seconds"]) + float(now["seconds"]), 3),
        "tokens": int(before["tokens"]) + int(now["tokens"]),
    }


def provider_run_stats(provider: Provider) -> dict[str, Any]:
    """Request and retry counts for remote providers (nothing secret)."""
    stats: dict[str, Any] = {}
    if hasattr(provider, "requests_sent"):
        stats["requests"] = int(provider.requests_sent)
    if hasattr(provider, "retry_events"):
        stats["retries"] = len(provider.retry_events)
    return stats


def load_embedding_dir(path: str | Path, mmap: bool = False) -> EmbeddingResult:
    """Read a directory written by ``embed_dataset`` (parts that were not embedded are None)."""
    path = Path(path)
    meta_path = path / "embedding.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not an esrkit embedding directory (no embedding.json)")
    meta = read_json(meta_path)
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    arrays: dict[str, np.ndarray | None] = {}
    for part in ("items", "users"):
        info = meta.get("parts", {}).get(part)
        file = path / f"{part}.npy"
        arrays[part] = None
        if info and file.is_file():
            arr = load_npy(file, mmap=mmap)
            if list(arr.shape) != list(info["shape"]):
                raise ValueError(f"{file}: shape {arr.shape} does not match embedding.json {info['shape']}")
            arrays[part] = arr
    return EmbeddingResult(items=arrays["items"], users=arrays["users"], meta=meta, directory=path)


# ---------------------------------------------------------------------------------------------- dry run
@dataclass
class PartPlan:
    n_texts: int
    n_unique: int
    cached: int
    to_embed: int
    tokens: int
    chars: int = 0


@dataclass
class EmbeddingPlan:
    provider: str
    tokens_exact: bool
    usd_per_1m_tokens: float
    parts: dict[str, PartPlan]

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.parts.values())

    @property
    def cost_usd(self) -> float:
        return self.tokens * self.usd_per_1m_tokens / 1e6

    @property
    def typical_tokens(self) -> int:
        """About 4 characters a token (English text): the likely count when ``tokens`` is only an upper
        bound."""
        return sum(-(-p.chars // 4) for p in self.parts.values())


def plan_dataset(
    data: SequenceData,
    provider: Provider,
    templates: PromptTemplates,
    what: str = "both",
    workdir: str | Path = ".esrkit",
) -> EmbeddingPlan:
    """What ``embed_dataset`` would do (texts not yet cached, their tokens, the cost) without embedding."""
    prompts = dataset_prompts(data, templates)
    plans: dict[str, PartPlan] = {}
    with EmbeddingCache(workdir, provider.identity, readonly=True) as cache:
        seen: set[str] = set()
        for part in _parts(what):
            prepared = provider.prepare_texts(prompts[part])
            hashes = text_hashes(prepared)
            unique = list(dict.fromkeys(hashes))
            present = cache.contains(unique)
            first = dict(zip(hashes, prepared))
            todo = [h for h, p in zip(unique, present) if not p and h not in seen]
            seen.update(todo)
            todo_texts = [first[h] for h in todo]
            tokens = sum(provider.count_tokens(todo_texts)) if todo else 0
            plans[part] = PartPlan(
                len(prepared),
                len(unique),
                int(present.sum()),
                len(todo),
                tokens,
                sum(len(t) for t in todo_texts),
            )
    return EmbeddingPlan(provider.name, bool(provider.tokens_exact), provider.usd_per_million_tokens, plans)
