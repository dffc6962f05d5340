"""The trimmed, variable-length computation equals the official fixed-length (max_len) computation.

The references below re-implement the official forward passes independently — padded to max_len, attention
through torch.nn.MultiheadAttention with no key mask, the GRU run over every padding step — using the weights
of the esrkit model under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esrkit.data.tensors import make_input
from esrkit.models import MODELS
from esrkit.models.gru4rec import GRU4RecEncoder
from esrkit.models.sasrec import PaddedSelfAttention, SASRecEncoder

MAX_LEN = 24


def _random_sequences(rng: np.random.Generator, n_items: int, lengths: list[int]) -> list[list[int]]:
    return [rng.integers(1, n_items + 1, size=n).tolist() for n in lengths]


def _right_aligned(seqs: list[list[int]], width: int) -> torch.Tensor:
    out = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, s in enumerate(seqs):
        s = s[-width:]
        if s:
            out[r, -len(s) :] = torch.tensor(s)
    return out


def _official_positions(tokens: torch.Tensor) -> torch.Tensor:
    mask = (tokens != 0).long()
    return torch.cumsum(mask, 1) * mask


def _mha_from(attn: PaddedSelfAttention, hidden: int, heads: int) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(hidden, heads, dropout=0.0).to(attn.in_proj_weight.device)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.in_proj_weight)
        mha.in_proj_bias.copy_(attn.in_proj_bias)
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias)
    return mha.eval()


def official_sasrec_backbone(
    enc: SASRecEncoder, seqs: torch.Tensor, log_seqs: torch.Tensor, heads: int
) -> torch.Tensor:
    """``SASRecBackbone.forward`` of the official code (eval mode), on max_len-padded input."""
    timeline_mask = (log_seqs == 0).unsqueeze(-1)
    seqs = seqs * ~timeline_mask
    for i in range(len(enc.attentions)):
        mha = _mha_from(enc.attentions[i], enc.hidden, heads)
        s = seqs.transpose(0, 1)
        q = enc.attention_norms[i](s)
        out, _ = mha(q, s, s)
        s = q + out
        seqs = s.transpose(0, 1)
        seqs = enc.ffn_norms[i](seqs)
        seqs = enc.ffns[i](seqs)
        seqs = seqs * ~timeline_mask
    return enc.final_norm(seqs)


def official_cross_attention(ca, x, y, log_seqs):
    B, L, d = x.shape
    H, dh = ca.heads, ca.head_dim
    q = ca.q(x).view(B, L, H, dh).transpose(1, 2)
    k = ca.k(y).view(B, L, H, dh).transpose(1, 2)
    v = ca.v(y).view(B, L, H, dh).transpose(1, 2)
    mask = (log_seqs == 0).unsqueeze(1).repeat(1, L, 1).unsqueeze(1)
    att = torch.matmul(q, k.transpose(-1, -2)).masked_fill(mask, -1e9)
    att = torch.softmax(att / math.sqrt(dh), -1) @ v
    return ca.out(att.transpose(1, 2).reshape(B, L, d))


def official_llmesr_log2feats(model, log_seqs: torch.Tensor, cross: bool = True) -> torch.Tensor:
    """``DualLLMSASRec.log2feats`` / ``DualLLMGRU4Rec.log2feats`` (eval mode) at full max_len."""
    positions = _official_positions(log_seqs)
    id_seqs = model.collab(log_seqs)
    llm_seqs = model.adapter.layers[1](model.adapter.layers[0](model.semantic_table[log_seqs]))
    if model.input_style == "transformer":
        scale = math.sqrt(model.hidden)  # official: embedding_dim ** 0.5
        id_seqs = id_seqs * scale + model.inputs.positions(positions)
        llm_seqs = llm_seqs * scale + model.inputs.positions(positions)
    if cross:
        cross_id = official_cross_attention(model.llm2id, llm_seqs, id_seqs, log_seqs)
        cross_llm = official_cross_attention(model.id2llm, id_seqs, llm_seqs, log_seqs)
    else:
        cross_id, cross_llm = id_seqs, llm_seqs
    if model.input_style == "transformer":
        f = lambda s: official_sasrec_backbone(model.encoder, s, log_seqs, 1)  # noqa: E731
    else:
        f = lambda s: model.encoder.gru(s)[0]  # noqa: E731
    return torch.cat([f(cross_id), f(cross_llm)], -1)


@pytest.mark.parametrize("causal", [False, True])
def test_sasrec_encoder_matches_padded_official(causal: bool) -> None:
    torch.manual_seed(0)
    enc = SASRecEncoder(16, layers=2, heads=1, dropout=0.5, causal=causal).eval()
    seqs = _random_sequences(np.random.default_rng(1), 50, [1, 3, 7, 12, 0, 5])
    full = _right_aligned(seqs, MAX_LEN)
    x_full = torch.randn(len(seqs), MAX_LEN, 16)
    trimmed_width = max(len(s) for s in seqs)
    inp = make_input(full[:, -trimmed_width:], MAX_LEN)
    ours = enc(x_full[:, -trimmed_width:], inp.mask, pad_count=inp.pad_count)
    # the official causal variant: attn_mask over all max_len slots
    ref = _official_causal(enc, x_full, full) if causal else official_sasrec_backbone(enc, x_full, full, 1)
    torch.testing.assert_close(ours[:, -1], ref[:, -1], atol=2e-5, rtol=1e-4)
    real = inp.mask
    torch.testing.assert_close(ours[real], ref[:, -trimmed_width:][real], atol=2e-5, rtol=1e-4)


def _official_causal(enc, seqs, log_seqs):
    timeline_mask = (log_seqs == 0).unsqueeze(-1)
    seqs = seqs * ~timeline_mask
    L = seqs.shape[1]
    attn_mask = ~torch.tril(torch.ones(L, L, dtype=torch.bool))
    for i in range(len(enc.attentions)):
        mha = _mha_from(enc.attentions[i], enc.hidden, 1)
        s = seqs.transpose(0, 1)
        q = enc.attention_norms[i](s)
        out, _ = mha(q, s, s, attn_mask=attn_mask)
        seqs = (q + out).transpose(0, 1)
        seqs = enc.ffns[i](enc.ffn_norms[i](seqs)) * ~timeline_mask
    return enc.final_norm(seqs)


def test_without_emulation_padding_is_ignored() -> None:
    torch.manual_seed(0)
    enc = SASRecEncoder(8, layers=1).eval()
    x = torch.randn(1, 5, 8)
    mask = torch.tensor([[False, False, True, True, True]])
    a = enc(x, mask)
    b = enc(x[:, 2:], mask[:, 2:])
    torch.testing.assert_close(a[:, -1], b[:, -1])


def _small_llmesr(rng: np.random.Generator, backbone: str, **options):
    """A 40-item, 8-wide LLM-ESR in eval mode, its LLM and PCA tables drawn from ``rng``."""
    n_items, d_llm, hidden = 40, 32, 8
    llm = rng.normal(size=(n_items, d_llm)).astype(np.float32)
    pca = rng.normal(size=(n_items, hidden)).astype(np.float32)
    return MODELS.get("llmesr")(
        n_items, llm, pca, backbone=backbone, hidden=hidden, max_len=MAX_LEN, **options
    ).eval()


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("cross", [True, False])
def test_llmesr_trimmed_equals_official_full_length(backbone: str, cross: bool) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = _small_llmesr(rng, backbone, cross_attention=cross)
    seqs = _random_sequences(rng, model.n_items, [2, 9, 4, 0, 17, 1])
    full = _right_aligned(seqs, MAX_LEN)
    with torch.no_grad():
        ref = official_llmesr_log2feats(model, full, cross)[:, -1]
        width = max(len(s) for s in seqs)
        ours = model.last_hidden(make_input(full[:, -width:], MAX_LEN))
    torch.testing.assert_close(ours, ref, atol=3e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "gru4rec"])
def test_id_model_trimmed_equals_full_length(backbone: str) -> None:
    """Trimming to any width >= the longest sequence gives the same representation (padding emulation)."""
    torch.manual_seed(0)
    model = MODELS.get("id")(30, backbone=backbone, hidden=8, max_len=MAX_LEN).eval()
    seqs = _random_sequences(np.random.default_rng(3), 30, [3, 1, 8, 0])
    full = _right_aligned(seqs, MAX_LEN)
    with torch.no_grad():
        a = model.last_hidden(make_input(full, MAX_LEN))
        b = model.last_hidden(make_input(full[:, -8:], MAX_LEN))
        c = model.last_hidden(make_input(full[:, -12:], MAX_LEN))
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(a, c, atol=2e-5, rtol=1e-4)


def test_gru_full_length_matches_plain_nn_gru() -> None:
    """GRU4Rec id model at full width equals nn.GRU over the padded sequence (pads = the padding row)."""
    torch.manual_seed(0)
    model = MODELS.get("id")(30, backbone="gru4rec", hidden=8, max_len=MAX_LEN).eval()
    seqs = _random_sequences(np.random.default_rng(4), 30, [5, 2])
    full = _right_aligned(seqs, MAX_LEN)
    with torch.no_grad():
        ref = model.encoder.gru(model.items(full))[0][:, -1]
        ours = model.last_hidden(make_input(full[:, -5:], MAX_LEN))
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


def test_pad_key_dropout_has_the_official_distribution() -> None:
    """In training, n padding keys each dropped independently == one merged key with a Binomial count."""
    torch.manual_seed(0)
    d, n_pad, real = 4, 10, 2
    attn = PaddedSelfAttention(d, 1, dropout=0.5, causal=False).train()
    with torch.no_grad():
        attn.in_proj_bias.normal_()
    mha = _mha_from(attn, d, 1)
    mha.dropout = 0.5
    mha.train()
    x_real = torch.randn(1, real, d)
    x_full = torch.cat([torch.zeros(1, n_pad, d), x_real], 1)
    samples = 4000
    xr = x_real.expand(samples, -1, -1)
    mask = torch.ones(samples, real, dtype=torch.bool)
    with torch.no_grad():
        ours = attn(xr, xr, mask, torch.full((samples,), n_pad))[:, -1, 0]
        xf = x_full.expand(samples, -1, -1).transpose(0, 1)
        ref = mha(xf, xf, xf)[0].transpose(0, 1)[:, -1, 0]
    assert abs(ours.mean() - ref.mean()) < 4 * ref.std() / math.sqrt(samples)
    ratio = (ours.var() / ref.var()).item()
    assert 0.85 < ratio < 1.15, ratio


def test_frozen_semantic_table_gets_no_gradient_and_is_not_saved() -> None:
    rng = np.random.default_rng(0)
    model = MODELS.get("llmesr")(
        10, rng.normal(size=(10, 16)).astype("f4"), rng.normal(size=(10, 4)).astype("f4"), hidden=4, max_len=8
    )
    assert "semantic_table" not in dict(model.named_parameters())
    assert "semantic_table" not in model.state_dict()
    inp = make_input(torch.tensor([[0, 1, 2, 3]]), 8)
    probe = torch.randn(8)  # LayerNorm outputs sum to a constant: probe with a random direction
    (model.last_hidden(inp) @ probe).sum().backward()
    assert model.semantic_table.grad is None
    assert model.adapter.layers[0].weight.grad is not None
    unfrozen = MODELS.get("llmesr")(
        10,
        rng.normal(size=(10, 16)).astype("f4"),
        rng.normal(size=(10, 4)).astype("f4"),
        hidden=4,
        max_len=8,
        freeze_semantic=False,
    )
    (unfrozen.last_hidden(inp) @ probe).sum().backward()
    assert unfrozen.semantic_table.grad is not None and unfrozen.semantic_table.grad[1:4].abs().sum() > 0


def test_composed_adapter_equals_two_layers() -> None:
    rng = np.random.default_rng(0)
    model = MODELS.get("llmesr")(
        10, rng.normal(size=(10, 16)).astype("f4"), rng.normal(size=(10, 4)).astype("f4"), hidden=4, max_len=8
    )
    x = torch.randn(5, 16)
    two = model.adapter.layers[1](model.adapter.layers[0](x))
    torch.testing.assert_close(model.adapter(x), two, atol=1e-5, rtol=1e-5)
    assert F.linear(x, *model.adapter.composed()).shape == (5, 4)


def test_gru_padding_cache_keeps_gradients_exact() -> None:
    """Reusing the cached padding trajectory across calls of one step gives the gradients of separate runs."""
    torch.manual_seed(0)
    seqs = _random_sequences(np.random.default_rng(5), 30, [3, 7, 2, 5])
    full = _right_aligned(seqs, MAX_LEN)
    grads = []
    for reuse in (True, False):
        torch.manual_seed(0)
        model = MODELS.get("id")(30, backbone="gru4rec", hidden=8, max_len=MAX_LEN)
        a = model.last_hidden(make_input(full[:2, -7:], MAX_LEN))
        if not reuse:
            model.encoder._shared_cache = None
        b = model.last_hidden(make_input(full[2:, -5:], MAX_LEN))
        (a.sum() + (b**2).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def _amplifying_gru(seed: int = 0) -> GRU4RecEncoder:
    """A GRU4Rec encoder whose recurrence amplifies at the zero state (Jacobian 0.5 I + 0.25 W_hn = 2.5 I), as
    training can make it: 190 padding steps' backward then overflows float32."""
    torch.manual_seed(seed)
    encoder = GRU4RecEncoder(8)
    with torch.no_grad():
        encoder.gru.weight_hh_l0[16:] = 8 * torch.eye(8)
    return encoder


