"""How views meet in one score (esrkit/models/fusion.py): every switch is a dot product, and starts
official."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from esrkit.models.fusion import ScoreNorm, ViewFusion

H, N = 4, 9


def _pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 2 * H, generator=g), torch.randn(N + 2, 2 * H, generator=g)


@pytest.mark.parametrize("gate", ["popularity", "user"])
def test_a_gate_starts_as_the_official_concatenation(gate) -> None:
    users, items = _pair()
    fusion = ViewFusion(H, N, gate=gate)
    fusion.set_popularity(np.arange(N + 1))
    ids = torch.arange(N + 2)
    fused = fusion.users(users) @ fusion.items(items, ids).T
    torch.testing.assert_close(fused, users @ items.T)


def test_the_popularity_gate_weighs_views_by_item_popularity() -> None:
    users, items = _pair(1)
    fusion = ViewFusion(H, N, gate="popularity")
    fusion.set_popularity(np.arange(N + 1))  # item j was seen j - 1... times: item N most popular
    with torch.no_grad():
        fusion.gate_slope.fill_(-2.0)  # the semantic view counts more for less popular items
    out = fusion.items(items, torch.arange(N + 2))
    se_weight = out[1 : N + 1, H:].norm(dim=1) / items[1 : N + 1, H:].norm(dim=1)
    co_weight = out[1 : N + 1, :H].norm(dim=1) / items[1 : N + 1, :H].norm(dim=1)
    assert torch.all(se_weight[:-1] > se_weight[1:]) and torch.all(co_weight[:-1] < co_weight[1:])
    torch.testing.assert_close(se_weight + co_weight, torch.full((N,), 2.0))


def test_view_norm_scores_are_scaled_cosines_per_view() -> None:
    users, items = _pair(2)
    fusion = ViewFusion(H, N, view_norm=True, temperature=0.25)
    fused = fusion.users(users) @ fusion.items(items, torch.arange(N + 2)).T
    expected = sum(
        4.0 * F.cosine_similarity(users[:, None, v], items[None, :, v], dim=-1)
        for v in (slice(0, H), slice(H, 2 * H))
    )
    torch.testing.assert_close(fused, expected)


def test_score_norm_is_a_scaled_cosine_whatever_the_lengths() -> None:
    users, items = _pair(3)
    norm = ScoreNorm(temperature=0.5)
    scores = norm.users(users) @ norm.items(items).T
    torch.testing.assert_close(scores, 2.0 * F.cosine_similarity(users[:, None], items[None], dim=-1))
    longer = items * torch.arange(1, N + 3).unsqueeze(1)  # item length (popularity's usual trace) is ignored
    torch.testing.assert_close(norm.users(users) @ norm.items(longer).T, scores)


def test_llminit_anchor_pulls_item_vectors_back_to_their_pca_start() -> None:
    from esrkit.models import MODELS

    rng = np.random.default_rng(0)
    table = rng.standard_normal((N, H)).astype(np.float32)
    model = MODELS.get("llminit")(N, init_table=table, anchor=2.0, hidden=H, max_len=5)
    assert model.auxiliary_loss(None, None).item() == 0.0  # at the start every item sits on its anchor
    with torch.no_grad():
        model.items.weight[3] += 1.0  # item 3 moved by 1 in every coordinate: squared distance H
    assert model.auxiliary_loss(None, None).item() == pytest.approx(2.0 * H / N)
    assert MODELS.get("llminit")(N, init_table=table, hidden=H, max_len=5).auxiliary_loss(None, None) is None
