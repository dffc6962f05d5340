"""The ranking losses against tiny hand-computed references (esrkit/training/losses.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esrkit.training import losses as losses_module
from esrkit.training.losses import (
    LOSSES,
    ItemScorer,
    LossContext,
    LossSpec,
    draw_shared_negatives,
    fused_softmax_ce,
    gbce_beta,
    ranking_loss_from_states,
    sampled_softmax_scores,
)

N, D, M = 37, 6, 11


class TableModel(nn.Module):
    """The smallest recommender the losses accept: an item table (row 0 padding, row N+1 [MASK])."""

    def __init__(self, n: int = N, d: int = D, views: list[slice] | None = None) -> None:
        super().__init__()
        self.n_items = n
        self.table = nn.Parameter(torch.randn(n + 2, d, generator=torch.Generator().manual_seed(1)))
        self._views = views or []

    def item_vectors(self, ids):
        return self.table[ids]

    def all_item_vectors(self):
        return self.table[: self.n_items + 1]

    def score_views(self):
        return self._views


def _states(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(M, D, generator=g, requires_grad=True)
    pos = torch.randint(1, N + 1, (M,), generator=g)
    return hs, pos


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


def test_ce_equals_full_softmax_value_and_gradient():
    model = TableModel()
    hs, pos = _states()
    loss = LOSSES.get("ce")(ItemScorer(model), hs, pos, None, LossContext(LossSpec("ce")))
    logits = hs @ model.table[1 : N + 1].T
    reference = (torch.logsumexp(logits, 1) - logits[torch.arange(M), pos - 1]).mean()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    # the gradient of the mean CE w.r.t. each state is (softmax - onehot) @ E / M
    (g_hs,) = _grads(loss, hs)
    p = torch.softmax(logits, 1)
    p[torch.arange(M), pos - 1] -= 1
    assert torch.allclose(g_hs, p.detach() @ model.table[1 : N + 1].detach() / M, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 5, 16, 1000])
def test_fused_ce_matches_torch_in_any_row_blocks(rows):
    """The fused loss (gradients made in the forward pass, a block of rows at a time) has torch's value and
    gradients, whatever the block size, and never scores padding or [MASK]."""
    model = TableModel()
    hs, pos = _states(3)
    scorer = ItemScorer(model)
    fused = LOSSES.get("ce")(scorer, hs, pos, None, LossContext(LossSpec("ce", chunk_rows=rows)))
    full = F.cross_entropy(hs @ model.table[1 : N + 1].T, pos - 1)
    assert fused.item() == pytest.approx(full.item(), rel=1e-6)
    a = _grads(fused, hs, model.table)
    b = _grads(full, hs, model.table)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-6)
    assert (
        a[1][0].abs().sum() == 0 and a[1][N + 1].abs().sum() == 0
    )  # padding and [MASK] are never candidates


def test_cpu_blocks_have_a_multiple_of_16_rows_and_the_padding_rows_count_nowhere(monkeypatch):
    """oneDNN builds a kernel per product shape, so on a CPU every block (the last one of a batch too) holds a
    multiple of 16 rows; the zero rows that fill the last block add nothing to the loss or the gradients (the
    reference is torch's, for 37 rows in blocks of 32: 32 + 5 real rows)."""
    block_rows = []
    numerators = losses_module._softmax_numerators

    def spy(scores, refill, sums):
        block_rows.append(scores.shape[1])  # (items, rows): every product of the block has this many rows
        return numerators(scores, refill, sums)

    monkeypatch.setattr(losses_module, "_softmax_numerators", spy)
    model = TableModel(n=50, d=8)
    g = torch.Generator().manual_seed(2)
    hs = torch.randn(37, 8, generator=g, requires_grad=True)
    pos = torch.randint(1, 51, (37,), generator=g)
    items = model.table[1:51]
    loss = fused_softmax_ce(hs, items, pos - 1, 32, smoothing=0.1)
    reference = F.cross_entropy(hs @ items.T, pos - 1, label_smoothing=0.1)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    for x, y in zip(_grads(loss, hs, model.table), _grads(reference, hs, model.table)):
        assert x.shape == y.shape and torch.allclose(x, y, atol=1e-6)
    assert block_rows == [32, 16]


def test_fused_ce_scales_by_the_upstream_gradient_and_skips_what_needs_none():
    """The stored gradients are multiplied by the upstream one (a weighted loss trains as it should), and an
    input without requires_grad gets none."""
    model = TableModel()
    hs, pos = _states(5)
    items = model.table[1 : N + 1]
    (g1,) = _grads(3.0 * fused_softmax_ce(hs, items, pos - 1, 4), hs)
    (g2,) = _grads(fused_softmax_ce(hs, items, pos - 1, 4), hs)
    assert torch.allclose(g1, 3.0 * g2, atol=1e-6)
    frozen = items.detach()
    (g3,) = _grads(fused_softmax_ce(hs, frozen, pos - 1, 4), hs)
    assert torch.allclose(g3, g2, atol=1e-7)
    with torch.no_grad():
        value = fused_softmax_ce(hs, items, pos - 1, 4)
    assert value.item() == pytest.approx(F.cross_entropy(hs @ items.T, pos - 1).item(), rel=1e-6)


def _bfloat16_ce_against_float32(model: TableModel, hs, pos, rows: int):
    scorer = ItemScorer(model)
    exact = LOSSES.get("ce")(scorer, hs, pos, None, LossContext(LossSpec("ce", chunk_rows=rows)))
    spec = LossSpec("ce", chunk_rows=rows, ce_precision="bfloat16")
    low = LOSSES.get("ce")(scorer, hs, pos, None, LossContext(spec))
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(exact.item(), rel=2e-2)
    for x, y in zip(_grads(low, hs, model.table), _grads(exact, hs, model.table)):
        assert x.dtype == torch.float32
        assert F.cosine_similarity(x.flatten(), y.flatten(), 0) > 0.999
    return low, exact


@pytest.mark.parametrize("rows", [5, 1000])
def test_bfloat16_ce_by_casting_is_float32_ce_to_bfloat16_rounding(rows, monkeypatch):
    """Where oneDNN's bfloat16 math mode is not there (a GPU, an older PyTorch), ``ce_precision=bfloat16``
    casts the factors of the catalogue products: the loss and gradients stay within bfloat16's rounding of the
    float32 ones (and are float32 tensors), in any row blocks."""
    monkeypatch.setattr(losses_module, "_cpu_bfloat16_matmul", lambda device: False)
    hs, pos = _states(6)
    low, exact = _bfloat16_ce_against_float32(TableModel(), hs, pos, rows)
    assert low.item() != exact.item()  # the products really ran in bfloat16


def _cpu_has_bfloat16_products() -> bool:
    """Whether this CPU's oneDNN runs a float32 product with bfloat16 factors when asked (it needs bfloat16
    instructions; without them the product stays float32)."""
    a = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    with losses_module._cpu_bfloat16_products(True):
        low = a @ a
    return not torch.equal(low, a @ a)


@pytest.mark.parametrize("rows", [16, 1000])
def test_bfloat16_ce_on_cpu_rounds_inside_the_products_and_restores_the_setting(rows):
    """On a CPU, ``ce_precision=bfloat16`` asks oneDNN for bfloat16 factors inside float32 products (no
    copies): within bfloat16's rounding of float32, rounded at all where the CPU has bfloat16 instructions,
    and the global matmul setting is back to what it was afterwards."""
    if not losses_module._cpu_bfloat16_matmul(torch.device("cpu")):
        pytest.skip("this PyTorch has no torch.backends.mkldnn.matmul.fp32_precision")
    before = torch.backends.mkldnn.matmul.fp32_precision
    model = TableModel(n=600, d=64)
    g = torch.Generator().manual_seed(7)
    hs = torch.randn(80, 64, generator=g, requires_grad=True)
    pos = torch.randint(1, 601, (80,), generator=g)
    low, exact = _bfloat16_ce_against_float32(model, hs, pos, rows)
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    if _cpu_has_bfloat16_products():
        assert low.item() != exact.item()
    else:
        assert low.item() == pytest.approx(exact.item(), rel=1e-6)


def test_bfloat16_ce_on_cpu_sums_each_block_in_float32(monkeypatch):
    """With bfloat16 products the softmax's column sums still come from float32 arithmetic (a float32 product
    with a row of ones, faster here than torch's sum down the block): a sum of bfloat16-rounded weights misses
    the exact one by about 4e-3 of itself. The loss still differs from float32's (bfloat16 products)."""
    if not (losses_module._cpu_bfloat16_matmul(torch.device("cpu")) and _cpu_has_bfloat16_products()):
        pytest.skip("no bfloat16 products inside oneDNN on this CPU")
    errors = []
    numerators = losses_module._softmax_numerators

    def spy(scores, refill, sums):
        weights, z, shift = numerators(scores, refill, sums)
        exact = weights.double().sum(0)
        errors.append(((z.double() - exact) / exact).abs().max().item())
        return weights, z, shift

    monkeypatch.setattr(losses_module, "_softmax_numerators", spy)
    g = torch.Generator().manual_seed(11)
    items = torch.randn(3000, 64, generator=g) * 0.3
    hs = torch.randn(48, 64, generator=g, requires_grad=True)
    pos = torch.randint(0, 3000, (48,), generator=g)
    low = fused_softmax_ce(hs, items, pos, 16, low=True)
    assert len(errors) == 3 and max(errors) < 1e-5
    assert low.item() != pytest.approx(F.cross_entropy(hs @ items.T, pos).item(), rel=1e-7)


def test_fused_ce_is_stable_for_large_scores():
    hs = torch.full((2, 3), 100.0, requires_grad=True)
    items = torch.ones(50, 3)
    out = fused_softmax_ce(hs, items, torch.tensor([0, 7]), 1)  # every score 300: loss log(50)
    assert out.item() == pytest.approx(math.log(50), abs=1e-4)  # float32 ulp at 300 is 3e-5
    (g,) = torch.autograd.grad(out, hs)
    assert torch.isfinite(g).all()


def test_a_second_backward_through_the_fused_ce_is_refused_not_scaled_twice():
    """The fused loss scales its stored gradients in place in the backward; running the backward of the same
    graph again must raise, not return twice-scaled gradients."""
    hs, pos = _states(2)
    out = fused_softmax_ce(hs, TableModel().table[1:].detach(), pos - 1, 4)
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_fused_ce_survives_scores_far_above_the_target():
    """The block is exponentiated unshifted; a score of 200 overflows exp, and that block must fall back to
    the maxima: the loss is still logsumexp - s_pos, the gradient finite and torch's."""
    g = torch.Generator().manual_seed(3)
    items = torch.randn(40, 3, generator=g)
    items[5] = torch.tensor([20.0, 0.0, 0.0])  # scores 200 for the first row, whose target is item 0
    hs = torch.tensor([[10.0, 0.0, 0.0], [0.1, 0.2, 0.3]], requires_grad=True)
    pos = torch.tensor([0, 7])
    out = fused_softmax_ce(hs, items, pos, 1)
    ref = F.cross_entropy(hs @ items.T, pos)
    assert out.item() == pytest.approx(ref.item(), rel=1e-6) and out.item() > 90  # row 0 alone ~200
    (g1,) = torch.autograd.grad(out, hs)
    (g2,) = torch.autograd.grad(F.cross_entropy(hs @ items.T, pos), hs)
    torch.testing.assert_close(g1, g2)


def test_fused_ce_shifts_blocks_whose_products_would_overflow():
    """Scores of 80 leave exp's sum finite (2 x 5.5e34) but a gradient product (5.5e34 x 1e4 per item)
    beyond float32: the sum's window must send the block to the shifted path."""
    hs = torch.tensor([[8.0, 0.0]], requires_grad=True)
    items = torch.tensor([[10.0, 1e4], [10.0, -1e4], [0.0, 0.0]])
    pos = torch.tensor([0])
    out = fused_softmax_ce(hs, items, pos, 1)
    (g1,) = torch.autograd.grad(out, hs)
    (g2,) = torch.autograd.grad(F.cross_entropy(hs @ items.T, pos), hs)
    assert out.item() == pytest.approx(math.log(2), abs=1e-5)
    torch.testing.assert_close(g1, g2)


def test_fused_ce_shifts_blocks_of_very_low_scores():
    """Scores of -100 exponentiate to float32 denormals (3.7e-44, a few bits of precision): unshifted the loss
    of 50 equal scores would miss log(50) by about 1e-2."""
    hs = torch.full((2, 3), -50.0, requires_grad=True)
    items = torch.full((50, 3), 2.0 / 3.0)
    out = fused_softmax_ce(hs, items, torch.tensor([0, 7]), 1)  # every score -100
    assert out.item() == pytest.approx(math.log(50), abs=1e-4)
    (g,) = torch.autograd.grad(out, hs)
    torch.testing.assert_close(g, torch.zeros_like(g), atol=1e-5, rtol=0)


def test_sampled_softmax_with_every_item_as_negative_is_ce():
    model = TableModel()
    hs, pos = _states(1)
    scorer = ItemScorer(model)
    every = torch.arange(1, N + 1)
    log_kq = torch.zeros(N)  # uniform proposal with k = N: log(k Q) = log(N / N) = 0
    logits = sampled_softmax_scores(scorer, hs, pos, every, log_kq)
    sampled = F.cross_entropy(logits, torch.zeros(M, dtype=torch.long))
    ce = LOSSES.get("ce")(scorer, hs, pos, None, LossContext(LossSpec("ce")))
    assert sampled.item() == pytest.approx(ce.item(), rel=1e-6)
    for x, y in zip(_grads(sampled, hs, model.table), _grads(ce, hs, model.table)):
        assert torch.allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("rows", [5, 16, 1000])
def test_popularity_adjusted_ce_is_softmax_over_shifted_logits(rows):
    """Logit adjustment: tau x log p_j is added to every item's training logit, in any row blocks."""
    model, log_pop, tau = TableModel(), _popularity(), 0.7
    hs, pos = _states(4)
    ctx = LossContext(LossSpec("ce", chunk_rows=rows, popularity_adjust=tau), None, log_pop)
    loss = LOSSES.get("ce")(ItemScorer(model), hs, pos, None, ctx)
    reference = F.cross_entropy(hs @ model.table[1 : N + 1].T + tau * log_pop, pos - 1)
    plain = F.cross_entropy(hs @ model.table[1 : N + 1].T, pos - 1)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert abs(loss.item() - plain.item()) > 1e-3  # the offset changes the objective
    for x, y in zip(_grads(loss, hs, model.table), _grads(reference, hs, model.table)):
        assert torch.allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("rows", [5, 16, 1000])
@pytest.mark.parametrize("tau", [0.0, 0.7])
def test_label_smoothed_ce_is_torchs_label_smoothing(rows, tau):
    """model.label_smoothing = eps: the target is (1 - eps) onehot + eps / N, as torch's cross_entropy has it,
    in any row blocks and with the logit adjustment (whose mean enters the loss, not the gradients)."""
    model, log_pop, eps = TableModel(), _popularity(), 0.2
    hs, pos = _states(6)
    spec = LossSpec("ce", chunk_rows=rows, popularity_adjust=tau, label_smoothing=eps)
    loss = LOSSES.get("ce")(ItemScorer(model), hs, pos, None, LossContext(spec, None, log_pop))
    logits = hs @ model.table[1 : N + 1].T + tau * log_pop
    reference = F.cross_entropy(logits, pos - 1, label_smoothing=eps)
    plain = F.cross_entropy(logits, pos - 1)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert abs(loss.item() - plain.item()) > 1e-2  # smoothing changes the objective
    mine = _grads(loss, hs, model.table)
    for x, y in zip(mine, _grads(reference, hs, model.table)):
        assert torch.allclose(x, y, atol=1e-6)
    # smoothed mass goes to real items only, not padding or [MASK]
    assert mine[1][[0, N + 1]].abs().sum() == 0


def test_label_smoothing_zero_is_the_plain_fused_ce_bit_for_bit():
    """The default path is untouched: eps = 0 gives exactly the unsmoothed loss and gradients."""
    model = TableModel()
    hs, pos = _states(7)
    items = model.table[1 : N + 1]
    a = fused_softmax_ce(hs, items, pos - 1, 4, smoothing=0.0)
    b = fused_softmax_ce(hs, items, pos - 1, 4)
    assert a.item() == b.item()
    for x, y in zip(_grads(a, hs, model.table), _grads(b, hs, model.table)):
        assert torch.equal(x, y)


class NeighbourModel(TableModel):
    """TableModel with K fixed neighbours per item (``target_neighbours``), as LLMInit's text neighbours."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.neighbour_ids = torch.zeros(N + 2, k, dtype=torch.long)
        for item in range(1, N + 1):  # k distinct items other than the item itself
            others = torch.tensor([j for j in range(1, N + 1) if j != item])
            self.neighbour_ids[item] = others[torch.randperm(N - 1, generator=g)[:k]]

    def target_neighbours(self, pos):
        return self.neighbour_ids[pos]


def _soft_targets(model: NeighbourModel, pos, eps: float, label_eps: float = 0.0):
    """(M, N) dense target distribution: 1 - eps - label_eps on the target, eps / K on each neighbour,
    label_eps / N on every item."""
    q = torch.full((len(pos), N), label_eps / N)
    q[torch.arange(len(pos)), pos - 1] += 1 - eps - label_eps
    neighbours = model.neighbour_ids[pos] - 1
    q.scatter_add_(1, neighbours, torch.full(neighbours.shape, eps / neighbours.shape[1]))
    return q


@pytest.mark.parametrize("tau", [0.0, 0.7])
@pytest.mark.parametrize("label_eps", [0.0, 0.1])
def test_neighbour_smoothing_is_cross_entropy_against_soft_targets(tau, label_eps):
    """model.neighbour_smoothing = eps: loss and gradients are the softmax cross-entropy against the target
    distribution (1 - eps) on the target and eps / K on each of its neighbours, with the logit adjustment and
    with label smoothing beside it."""
    model, log_pop, eps = NeighbourModel(), _popularity(), 0.3
    hs, pos = _states(8)
    spec = LossSpec(
        "ce", chunk_rows=4, popularity_adjust=tau, label_smoothing=label_eps, neighbour_smoothing=eps
    )
    loss = ranking_loss_from_states(model, hs, pos, None, LossContext(spec, None, log_pop))
    logits = hs @ model.table[1 : N + 1].T + tau * log_pop
    reference = -(_soft_targets(model, pos, eps, label_eps) * logits.log_softmax(-1)).sum(-1).mean()
    plain_logits = hs @ model.table[1 : N + 1].T + tau * log_pop  # a graph of its own (two backwards)
    plain = F.cross_entropy(plain_logits, pos - 1, label_smoothing=label_eps)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert abs(loss.item() - plain.item()) > 1e-2  # the neighbours' share changes the objective
    mine = _grads(loss, hs, model.table)
    for x, y in zip(mine, _grads(reference, hs, model.table)):
        assert torch.allclose(x, y, atol=1e-6)
    # the neighbours of the batch's targets are pulled up: their rows' gradients differ from plain ce's
    plain_items = _grads(plain, model.table)[0]
    pulled = model.neighbour_ids[pos].unique()
    assert (mine[1][pulled] - plain_items[pulled]).abs().sum(-1).min() > 0


def test_neighbour_smoothing_needs_a_model_that_lists_neighbours():
    hs, pos = _states(9)
    ctx = LossContext(LossSpec("ce", neighbour_smoothing=0.2))
    with pytest.raises(ValueError, match="target_neighbours"):
        ranking_loss_from_states(TableModel(), hs, pos, None, ctx)


def test_popularity_adjusted_sampled_softmax_shifts_positive_and_negatives():
    """The registered loss adds tau x log p to the positive and to each shared negative, on top of logQ."""
    model, log_pop, tau = TableModel(), _popularity(), 0.5
    hs, pos = _states(5)
    scorer = ItemScorer(model)
    spec = LossSpec("sampled_softmax", negatives=64, sampler="popularity", popularity_adjust=tau)
    loss = LOSSES.get("sampled_softmax")(
        scorer, hs, pos, None, LossContext(spec, torch.Generator().manual_seed(0), log_pop)
    )
    ids, log_kq = draw_shared_negatives(LossContext(spec, torch.Generator().manual_seed(0), log_pop), N, pos)
    logits = sampled_softmax_scores(scorer, hs, pos, ids, log_kq)
    shift = torch.cat([log_pop[pos - 1][:, None], log_pop[ids - 1][None, :].expand(M, -1)], 1)
    reference = F.cross_entropy(logits + tau * shift, torch.zeros(M, dtype=torch.long))
    plain = F.cross_entropy(logits, torch.zeros(M, dtype=torch.long))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert abs(loss.item() - plain.item()) > 1e-3


def test_popularity_adjust_without_counts_is_a_clear_error():
    model = TableModel()
    hs, pos = _states()
    with pytest.raises(ValueError, match="popularity_adjust"):
        LOSSES.get("ce")(ItemScorer(model), hs, pos, None, LossContext(LossSpec("ce", popularity_adjust=1.0)))


def test_uniform_correction_with_k_equal_n_is_zero():
    ctx = LossContext(
        LossSpec("sampled_softmax", negatives=N, sampler="uniform"), torch.Generator().manual_seed(0)
    )
    ids, log_kq = draw_shared_negatives(ctx, N, torch.tensor([1, 2]))
    assert ids.shape == (N,) and ids.min() >= 1 and ids.max() <= N
    assert torch.allclose(log_kq, torch.zeros(N), atol=1e-6)


def _popularity(n: int = N) -> torch.Tensor:
    counts = torch.arange(1, n + 1, dtype=torch.float64) ** 2
    return torch.log(counts / counts.sum()).float()


def test_popularity_sampler_draws_by_popularity():
    log_pop = _popularity()
    ctx = LossContext(
        LossSpec("sampled_softmax", negatives=200_000, sampler="popularity"),
        torch.Generator().manual_seed(0),
        log_pop,
    )
    ids, _ = draw_shared_negatives(ctx, N, torch.tensor([1]))
    freq = np.bincount(ids.numpy(), minlength=N + 1)[1:] / len(ids)
    expected = log_pop.exp().numpy()
    # chi-square over the items: a sampler drawing uniformly (or off by one id) fails this by orders of
    # magnitude
    chi2 = float(((freq - expected) ** 2 / expected).sum() * len(ids))
    assert chi2 < 100, chi2


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_logq_corrected_negatives_estimate_the_full_partition_function(sampler):
    """sum over samples of exp(s_j - log(k Q_j)) estimates sum over all items of exp(s_j) without bias;
    dropping the correction under the popularity proposal does not."""
    torch.manual_seed(0)
    model = TableModel()
    hs = torch.randn(4, D) * 0.3
    log_pop = _popularity()
    ctx = LossContext(
        LossSpec("sampled_softmax", negatives=400_000, sampler=sampler),
        torch.Generator().manual_seed(1),
        log_pop,
    )
    ids, log_kq = draw_shared_negatives(ctx, N, torch.tensor([N + 5] * 4))  # no accidental hits
    scores = hs @ model.table[ids].detach().T
    estimate = torch.logsumexp(scores - log_kq, 1)
    truth = torch.logsumexp(hs @ model.table[1 : N + 1].detach().T, 1)
    assert torch.allclose(estimate, truth, atol=0.02)
    if sampler == "popularity":
        uncorrected = torch.logsumexp(scores - math.log(len(ids)) + math.log(N), 1)  # as if uniform
        assert (uncorrected - truth).abs().max() > 0.1


def test_in_batch_negatives_are_the_batch_positives_and_mask_accidental_hits():
    model = TableModel()
    hs, _ = _states(2)
    pos = torch.tensor([3, 3, 5, 7, 7, 7, 9, 1, 2, 2, 4])
    ctx = LossContext(LossSpec("sampled_softmax", sampler="in_batch"), None, _popularity())
    ids, log_kq = draw_shared_negatives(ctx, N, pos)
    assert ids.tolist() == sorted(set(pos.tolist()))
    logits = sampled_softmax_scores(ItemScorer(model), hs, pos, ids, log_kq)
    hit = pos[:, None] == ids[None, :]
    assert torch.isinf(logits[:, 1:][hit]).all() and torch.isfinite(logits[:, 1:][~hit]).all()


def test_gbce_with_calibration_zero_is_bce_over_the_same_negatives():
    model = TableModel()
    hs, pos = _states(4)
    neg = torch.randint(1, N + 1, (M, 5), generator=torch.Generator().manual_seed(9))
    g = LOSSES.get("gbce")(
        ItemScorer(model), hs, pos, neg, LossContext(LossSpec("gbce", negatives=5, gbce_t=0.0))
    )
    logits = torch.cat(
        [(hs * model.table[pos]).sum(-1, keepdim=True), torch.einsum("md,mkd->mk", hs, model.table[neg])], 1
    )
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    bce = F.binary_cross_entropy_with_logits(logits, labels)
    assert g.item() == pytest.approx(bce.item(), rel=1e-6)
    for x, y in zip(_grads(g, hs, model.table), _grads(bce, hs, model.table)):
        assert torch.allclose(x, y, atol=1e-6)


def test_gbce_beta_follows_gsasrec():
    assert gbce_beta(5, 101, 0.0) == pytest.approx(1.0)
    assert gbce_beta(5, 101, 1.0) == pytest.approx(5 / 100)  # fully calibrated: beta = alpha
    assert gbce_beta(256, 10_001, 0.75) == pytest.approx(0.0256 * (0.75 * (1 - 1 / 0.0256) + 1 / 0.0256))
    model = TableModel()
    hs, pos = _states(5)
    neg = torch.randint(1, N + 1, (M, 3), generator=torch.Generator().manual_seed(2))
    calibrated = LOSSES.get("gbce")(
        ItemScorer(model), hs, pos, neg, LossContext(LossSpec("gbce", gbce_t=0.75))
    )
    plain = LOSSES.get("gbce")(ItemScorer(model), hs, pos, neg, LossContext(LossSpec("gbce", gbce_t=0.0)))
    assert calibrated.item() < plain.item()  # beta < 1 weighs the positive term less


def test_bce_and_bpr_match_their_formulas():
    model = TableModel()
    hs, pos = _states(6)
    neg = torch.randint(1, N + 1, (M, 1), generator=torch.Generator().manual_seed(3))
    sp = (hs * model.table[pos]).sum(-1)
    sn = (hs * model.table[neg[:, 0]]).sum(-1)
    bce = LOSSES.get("bce")(ItemScorer(model), hs, pos, neg, LossContext(LossSpec("bce")))
    assert bce.item() == pytest.approx((-F.logsigmoid(sp).mean() - F.logsigmoid(-sn).mean()).item(), rel=1e-6)
    bpr = LOSSES.get("bpr")(ItemScorer(model), hs, pos, neg, LossContext(LossSpec("bpr")))
    assert bpr.item() == pytest.approx((-F.logsigmoid(sp - sn).mean()).item(), rel=1e-6)


def test_view_losses_add_one_loss_per_view():
    views = [slice(0, 2), slice(2, D)]
    model = TableModel(views=views)
    hs, pos = _states(7)
    spec = LossSpec("ce", view_losses=True)
    total = ranking_loss_from_states(model, hs, pos, torch.zeros(M, 0, dtype=torch.long), LossContext(spec))
    table = model.table[1 : N + 1]
    expected = F.cross_entropy(hs @ table.T, pos - 1) + sum(
        F.cross_entropy(hs[:, v] @ table[:, v].T, pos - 1) for v in views
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = ranking_loss_from_states(model, hs, pos, None, LossContext(LossSpec("ce")))
    assert plain.item() == pytest.approx(F.cross_entropy(hs @ table.T, pos - 1).item(), rel=1e-6)


def test_batch_negatives_only_for_losses_that_use_them():
    assert LossSpec("bce", negatives=3).batch_negatives == 3
    assert LossSpec("gbce", negatives=64).batch_negatives == 64
    assert LossSpec("ce", negatives=64).batch_negatives == 0
    assert LossSpec("sampled_softmax", negatives=64).batch_negatives == 0


def test_config_accepts_exactly_the_registered_losses_and_samplers():
    from esrkit import config
    from esrkit.models.fusion import GATES
    from esrkit.training.losses import SAMPLERS

    for name in LOSSES.names():  # model.loss is checked against the LOSSES registry itself
        assert config.resolve_recipe(None, [f"model.loss={name}"]).model.loss == name
    with pytest.raises(
        config.ConfigError, match=r"model\.loss = 'nope': is not a registered loss; known: bce"
    ):
        config.resolve_recipe(None, ["model.loss=nope"])
    assert config.LOSS_SAMPLERS == SAMPLERS and config.GATES == GATES


def test_fused_ce_blocks_stay_bounded():
    from esrkit.training.losses import _auto_rows

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    # the fastest measured on a CPU: 256 rows while a block holds at most 8M scores, 128 beyond
    assert _auto_rows(12_101, cpu) == _auto_rows(32_768, cpu) == 256
    assert _auto_rows(32_769, cpu) == _auto_rows(57_289, cpu) == 128
    assert _auto_rows(12_101, gpu) == (1 << 25) // 12_101  # few large blocks on a GPU
    for n in (2_000_000, 50_000_000):
        for device in (cpu, gpu):
            assert _auto_rows(n, device) * n <= max(1 << 25, n)  # at most the budget, or one row