def test_gru_zero_padding_is_not_run_and_its_gradients_stay_finite() -> None:
    """A zero padding input leaves the zero state at zero: the trimmed encoder skips the cut padding steps and
    gives the full-length GRU's output, with finite gradients where the full-length run's backward overflows
    (inf x 0 = NaN in the weights' gradients)."""
    max_len, lengths = 200, torch.tensor([5, 2])
    real = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    full = torch.zeros(2, max_len, 8)
    full[0, -5:], full[1, -2:] = real[0], real[1, -2:]
    trimmed = full[:, -6:].clone()  # one padding column kept, as the model's trimmed batch
    mask = torch.arange(6) >= 6 - lengths[:, None]
    ours_encoder, official = _amplifying_gru(), _amplifying_gru()
    ours = ours_encoder(trimmed, mask, pad_count=max_len - lengths, shared_pad=True)[:, -1]
    ours.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in ours_encoder.parameters())
    ref = official.gru(full)[0][:, -1]
    torch.testing.assert_close(ours.detach(), ref.detach(), atol=2e-5, rtol=1e-4)
    ref.sum().backward()
    assert not torch.isfinite(official.gru.weight_hh_l0.grad).all()  # what the skipped steps did


def test_gru_padding_inside_the_batch_is_not_run_either() -> None:
    """A short history batched with a full-length one has its padding inside the batch (none is cut): with a
    zero padding input those steps are not run either, so their backward cannot overflow (what made LLMInit
    on GRU4Rec diverge on Beauty 5-core), and the outputs are the full run's."""
    max_len, lengths = 200, torch.tensor([200, 2])
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(2, max_len, 8)
    x[0], x[1, -2:] = torch.randn(max_len, 8, generator=g), torch.randn(2, 8, generator=g)
    mask = torch.arange(max_len) >= max_len - lengths[:, None]
    ours_encoder, official = _amplifying_gru(), _amplifying_gru()
    ours = ours_encoder(x, mask, pad_count=max_len - lengths, shared_pad=True)
    ours[1, -1].sum().backward()  # the short row's last state
    assert all(torch.isfinite(p.grad).all() for p in ours_encoder.parameters())
    ref = official.gru(x)[0]
    torch.testing.assert_close(ours.detach(), ref.detach(), atol=2e-5, rtol=1e-4)
    ref[1, -1].sum().backward()
    assert not torch.isfinite(official.gru.weight_hh_l0.grad).all()  # what the skipped steps did


