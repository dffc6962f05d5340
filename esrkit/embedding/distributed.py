"""Embedding with several processes on one machine: ``accelerate launch`` or ``torchrun`` around ``esrkit
embed``.

    accelerate launch --multi_gpu --num_processes 8 -m esrkit embed --provider llama \\
        --set provider.model=/models/Llama-2-7b-hf --dataset beauty
    torchrun --standalone --nproc-per-node 8 -m esrkit embed --provider llama ...

How the work is split, and why it survives a crash:

* **Shards by content.** A distinct text belongs to rank ``int(sha256(text)[:15], 16) % WORLD_SIZE``. Every
  rank renders the same prompts, keeps the texts of its shard that the cache lacks, and embeds them with its
  own copy of the model on its own GPU (``cuda:LOCAL_RANK``; the launcher's ``LOCAL_RANK`` picks it). Shards
  are disjoint, so no text is embedded twice, and no rank needs another rank's view of what is missing.
* **One cache, many writers.** Every rank commits each finished batch to the same SQLite content-addressed
  cache (``esrkit/embedding/cache.py``): WAL journal, one ``BEGIN IMMEDIATE`` transaction per batch, a 60 s
  busy timeout; SQLite serialises the writers and ``INSERT OR IGNORE`` makes a repeated text harmless. A batch
  is a few milliseconds of writing against seconds of GPU work, so writers rarely wait.
* **Assembly.** After a barrier, rank 0 runs the ordinary single-process ``embed_dataset``: every vector is
  now cached, so it only reads them and writes ``items.npy`` / ``users.npy`` / ``embedding.json`` (whose
  per-part counts and timings are the sums over ranks). The other ranks then read the same directory.
* **Crash and relaunch.** If a process dies (OOM, preemption, ``kill -9``), the launcher stops the others;
  every batch committed before that is in the cache. Relaunching the same command (with any number of
  processes) embeds only what is still missing: nothing finished is recomputed and nothing committed is lost.

SQLite's WAL needs every writer on the same host (its index lives in shared memory), so this is for the
processes of one machine (one node, many GPUs); a multi-node launch is refused. For a fleet of GPU machines,
serve the model with vLLM or TEI behind their OpenAI-compatible ``/v1/embeddings`` and point the ``openai``
provider at them (docs/SCALING.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esrkit.data.sequences import SequenceData
from esrkit.embedding.cache import EmbeddingCache
from esrkit.embedding.pipeline import (
    EmbeddingResult,
    EmbedStats,
    _embed_missing,
    _parts,
    dataset_prompts,
    embed_dataset,
    embedding_directory,
    load_embedding_dir,
    text_hashes,
)
from esrkit.prompts.templates import PromptTemplates
from esrkit.providers.base import Provider
from esrkit.utils.io import atomic_write_json, read_json
from esrkit.utils.runtime import DistributedRuntime, init_process_group, runtime

log = logging.getLogger(__name__)

EMBED_TIMEOUT_S = 6 * 3600.0  # ranks wait for the slowest shard at the barrier


def shard_of(text_hash: str, world: int) -> int:
    """The rank that embeds the text with this sha256 (hex)."""
    return int(text_hash[:15], 16) % world


def embed_shard(
    texts: Sequence[str],
    provider: Provider,
    cache: EmbeddingCache,
    rank: int,
    world: int,
    progress: bool = True,
    desc: str = "",
) -> EmbedStats:
    """Embed the distinct texts of ``texts`` that belong to ``rank`` and are not cached yet; commit per
    batch."""
    prepared = provider.prepare_texts(texts)
    first: dict[str, str] = {}
    for h, t in zip(text_hashes(prepared), prepared):
        first.setdefault(h, t)
    mine = [h for h in first if shard_of(h, world) == rank]
    present = cache.contains(mine)
    missing = [h for h, p in zip(mine, present) if not p]
    stats = EmbedStats(n_texts=len(prepared), n_unique=len(first), cached=len(mine) - len(missing))
    if missing:
        _embed_missing(missing, [first[h] for h in missing], provider, cache, stats, progress, desc)
    return stats


def embed_dataset_distributed(
    data: SequenceData,
    provider: Provider,
    templates: PromptTemplates,
    what: str = "both",
    workdir: str | Path = ".esrkit",
    progress: bool = True,
) -> EmbeddingResult:
    """``embed_dataset`` over every process of the launch (see the module docstring); every rank returns the
    assembled result. Without a launcher (one process) it is ``embed_dataset`` itself."""
    if not init_process_group(timeout_s=float(os.environ.get("ESRKIT_DIST_TIMEOUT_S", EMBED_TIMEOUT_S))):
        return embed_dataset(data, provider, templates, what, workdir, progress)
    rt = runtime()
    if not isinstance(rt, DistributedRuntime):
        return embed_dataset(data, provider, templates, what, workdir, progress)
    if rt.local_world_size != rt.world_size:
        raise RuntimeError(
            "esrkit embed shares one SQLite cache between its processes, which must run on one "
            f"machine ({rt.world_size} processes over several nodes here); embed on one node, or "
            "serve the model with vLLM/TEI for the openai provider (docs/SCALING.md)"
        )
    parts = _parts(what)
    prompts = dataset_prompts(data, templates)
    directory = embedding_directory(data, provider, templates, workdir, prompts)
    mine: dict[str, dict[str, Any]] = {}
    with EmbeddingCache(workdir, provider.identity) as cache:
        for part in parts:
            stats = embed_shard(
                prompts[part],
                provider,
                cache,
                rt.rank,
                rt.world_size,
                progress and rt.is_main,
                desc=f"{provider.name} {part} (rank 0 of {rt.world_size})",
            )
            mine[part] = {
                "computed": stats.computed,
                "tokens": stats.tokens,
                "seconds": stats.seconds,
                "load_seconds": stats.load_seconds,
            }
            log.info("rank %d %s: %d computed in %.1f s", rt.rank, part, stats.computed, stats.seconds)
    per_rank = rt.all_gather(mine)  # also the barrier: every shard is committed after it

    def assemble() -> str:
        result = embed_dataset(data, provider, templates, what, workdir, progress=False)
        _merge_stats(result.directory, per_rank)
        return str(result.directory)

    assembled = rt.on_main(assemble)
    assert Path(assembled) == directory, (assembled, directory)
    return load_embedding_dir(directory)


def _merge_stats(directory: Path, per_rank: list[dict[str, dict[str, Any]]]) -> None:
    """embedding.json of the assembled run reports what all ranks computed (rank 0 alone found it all
    cached)."""
    path = directory / "embedding.json"
    meta = read_json(path)
    for part, info in meta.get("parts", {}).items():
        ranks = [r[part] for r in per_rank if part in r]
        if not ranks:
            continue
        computed = sum(r["computed"] for r in ranks)
        tokens = sum(r["tokens"] for r in ranks)
        seconds = max(r["seconds"] for r in ranks)  # wall time: the ranks ran side by side
        info.update(
            {
                "computed": computed,
                "cached": info["n_unique"] - computed,
                "tokens": tokens,
                "seconds": round(seconds, 3),
                "load_seconds": round(max(r["load_seconds"] for r in ranks), 3),
                "texts_per_s": round(computed / seconds, 2) if seconds > 0 else None,
                "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
                "per_rank_computed": [r["computed"] for r in ranks],
            }
        )
    meta["processes"] = len(per_rank)
    atomic_write_json(path, meta)
