"""The PCA projection kept beside the table: a new item's collaborative start, computed as the table was."""

from __future__ import annotations

import numpy as np
import pytest

from esrkit.embedding.pca import PCAProjection, pca_fit, pca_table, projection_from_table


def test_the_projection_reproduces_the_table(rng) -> None:
    emb = rng.standard_normal((300, 40)).astype(np.float32) @ rng.standard_normal((40, 40)).astype(np.float32)
    table, projection = pca_fit(emb, 12)
    np.testing.assert_array_equal(table, pca_table(emb, 12))  # pca_table is unchanged
    np.testing.assert_allclose(projection.transform(emb), table, rtol=1e-4, atol=1e-4)
    assert projection.mean.shape == (40,) and projection.components.shape == (12, 40) and projection.dim == 12


def test_a_given_table_yields_its_projection_by_least_squares(rng) -> None:
    emb = rng.standard_normal((200, 16))
    table, exact = pca_fit(emb, 6)
    recovered = projection_from_table(emb, table)
    new = rng.standard_normal((5, 16))
    np.testing.assert_allclose(recovered.transform(new), exact.transform(new), rtol=1e-4, atol=1e-4)
    shifted = projection_from_table(emb, table + 3.0)  # a table that is not centred keeps its offset
    np.testing.assert_allclose(shifted.transform(emb), table + 3.0, rtol=1e-4, atol=1e-4)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit together"):
        PCAProjection(np.zeros(4, np.float32), np.zeros((2, 5), np.float32))
    projection = PCAProjection(np.zeros(4, np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"expects \(n, 4\) vectors"):
        projection.transform(np.zeros((3, 5)))
