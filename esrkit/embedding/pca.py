"""PCA of the item embedding table: the initialisation of LLM-ESR's collaborative (ID) view.

The official ``data/pca.ipynb`` runs scikit-learn ``PCA(n_components=64).fit_transform`` on the LLM item table, no
whitening. ``svd_solver="full"`` (LAPACK) makes the result deterministic for a given input; ``svd_flip`` (applied by
scikit-learn) fixes the sign of each component. Reruns on one machine agree bit for bit. Another BLAS changes the
last bits, so the table's fingerprint differs (the Beauty random-vector table's PCA on an H200 machine did), but not
its values: 1e-7 relative noise on the Beauty item tables (MiniLM, offline, SmolLM2, 1536-d random) moved each
component by at most 7e-6 relative, no sign flipped.
"""

from __future__ import annotations

import numpy as np


def pca_table(item_emb: np.ndarray, dim: int = 64, seed: int = 0) -> np.ndarray:
    """(n_items, dim) float32 principal-component scores of ``item_emb`` (n_items, d), centred, not whitened.

    ``seed`` only matters for scikit-learn solvers that are randomised; the exact solver used here ignores it.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(item_emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"item_emb must be 2-D, got shape {x.shape}")
    if not 1 <= dim <= min(x.shape):
        raise ValueError(f"dim must lie in 1..min(n_items, d) = {min(x.shape)}, got {dim}")
    scores = PCA(n_components=dim, whiten=False, svd_solver="full", random_state=seed).fit_transform(x)
    return scores.astype(np.float32)
