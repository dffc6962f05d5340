from __future__ import annotations

import numpy as np
import pytest

from esrkit.embedding.pca import pca_table


def test_shape_dtype_and_determinism(rng):
    emb = rng.standard_normal((300, 96)).astype(np.float32) @ rng.standard_normal((96, 96)).astype(np.float32)
    a = pca_table(emb, dim=16)
    b = pca_table(emb.copy(), dim=16, seed=123)
    assert a.shape == (300, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_matches_plain_sklearn_pca_and_is_not_whitened(rng):
    from sklearn.decomposition import PCA

    emb = rng.standard_normal((200, 32))
    table = pca_table(emb, dim=8)
    ref = PCA(n_components=8).fit_transform(emb)
    np.testing.assert_allclose(
        np.abs(table), np.abs(ref), atol=1e-4
    )  # same scores up to each component's sign
    np.testing.assert_allclose(table.mean(axis=0), 0.0, atol=1e-4)
    var = table.var(axis=0)
    assert np.all(np.diff(var) <= 1e-6) and not np.allclose(var, var[0])  # ordered, not whitened


def test_rejects_bad_dims(rng):
    with pytest.raises(ValueError, match="dim must lie"):
        pca_table(rng.standard_normal((10, 4)), dim=5)
    with pytest.raises(ValueError, match="2-D"):
        pca_table(np.zeros(5), dim=1)


def test_rounding_level_noise_moves_scores_by_rounding_only(rng):
    """Another BLAS (e.g. a GPU machine's) changes the table's bytes, hence its fingerprint, but not its
    values: rounding-level input noise must not flip a component's sign or rotate it, isotropic random vectors
    included."""
    for emb in (
        rng.standard_normal((2000, 256)).astype(np.float32),
        rng.standard_normal((2000, 16)).astype(np.float32) @ rng.standard_normal((16, 256)).astype(np.float32)
        + 0.1 * rng.standard_normal((2000, 256)).astype(np.float32),
    ):
        noisy = emb * (1 + 1e-7 * rng.standard_normal(emb.shape)).astype(np.float32)
        a, b = pca_table(emb, dim=16), pca_table(noisy, dim=16)
        rel = np.linalg.norm(a - b, axis=0) / np.linalg.norm(a, axis=0)  # signed: a sign flip would give 2
        assert rel.max() < 1e-4
