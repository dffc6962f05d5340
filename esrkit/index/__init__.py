"""Similar-user retrieval for LLM-ESR's retrieval-augmented self-distillation.

* ``exact_topk`` / ``exact_search``: blocked exact cosine top-k (never an N x N matrix), deterministic ties.
* ``HnswIndex``: a read-only hnswlib index with complete on-disk parameters.
* ``build_neighbours`` -> ``NeighbourTable``: the (n_users, k) similar-user table training reads, keyed by
  user id.
* ``build_sharded_neighbours`` / ``ShardedIndex``: one index per row-range shard, merged top-k, bounded
  memory.

torch and hnswlib are imported only when a search runs.
"""

from __future__ import annotations

from esrkit.index.exact import (
    exact_search,
    exact_search_chunked,
    exact_topk,
    merge_topk,
    normalise_rows,
    recall_at_k,
)
from esrkit.index.hnsw import HnswIndex, IndexFormatError
from esrkit.index.neighbours import (
    NeighbourFormatError,
    NeighbourTable,
    build_neighbours,
    build_neighbours_from_config,
    neighbours_for_config,
    recall_on_sample,
    resolve_method,
    self_neighbour_rows,
)
from esrkit.index.sharded import ShardedIndex, build_shard_indexes, build_sharded_neighbours, shard_ranges
from esrkit.index.synthetic import synthetic_user_embeddings

__all__ = [
    "HnswIndex",
    "IndexFormatError",
    "NeighbourFormatError",
    "NeighbourTable",
    "ShardedIndex",
    "build_neighbours",
    "build_neighbours_from_config",
    "build_shard_indexes",
    "build_sharded_neighbours",
    "exact_search",
    "exact_search_chunked",
    "exact_topk",
    "merge_topk",
    "neighbours_for_config",
    "normalise_rows",
    "recall_at_k",
    "recall_on_sample",
    "resolve_method",
    "self_neighbour_rows",
    "shard_ranges",
    "synthetic_user_embeddings",
]
