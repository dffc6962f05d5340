"""Text neighbours (esrkit/models/neighbours.py): who an item borrows from, and how much."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from esrkit.data.batches import history_input
from esrkit.models.neighbours import TextNeighbours
from esrkit.training.losses import LossContext, LossSpec, ranking_loss_from_states
from tests.models.test_new_items import MAX_LEN
from tests.models.test_text_start import llminit, scores

N, D, K = 12, 5, 3


def table(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, D)).astype(np.float32)


def test_neighbours_are_the_k_closest_other_items_by_cosine() -> None:
    llm = table()
    unit = llm / np.linalg.norm(llm, axis=1, keepdims=True)
    cos = unit @ unit.T
    np.fill_diagonal(cos, -np.inf)
    expected = np.argsort(-cos, axis=1, kind="stable")[:, :K] + 1  # item ids
    nb = TextNeighbours(llm, K)
    assert nb.neighbour_ids[1 : N + 1].tolist() == expected.tolist()
    assert nb.neighbour_ids[0].eq(0).all() and nb.neighbour_ids[N + 1].eq(0).all()


def test_mix_is_the_popularity_gated_average_of_own_and_neighbour_vectors() -> None:
    nb = TextNeighbours(table(), K)
    ids_table = nn.Embedding(N + 2, 4, padding_idx=0)
    nb.set_popularity(np.arange(N + 1))
    with torch.no_grad():
        nb.gate_slope.fill_(-1.0)  # rarer items lean more on their neighbours
    ids = torch.tensor([[2, 7, 0]])
    out = nb.mix(ids_table(ids), ids, ids_table)
    for col, item in enumerate([2, 7]):
        g = torch.sigmoid(-1.0 * nb.popularity_z[item])
        borrowed = ids_table.weight[nb.neighbour_ids[item]].mean(0)
        torch.testing.assert_close(out[0, col], (1 - g) * ids_table.weight[item] + g * borrowed)
    assert out[0, 2].abs().sum() == 0  # padding stays the zero vector
    assert nb.weight(torch.tensor(2)) > nb.weight(torch.tensor(7))


def test_a_new_item_borrows_from_the_trained_items_its_text_resembles() -> None:
    llm = table()
    nb = TextNeighbours(llm, K)
    nb.set_popularity(np.arange(N + 1))
    nb.add(llm[[4]] * 2.0, N)  # the text of item 5 (cosine 1 with it)
    assert nb.neighbour_ids.shape[0] == N + 3
    assert nb.neighbour_ids[N + 1, 0].item() == 5  # its twin is its nearest trained item
    assert nb.neighbour_ids[N + 2].eq(0).all()  # [MASK] moved to the end, unchanged
    assert nb.popularity_z[N + 1].item() == pytest.approx(nb.unseen_z.item())
    assert nb.keys.shape[0] == N + 1 and int(nb.trained) == N  # its text is kept (the text term reads it)
    nb.add(llm[[4]] * 3.0, N + 1)  # a second twin finds trained items only: added items' IDs are untrained
    assert nb.neighbour_ids[N + 2, 0].item() == 5 and nb.neighbour_ids[N + 2].max().item() <= N


def test_k_must_leave_a_neighbour() -> None:
    with pytest.raises(ValueError, match="text_neighbours"):
        TextNeighbours(table(), N)


def test_neighbour_dropout_uses_the_neighbours_mean_alone_at_its_rate_in_training_only() -> None:
    """With probability p an occurrence is the neighbours' mean alone (g = 1), independently per occurrence;
    evaluation never drops (the mix as without the option)."""
    torch.manual_seed(0)
    nb = TextNeighbours(table(), K, dropout=0.3)
    ids_table = nn.Embedding(N + 2, 4, padding_idx=0)
    ids = torch.randint(1, N + 1, (20_000,))
    own, borrowed = ids_table(ids), ids_table(nb.neighbour_ids[ids]).mean(-2)
    with torch.no_grad():
        out = nb.mix(own, ids, ids_table)
        nb.eval()
        plain = nb.mix(own, ids, ids_table)
    torch.testing.assert_close(plain, 0.5 * own + 0.5 * borrowed)  # g = 0.5 at the start
    alone = torch.isclose(out, borrowed, atol=1e-6).all(-1)
    assert torch.isclose(out[~alone], plain[~alone]).all()  # the rest is the ordinary mix
    rate = alone.float().mean().item()
    assert abs(rate - 0.3) < 4 * (0.3 * 0.7 / len(ids)) ** 0.5  # binomial: 4 standard errors
    first, second = alone[: len(ids) // 2], alone[len(ids) // 2 :]
    assert abs(first.float().mean() - second.float().mean()) < 0.02  # no drift along the batch


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_neighbour_dropout_must_leave_the_own_vector_a_chance(p: float) -> None:
    with pytest.raises(ValueError, match="neighbour_dropout"):
        TextNeighbours(table(), K, dropout=p)


def test_llminit_lists_each_targets_text_neighbours_for_neighbour_smoothing() -> None:
    """model.neighbour_smoothing's model side: LLMInit with text neighbours names them (None without), and a
    small step of ce with the smoothing leaves the neighbours' mean score closer to the target's than a step
    of plain ce (to first order the smoothing term moves mean_k s_k - s_pos up by lr eps |grad|^2)."""
    plain, _ = llminit()
    assert plain.target_neighbours(torch.tensor([1, 2])) is None
    history, target = [2, 5, 7], torch.tensor([4])
    after = {}
    for eps in (0.0, 0.5):
        m, _ = llminit(text_neighbours=K)
        listed = m.target_neighbours(target)
        assert listed.tolist() == m.text_neighbours.neighbour_ids[target].tolist()
        user = m.last_hidden(history_input([np.array(history)], MAX_LEN, m.objective, m.mask_token))
        spec = LossSpec("ce", neighbour_smoothing=eps)
        ranking_loss_from_states(m, user, target, None, LossContext(spec)).backward()
        with torch.no_grad():
            for p in m.parameters():
                if p.grad is not None:
                    p -= 1e-3 * p.grad
        s = scores(m, history)
        after[eps] = (s[listed[0]].mean() - s[target[0]]).item()
    assert after[0.5] > after[0.0] + 1e-6, after
