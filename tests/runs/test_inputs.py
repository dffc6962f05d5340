"""How a run's item table is read: explicit files, and the optional centring of anisotropic tables."""

from __future__ import annotations

import numpy as np
import pytest

from esrkit.config import ConfigError, resolve_recipe
from esrkit.data.synthetic import SyntheticOptions, generate
from esrkit.runs.inputs import load_embeddings
from esrkit.runs.train import train
from tests.runs.test_cold_protocol import config


def _table(tmp_path, n_items: int) -> str:
    rng = np.random.default_rng(0)
    shared = rng.normal(size=16) * 5  # one direction every item shares, as in mean-pooled decoder states
    items = (shared + rng.normal(size=(n_items, 16))).astype(np.float32)
    path = tmp_path / "items.npy"
    np.save(path, items)
    return str(path)


def test_center_items_removes_the_shared_direction_and_nothing_else(tmp_path) -> None:
    data = generate(SyntheticOptions(n_users=40, n_items=30, seed=1))
    path = _table(tmp_path, data.n_items)
    raw = load_embeddings(resolve_recipe("demo", [f"embedding.item_embeddings={path}"]), data, ("items",))
    centred = load_embeddings(
        resolve_recipe("demo", [f"embedding.item_embeddings={path}", "embedding.center_items=true"]),
        data,
        ("items",),
    )
    a, b = raw["items"], centred["items"]

    def cos(x):  # pairwise cosine similarities of the rows
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        return unit @ unit.T

    assert cos(a)[np.triu_indices(len(a), 1)].mean() > 0.8  # the raw table sits in a narrow cone
    assert abs(cos(b)[np.triu_indices(len(b), 1)].mean()) < 0.1
    np.testing.assert_allclose(b.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(
        a - b, np.broadcast_to(a.mean(axis=0), a.shape), rtol=1e-5, atol=1e-5
    )  # a shift only
    assert centred["meta"]["items"]["centered"] is True and "centered" not in raw["meta"]["items"]
    assert (
        centred["meta"]["items"]["fingerprint"] == raw["meta"]["items"]["fingerprint"]
    )  # the source table's


def test_a_hidden_size_beyond_the_item_pca_names_the_option(tmp_path) -> None:
    cfg = config(tmp_path, "model.name=llminit", "model.hidden=512", "train.epochs=1")
    message = r"model.hidden = 512, .* = \d+ components here: lower model.hidden"
    with pytest.raises(ConfigError, match=message):
        train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
