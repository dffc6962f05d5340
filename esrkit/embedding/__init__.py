"""LLM embeddings of items and users: content-addressed cache, dataset pipeline, PCA table."""

from esrkit.embedding.cache import CacheError, EmbeddingCache
from esrkit.embedding.pca import pca_table
from esrkit.embedding.pipeline import (
    EmbeddingPlan,
    EmbeddingResult,
    embed_dataset,
    embed_texts,
    embedding_directory,
    load_embedding_dir,
    plan_dataset,
)

__all__ = [
    "CacheError",
    "EmbeddingCache",
    "EmbeddingPlan",
    "EmbeddingResult",
    "embed_dataset",
    "embed_texts",
    "embedding_directory",
    "load_embedding_dir",
    "pca_table",
    "plan_dataset",
]
