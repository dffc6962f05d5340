"""PCA of the item embedding table: the initialisation of LLM-ESR's collaborative (ID) view.

The official ``data/pca.ipynb`` runs scikit-learn ``PCA(n_components=64).fit_transform`` on the LLM item
table, no whitening. ``svd_solver="full"`` (LAPACK) makes the result deterministic for a given input;
``svd_flip`` (applied by scikit-learn) fixes the sign of each component. Reruns on one machine agree bit for
bit. Another BLAS changes the last bits, so the table's fingerprint may differ, but not its values
(benchmarks/RESULTS.md, "Measurements behind code choices").

The fitted projection (mean and components) is kept beside the table: an item added after training (serving,
the cold-item protocol) gets its collaborative start from the same projection its trained neighbours got.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PCAProjection:
    """``(x - mean) @ components.T``: maps raw LLM vectors (d,) into the PCA table's space (dim,)."""

    mean: np.ndarray  # (d,) float32
    components: np.ndarray  # (dim, d) float32

    def __post_init__(self) -> None:
        if self.mean.ndim != 1 or self.components.ndim != 2 or self.components.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"PCA projection: mean {self.mean.shape} and components {self.components.shape} "
                "do not fit together ((d,) and (dim, d))"
            )

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"PCA projection expects (n, {self.input_dim}) vectors, got {x.shape}")
        return ((x - self.mean) @ self.components.T.astype(np.float64)).astype(np.float32)


def pca_fit(item_emb: np.ndarray, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, PCAProjection]:
    """The table ``pca_table`` returns, and the projection that produced it (for items added later)."""
    from sklearn.decomposition import PCA  # heavy optional import: scikit-learn loads only when used

    x = np.asarray(item_emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"item_emb must be 2-D, got shape {x.shape}")
    if not 1 <= dim <= min(x.shape):
        raise ValueError(f"dim must lie in 1..min(n_items, d) = {min(x.shape)}, got {dim}")
    pca = PCA(n_components=dim, whiten=False, svd_solver="full", random_state=seed)
    scores = pca.fit_transform(x)
    projection = PCAProjection(pca.mean_.astype(np.float32), pca.components_.astype(np.float32))
    return scores.astype(np.float32), projection


def pca_table(item_emb: np.ndarray, dim: int = 64, seed: int = 0) -> np.ndarray:
    """(n_items, dim) float32 principal-component scores of ``item_emb`` (n_items, d), centred, not whitened.

    ``seed`` only matters for scikit-learn solvers that are randomised; the exact solver used here ignores it.
    """
    return pca_fit(item_emb, dim, seed)[0]


def projection_from_table(item_emb: np.ndarray, table: np.ndarray) -> PCAProjection:
    """The affine map that best reproduces a given table (e.g. the official ``pca64_itm_emb_np``) from the raw
    vectors, by least squares: for a table that *is* a PCA of these vectors it recovers that PCA's
    projection."""
    x = np.asarray(item_emb, dtype=np.float64)
    t = np.asarray(table, dtype=np.float64)
    if x.ndim != 2 or t.ndim != 2 or x.shape[0] != t.shape[0]:
        raise ValueError(f"item vectors {x.shape} and table {t.shape} must be 2-D with the same rows")
    mean = x.mean(axis=0)
    weights, *_ = np.linalg.lstsq(x - mean, t - t.mean(axis=0), rcond=None)  # (d, dim)
    # a PCA table is centred; a table that is not keeps its offset through the mean it is subtracted from
    offset = t.mean(axis=0)
    if np.abs(offset).max() > 1e-6 * max(1.0, np.abs(t).max()):
        mean = mean - np.linalg.pinv(weights.T) @ offset
    return PCAProjection(mean.astype(np.float32), weights.T.astype(np.float32))
