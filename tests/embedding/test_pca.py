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
    np.testing.assert_allclose(np.abs(table), np.abs(ref), atol=1e-4)  # same scores up to each component's sign
    np.testing.assert_allclose(table.mean(axis=0), 0.0, atol=1e-4)
    var = table.var(axis=0)
    assert np.all(np.diff(var) <= 1e-6) and not np.allclose(var, var[0])  # ordered, not whitened


def test_rejects_bad_dims(rng):
    with pytest.raises(ValueError, match="dim must lie"):
        pca_table(rng.standard_normal((10, 4)), dim=5)
    with pytest.raises(ValueError, match="2-D"):
        pca_table(np.zeros(5), dim=1)
