"""LLMInit's start gate (esrkit/models/text_start.py): starts at LLMInit exactly, takes the text start out
where its learned weight says, per popularity, for trained and added items alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esrkit.config import ModelConfig
from esrkit.data.batches import history_input
from esrkit.models import build_model
from esrkit.models.text_start import TextStartGate
from tests.models.test_new_items import HIDDEN, MAX_LEN, N, llm_table


def llminit(backbone: str = "sasrec", **switches):
    _, _, assets = llm_table()
    torch.manual_seed(0)
    cfg = ModelConfig(name="llminit", hidden=HIDDEN, backbone=backbone, dropout=0.0, **switches)
    return build_model(cfg, N, MAX_LEN, assets).eval(), assets


def scores(m, history: list[int]) -> torch.Tensor:
    with torch.no_grad():
        user = m.last_hidden(history_input([np.array(history)], MAX_LEN, m.objective, m.mask_token))
        return (user @ m.all_item_vectors().T)[0]


def counts() -> np.ndarray:
    """Training counts by item id: item i seen i times (row 0 = padding), so popularity rises with the id."""
    return np.arange(N + 1)


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "gru4rec"])
@pytest.mark.parametrize("neighbours", [0, 3])
def test_the_gate_starts_at_llminit_exactly(backbone, neighbours) -> None:
    plain, _ = llminit(backbone, text_neighbours=neighbours)
    gated, _ = llminit(backbone, text_neighbours=neighbours, start_gate=True)
    for m in (plain, gated):
        m.items.weight.data[1 : N + 1] += 0.1  # as if trained a little: W moved away from the start
        if m.text_neighbours is not None:
            m.text_neighbours.set_popularity(counts())
    gated.start_gate.set_popularity(counts())
    torch.testing.assert_close(scores(gated, [3, 7, 11]), scores(plain, [3, 7, 11]))


def test_a_closed_gate_takes_the_start_out_and_the_slope_chooses_which_items() -> None:
    m, _ = llminit(start_gate=True)
    m.start_gate.set_popularity(counts())
    start = m.start_gate.start.clone()
    ids = torch.arange(1, N + 1)
    with torch.no_grad():
        m.items.weight[1 : N + 1] += 1.0  # what training added to every row
        m.start_gate.bias.fill_(-30.0)  # w = 0 everywhere: only what training added is left
        torch.testing.assert_close(m.own_vectors(ids), torch.ones(N, HIDDEN), rtol=0, atol=1e-5)
        m.start_gate.bias.fill_(0.0)
        m.start_gate.slope.fill_(30.0)  # rare items (z < 0) lose their start, popular ones keep 2x of it
        w = m.start_gate.weight(ids)[:, 0]
        z = m.start_gate.popularity_z[ids]
        assert torch.all(w[z < -0.2] < 1e-2) and torch.all(w[z > 0.2] > 1.99)
        own = m.own_vectors(ids)
        expected = start[1 : N + 1] + 1.0 - (1 - w[:, None]) * start[1 : N + 1]
        torch.testing.assert_close(own, expected)


def test_the_gate_learns_from_every_item_and_an_added_item_takes_the_unseen_weight() -> None:
    m, assets = llminit(start_gate=True, new_item_norm="projection")
    m.start_gate.set_popularity(counts())
    ids = torch.arange(1, N + 1)
    m.train()
    loss = m.own_vectors(ids).pow(2).sum()  # a loss the start only hurts: the gate must want to close
    loss.backward()
    assert float(m.start_gate.bias.grad) > 0  # gradient descent lowers the bias, so w falls below 1
    with torch.no_grad():
        m.start_gate.bias.fill_(-1.0)
        m.start_gate.slope.fill_(0.5)
    llm, table, _ = llm_table()
    m.add_items(llm[:2], assets)
    new = torch.tensor([N + 1, N + 2])
    w_unseen = 2 * torch.sigmoid(torch.tensor(-1.0) + 0.5 * m.start_gate.unseen_z)
    torch.testing.assert_close(m.start_gate.weight(new)[:, 0], w_unseen.expand(2))
    with torch.no_grad():
        torch.testing.assert_close(
            m.own_vectors(new), w_unseen * torch.as_tensor(table[:2]), rtol=1e-4, atol=1e-6
        )
    assert m.start_gate.start.shape[0] == m.items.weight.shape[0]


def test_the_gate_module_keeps_padding_at_zero() -> None:
    gate = TextStartGate(torch.cat([torch.zeros(1, 4), torch.randn(5, 4)]))
    gate.bias.data.fill_(-2.0)
    out = gate(torch.zeros(1, 4), torch.tensor([0]))
    torch.testing.assert_close(out, torch.zeros(1, 4))
