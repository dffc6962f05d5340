"""The fast paths compute the same thing as the plain ones, random draws included.

Teachers, students and evaluation only need each sequence's last position, and teachers run without a graph:
``last_hidden`` computes the last position alone and the no-graph attention normalises after the value
product. With the same torch seed they must give the values of the full pass (training mode, dropout on), so a
run's result does not depend on which path computed it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esrkit.data.tensors import make_input
from esrkit.models import MODELS
from esrkit.models.base import dropout
from esrkit.models.sasrec import SASRecEncoder

MAX_LEN = 30


def _tokens(rng: np.random.Generator, n_items: int, lengths: list[int], width: int) -> torch.Tensor:
    out = torch.zeros(len(lengths), width, dtype=torch.long)
    for r, n in enumerate(lengths):
        if n:
            out[r, -n:] = torch.as_tensor(rng.integers(1, n_items + 1, size=n))
    return out


def _same_draws(fn_a, fn_b, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    a = fn_a()
    torch.manual_seed(seed)
    b = fn_b()
    return a, b


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("emulate", [True, False])
def test_sasrec_last_only_equals_the_full_pass_in_training(causal: bool, emulate: bool) -> None:
    torch.manual_seed(0)
    enc = SASRecEncoder(16, layers=2, heads=2, dropout=0.5, causal=causal).train()
    tokens = _tokens(np.random.default_rng(0), 50, [12, 3, 7, 1, 12], 12)
    inp = make_input(tokens, MAX_LEN)
    x = torch.randn(*tokens.shape, 16)
    pad = inp.pad_count if emulate else None
    with torch.no_grad():
        full, last = _same_draws(
            lambda: enc(x, inp.mask, pad_count=pad)[:, -1],
            lambda: enc(x, inp.mask, pad_count=pad, last_only=True)[:, -1],
        )
    torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)
    torch.manual_seed(3)
    other = enc(x, inp.mask, pad_count=pad, last_only=True)[:, -1]
    torch.manual_seed(4)
    assert not torch.allclose(other, enc(x, inp.mask, pad_count=pad, last_only=True)[:, -1])  # dropout is on


def test_no_graph_attention_equals_the_graph_path_in_training() -> None:
    """Teachers (no autograd graph) and the ranking pass (graph) share one distribution, draw for draw."""
    torch.manual_seed(0)
    enc = SASRecEncoder(16, layers=2, heads=1, dropout=0.5).train()
    tokens = _tokens(np.random.default_rng(1), 50, [9, 2, 5, 9], 9)
    inp = make_input(tokens, MAX_LEN)
    x = torch.randn(*tokens.shape, 16)

    def without_graph():
        with torch.no_grad():
            return enc(x, inp.mask, pad_count=inp.pad_count)

    with_graph, no_graph = _same_draws(
        lambda: enc(x, inp.mask, pad_count=inp.pad_count).detach(), without_graph
    )
    torch.testing.assert_close(no_graph[inp.mask], with_graph[inp.mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "gru4rec"])
def test_llmesr_last_hidden_equals_encode_in_training(backbone: str) -> None:
    rng = np.random.default_rng(0)
    n_items = 40
    llm = rng.normal(size=(n_items, 24)).astype(np.float32)
    pca = rng.normal(size=(n_items, 8)).astype(np.float32)
    model = MODELS.get("llmesr")(n_items, llm, pca, backbone=backbone, hidden=8, max_len=MAX_LEN).train()
    inp = make_input(_tokens(rng, n_items, [6, 1, 4, 0, 6], 6), MAX_LEN)
    with torch.no_grad():
        full, last = _same_draws(lambda: model.encode(inp)[:, -1], lambda: model.last_hidden(inp))
    torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)


def test_id_model_last_hidden_equals_encode_in_training() -> None:
    model = MODELS.get("id")(30, backbone="sasrec", hidden=8, max_len=MAX_LEN).train()
    inp = make_input(_tokens(np.random.default_rng(2), 30, [5, 2, 5], 5), MAX_LEN)
    with torch.no_grad():
        full, last = _same_draws(lambda: model.encode(inp)[:, -1], lambda: model.last_hidden(inp))
    torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)


def _dropout_before(x: torch.Tensor, p: float) -> torch.Tensor:
    """The CPU dropout as it was written before the multiplier was precomputed (bits -> 0/1 mask -> x*m*s)."""
    n = x.numel()
    seed = int(torch.randint(0, 2**62, (1,)).item())
    rng = np.random.Generator(np.random.PCG64(seed))
    if p == 0.5:
        keep = np.unpackbits(np.frombuffer(rng.bytes((n + 7) // 8), dtype=np.uint8), count=n)
        mask = torch.from_numpy(keep).view(x.shape).to(x.dtype)
    else:
        mask = torch.from_numpy(rng.random(n, dtype=np.float32) >= p).view(x.shape).to(x.dtype)
    return x * mask * (1.0 / (1.0 - p))


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_dropout_values_are_unchanged_bit_for_bit(p: float) -> None:
    x = torch.randn(3, 7, 13)
    now, before = _same_draws(lambda: dropout(x, p, True), lambda: _dropout_before(x, p))
    assert torch.equal(now, before)
    full, last = _same_draws(
        lambda: dropout(x, p, True)[:, -1:], lambda: dropout(x[:, -1:], p, True, last_of=7)
    )
    assert torch.equal(full, last)
    kept = (now != 0).float().mean().item()
    assert abs(kept - (1 - p)) < 0.08


def test_cross_attention_gradients_are_the_official_ones_with_a_row_without_keys() -> None:
    """With a graph, cross-attention keeps the official arithmetic: a sequence whose keys are all padding (a
    user with one training item) gets no gradient through its masked logits, whatever reads its outputs (a
    GRU reads the padding positions). Without a graph the fused path gives the same values."""
    from esrkit.models.llmesr import CrossAttention
    from tests.models.test_fidelity import official_cross_attention

    torch.manual_seed(0)
    ca = CrossAttention(16, 2)
    x, y = torch.randn(3, 6, 16), torch.randn(3, 6, 16)
    tokens = torch.tensor([[0, 0, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    weights = torch.randn(3, 6, 16)
    grads = []
    for forward in (lambda: ca(x, y, tokens != 0), lambda: official_cross_attention(ca, x, y, tokens)):
        ca.zero_grad()
        (forward() * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in ca.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(
            ca(x, y, tokens != 0), official_cross_attention(ca, x, y, tokens), atol=1e-5, rtol=1e-4
        )
