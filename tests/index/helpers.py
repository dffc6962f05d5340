"""Brute-force references for the index tests (float64, whole matrix: fine at test sizes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from esrkit.index import normalise_rows

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ESRKIT_SHARED", REPO.parent / "shared"))


def brute_force_topk(x: np.ndarray, k: int, exclude_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Every pair's float64 cosine, sorted by score descending then index ascending."""
    unit = normalise_rows(x)
    scores = (unit[:, None, :] * unit[None, :, :]).sum(-1)
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    cols = np.broadcast_to(np.arange(len(x)), scores.shape)
    order = np.lexsort((cols, -scores), axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def clustered(n: int, dim: int = 32, n_clusters: int = 20, spread: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)) * 2.0
    return (centres[rng.integers(0, n_clusters, n)] + spread * rng.standard_normal((n, dim))).astype(
        np.float32
    )
