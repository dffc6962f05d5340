"""Synthetic user embeddings that behave like real sentence embeddings, for tests and benchmarks.

Isotropic Gaussian noise has no neighbour structure (hnswlib recall on it is 0.3-0.5 and means nothing), so
the generator mimics what real LLM user embeddings look like: a strong shared direction (cosines between
unrelated users are about 0.5, as with MiniLM), a decaying spectrum, and a two-level hierarchy (topics, then
sub-clusters of about 200 users with Zipf-like sizes). Defaults were calibrated on the 12,101 real MiniLM item
embeddings in ``shared/reference/official-run-beauty5`` (mean cosine 0.55, mean top-10 cosine 0.83 there; 0.51
and 0.88 here, with slightly *more* spread across dimensions, so recall measured on it is not flattering).
"""

from __future__ import annotations

import numpy as np


def synthetic_user_embeddings(
    n: int,
    dim: int = 384,
    *,
    seed: int = 0,
    n_topics: int = 50,
    users_per_cluster: int = 200,
    decay: float = 0.35,
    mean_strength: float = 1.5,
    spreads: tuple[float, float, float] = (1.0, 0.9, 0.6),
    chunk: int = 100_000,
) -> np.ndarray:
    """``(n, dim)`` float32, deterministic for a seed; generated in chunks (memory about n x dim x 4
    bytes)."""
    rng = np.random.default_rng(seed)
    sigma = np.arange(1, dim + 1, dtype=np.float64) ** -decay
    sigma /= np.sqrt((sigma**2).sum())
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    shaped = sigma[:, None] * basis.T  # rows of N(0, I) @ shaped have the decaying spectrum

    def draw(m: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((m, dim)) @ shaped) * scale

    mean = rng.standard_normal(dim)
    mean *= mean_strength / np.linalg.norm(mean)
    topics = draw(n_topics, spreads[0])
    n_clusters = max(1, n // users_per_cluster)
    centres = topics[rng.integers(0, n_topics, n_clusters)] + draw(n_clusters, spreads[1])
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.7
    assignment = rng.choice(n_clusters, size=n, p=weights / weights.sum())
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        out[start:stop] = mean + centres[assignment[start:stop]] + draw(stop - start, spreads[2])
    return out