def test_gru_left_aligned_rows_give_the_padded_runs_gradients() -> None:
    """Where the padded run's backward stays finite, running each row's items first changes no gradient: not
    the weights', not the inputs' (which pass through the row re-ordering and back)."""
    max_len, lengths = 12, torch.tensor([12, 5, 1])
    mask = torch.arange(max_len) >= max_len - lengths[:, None]
    x = torch.randn(3, max_len, 8, generator=torch.Generator().manual_seed(3)) * mask[..., None]
    ours_encoder, official = GRU4RecEncoder(8), GRU4RecEncoder(8)
    official.load_state_dict(ours_encoder.state_dict())
    weights = torch.randn(3, max_len, 8, generator=torch.Generator().manual_seed(4)) * mask[..., None]
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ours_encoder(x_ours, mask, pad_count=max_len - lengths) * weights).sum().backward()
    (official.gru(x_ref)[0] * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad * mask[..., None], atol=1e-6, rtol=1e-5)
    for name, p in ours_encoder.named_parameters():
        torch.testing.assert_close(p.grad, dict(official.named_parameters())[name].grad, atol=1e-6, rtol=1e-5)


def test_gru_nonzero_padding_is_still_run() -> None:
    """The padding steps are skipped only for a zero padding input: any other one moves the state, and the
    trimmed model still reproduces the full-length run."""
    full = _right_aligned(_random_sequences(np.random.default_rng(7), 30, [5, 2]), MAX_LEN)
    torch.manual_seed(0)
    model = MODELS.get("id")(30, backbone="gru4rec", hidden=8, max_len=MAX_LEN).eval()
    with torch.no_grad():
        model.items.weight[0] = 0.5
        ref = model.encoder.gru(model.items(full))[0][:, -1]
        ours = model.last_hidden(make_input(full[:, -5:], MAX_LEN))
        from_zero = model.encoder.gru(model.items(full[:, -5:]))[0][:, -1]
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(ours, from_zero, atol=1e-3)


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("causal", [True, False])
def test_causal_llmesr_never_reads_a_later_item(backbone: str, causal: bool) -> None:
    """With ``causal=True`` no position may see a later item, through self- or cross-attention; the official
    (non-causal) model does: changing the last item changes the earlier positions' outputs."""
    torch.manual_seed(0)
    model = _small_llmesr(np.random.default_rng(0), backbone, causal=causal)
    tokens = torch.tensor([[0, 0, 3, 7, 9, 12], [5, 8, 2, 11, 4, 6]])
    changed = tokens.clone()
    changed[:, -1] = torch.tensor([30, 31])
    with torch.no_grad():
        a = model.encode(make_input(tokens, MAX_LEN))
        b = model.encode(make_input(changed, MAX_LEN))
    assert not torch.allclose(a[:, -1], b[:, -1])  # the changed position itself always changes
    prefix_same = torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)
    assert prefix_same == causal
