"""The new-item contract of every model family (esrkit/models/recommender.py), on small untrained models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esrkit.config import ModelConfig
from esrkit.data.batches import history_input
from esrkit.embedding.pca import pca_fit
from esrkit.models import MODELS, ModelAssets, build_model
from esrkit.models.recommender import NewItemsUnsupported, insert_item_rows

N, D_LLM, HIDDEN, MAX_LEN = 40, 24, 8, 10


def llm_table(seed: int = 0) -> tuple[np.ndarray, np.ndarray, ModelAssets]:
    rng = np.random.default_rng(seed)
    llm = rng.standard_normal((N, D_LLM)).astype(np.float32)
    table, projection = pca_fit(llm, HIDDEN)
    return llm, table, ModelAssets(llm, table, projection)


def model(name: str, **switches):
    _, _, assets = llm_table()
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, hidden=HIDDEN, **switches)
    return build_model(cfg, N, MAX_LEN, assets), cfg, assets


def scores(m, history: list[int]) -> torch.Tensor:
    m.eval()
    with torch.no_grad():
        user = m.last_hidden(history_input([np.array(history)], MAX_LEN, m.objective, m.mask_token))
        return (user @ m.all_item_vectors().T)[0]


@pytest.mark.parametrize(
    ("name", "switches", "support"),
    [
        ("id", {}, "untrained"),
        ("pop", {}, "untrained"),
        ("llminit", {}, "text"),
        ("llmesr", {}, "text"),
        ("llmesr", {"co_view": False}, "text"),
        ("llmesr", {"id_init": "random"}, "text"),
        ("llmesr", {"se_view": False, "id_init": "random"}, ""),
        ("cities", {}, "untrained"),
        ("melt", {}, "untrained"),
        ("rlmrec", {}, "untrained"),
    ],
)
def test_each_family_says_how_it_adds_items(name, switches, support) -> None:
    assert MODELS.get(name).new_item_support(ModelConfig(name=name, **switches)) == support


def test_insert_item_rows_keeps_the_mask_row_last() -> None:
    table = torch.arange(12.0).view(6, 2)  # padding, items 1..4, [MASK]
    grown = insert_item_rows(table, torch.full((2, 2), -1.0), n_items=4)
    assert grown[:5].tolist() == table[:5].tolist() and grown[5:7].eq(-1).all()
    assert grown[7].tolist() == [10, 11]
    with pytest.raises(ValueError, match="rows have shape"):
        insert_item_rows(table, torch.zeros(1, 3), 4)


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "gru4rec"])
def test_llmesr_new_items_are_adapter_of_text_and_pca_start(backbone) -> None:
    m, _, assets = model("llmesr", backbone=backbone)
    before = m.all_item_vectors().detach().clone()
    mask_rows = (m.collab.weight[N + 1].detach().clone(), m.semantic_table[N + 1].clone())
    new = np.random.default_rng(5).standard_normal((3, D_LLM)).astype(np.float32)
    m.add_items(new, assets)
    assert m.n_items == N + 3 and m.mask_token == N + 4
    assert torch.equal(m.collab.weight[N + 4], mask_rows[0])
    assert torch.equal(m.semantic_table[N + 4], mask_rows[1])
    after = m.all_item_vectors().detach()
    torch.testing.assert_close(after[: N + 1], before)  # old items untouched
    torch.testing.assert_close(after[N + 1 :, :HIDDEN], torch.as_tensor(assets.pca_projection.transform(new)))
    torch.testing.assert_close(after[N + 1 :, HIDDEN:], m.adapter(torch.as_tensor(new)).detach())
    assert torch.isfinite(scores(m, [N + 1, 3, N + 3])).all()  # new items read as history inputs (and [MASK])


def test_llmesr_with_random_init_starts_new_items_at_zero_collaborative_vectors() -> None:
    m, _, assets = model("llmesr", id_init="random")
    m.add_items(np.ones((2, D_LLM), dtype=np.float32), assets)
    assert m.collab.weight[N + 1 : N + 3].abs().sum() == 0


def test_llminit_new_rows_are_the_pca_projection() -> None:
    m, _, assets = model("llminit", backbone="bert4rec")
    llm, table, _ = llm_table()
    m.add_items(llm[:2], assets)  # two existing texts again: their PCA rows are the table's
    torch.testing.assert_close(
        m.items.weight[N + 1 : N + 3], torch.as_tensor(table[:2]), rtol=1e-4, atol=1e-5
    )
    assert m.items.weight.shape[0] == N + 4 and m.mask_token == N + 3


def test_llminit_new_rows_can_take_the_trained_rows_mean_length() -> None:
    m, _, assets = model("llminit", new_item_norm="trained")
    with torch.no_grad():  # training lengthens rows; the new ones must follow the trained table, not the PCA
        m.items.weight[1 : N + 1] *= 3.0
    target = m.items.weight[1 : N + 1].norm(dim=1).mean()
    llm, table, _ = llm_table()
    m.add_items(llm[:2], assets)
    new = m.items.weight[N + 1 : N + 3].detach()
    torch.testing.assert_close(new.norm(dim=1), target.expand(2).detach(), rtol=1e-5, atol=1e-6)
    direction = torch.as_tensor(table[:2]) / torch.as_tensor(table[:2]).norm(dim=1, keepdim=True)
    torch.testing.assert_close(new / new.norm(dim=1, keepdim=True), direction, rtol=1e-4, atol=1e-5)
    plain, _, _ = model("llminit")
    plain.add_items(llm[:2], assets)  # the default keeps the projection's own length
    assert not torch.allclose(plain.items.weight[N + 1 : N + 3].norm(dim=1), new.norm(dim=1))


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "gru4rec"])
def test_llminit_can_start_from_the_pca_directions_at_the_backbones_scale(backbone) -> None:
    """``init_norm="backbone"``: the PCA table's directions at the root-mean-square entry xavier-normal draws
    the ID model's item table with, so random text starts the model as the ID backbone starts."""
    _, table, _ = llm_table()
    plain, _, _ = model("llminit", backbone=backbone)
    scaled, _, assets = model("llminit", backbone=backbone, init_norm="backbone")
    ids_only, _, _ = model("id", backbone=backbone)
    rows = scaled.items.weight[1 : N + 1].detach()
    xavier = (2.0 / (N + 2 + HIDDEN)) ** 0.5
    assert float(rows.pow(2).mean().sqrt()) == pytest.approx(xavier, rel=1e-5)
    drawn = float(ids_only.items.weight[1 : N + 1].detach().pow(2).mean().sqrt())
    assert drawn == pytest.approx(xavier, rel=0.25)  # what the ID model really drew, at this tiny size
    factor = float(scaled.init_factor)
    assert factor != pytest.approx(1.0, abs=0.05)  # the PCA table of unit-variance vectors is far larger
    torch.testing.assert_close(rows, torch.as_tensor(table) * factor, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(plain.items.weight[1 : N + 1].detach(), torch.as_tensor(table))
    assert float(plain.init_factor) == 1.0
    llm, _, _ = llm_table()
    scaled.add_items(llm[:2], assets)  # a new item's projection starts at the same scale as the table
    torch.testing.assert_close(
        scaled.items.weight[N + 1 : N + 3].detach(), torch.as_tensor(table[:2]) * factor, rtol=1e-4, atol=1e-6
    )
    with pytest.raises(ValueError, match="init_norm"):
        model("llminit", backbone=backbone, init_norm="unit")


def test_untrained_rows_for_id_only_families() -> None:
    m, _, _ = model("id", backbone="bert4rec")
    mask_row = m.items.weight[N + 1].detach().clone()
    m.add_untrained_items(4, torch.Generator().manual_seed(0))
    assert m.n_items == N + 4 and torch.equal(m.items.weight[N + 5], mask_row)
    std = float(m.items.weight[N + 1 : N + 5].detach().std())
    assert 0 < std < 3 * (2.0 / (N + 2 + HIDDEN)) ** 0.5
    with pytest.raises(NewItemsUnsupported, match="IDRecommender scores items by vectors learned in"):
        m.add_items(np.zeros((1, D_LLM), dtype=np.float32), ModelAssets())
    pop, _, _ = model("pop")
    pop.fit_counts(np.array([1, 1, 2, 3, 3, 3]))
    pop.add_untrained_items(2)
    s = scores(pop, [1, 2])
    assert s.shape == (N + 3,) and s[N + 1 :].eq(0).all() and s[3] > s[1] > s[2] > 0
    cities, _, _ = model("cities")
    cities.add_untrained_items(2)
    assert cities.is_tail.shape == (N + 4,) and cities.inferred.shape == (N + 4, HIDDEN)
    assert torch.isfinite(scores(cities, [1, N + 2])).all()


def test_wrong_vectors_are_refused_with_the_width_named() -> None:
    m, _, assets = model("llmesr")
    with pytest.raises(ValueError, match=rf"\(n, {D_LLM}\) LLM vectors.*got shape \(2, 5\)"):
        m.add_items(np.zeros((2, 5), dtype=np.float32), assets)
    with pytest.raises(ValueError, match="NaN"):
        m.add_items(np.full((1, D_LLM), np.nan, dtype=np.float32), assets)
    with pytest.raises(ValueError, match="PCA projection"):
        m.add_items(np.zeros((1, D_LLM), dtype=np.float32), ModelAssets())
    assert m.n_items == N


@pytest.mark.parametrize(
    ("name", "switches"),
    [
        ("alphafuse", {"null_dim": 4}),
        ("llminit", {"semantic_adapter": True, "anchor": 1.0}),
        ("llminit", {"text_neighbours": 3}),
        ("llmesr", {"semantic_residual": True, "gate": "popularity", "view_norm": True}),
        ("llmesr", {"gate": "user"}),
    ],
)
def test_new_items_of_the_full_ranking_switches_score_like_an_item_with_the_same_text(name, switches) -> None:
    """An item added from the text of an existing, untrained-on item gets that item's vector (every learned
    per-item part of a new item starts where an untrained item's does, so perturb those first)."""
    m, _, assets = model(name, **switches)
    llm, _, _ = llm_table()
    with torch.no_grad():  # train item 5's own parts a little: they must not carry over to its twin
        for part in ("semantic_offset", "ids", "items", "collab"):
            if hasattr(m, part):
                getattr(m, part).weight[5] += 1.0
        if getattr(m, "semantic_adapter", False):
            m.adapter.weight.normal_()
        if getattr(m, "fusion", None) is not None and m.fusion.gate == "popularity":
            m.fusion.set_popularity(np.arange(N + 1))
            m.fusion.gate_slope.fill_(0.5)
    before = m.all_item_vectors().detach().clone()
    m.add_items(llm[[4, 5]], assets)  # the texts of items 5 and 6 (row i-1 = item i)
    after = m.all_item_vectors().detach()
    torch.testing.assert_close(after[: N + 1], before)  # old items untouched
    assert m.n_items == N + 2 and m.mask_token == N + 3
    assert not torch.allclose(after[N + 1], before[5])  # item 5's learned part is not copied to its twin
    assert torch.isfinite(scores(m, [N + 1, 3, N + 2])).all()  # new items read as history inputs
    if (
        name == "alphafuse"
    ):  # the frozen semantic coordinates of the twin are item 5's exactly, the ID part is 0
        torch.testing.assert_close(m.semantic[N + 1], m.semantic[5])
        assert m.ids.weight[N + 1 : N + 3].abs().sum() == 0
    if getattr(m, "fusion", None) is not None and m.fusion.gate == "popularity":  # popularity 0's gate
        assert m.fusion.popularity_z[N + 1].item() == pytest.approx(m.fusion.unseen_z.item())
        assert (
            m.fusion.unseen_z.item() < m.fusion.popularity_z[1].item()
        )  # below the least popular trained item
