"""SASRec encoder (Kang & McAuley 2018) as the official LLM-ESR code runs it (pmixer style).

Everything the forward pass needs is in this file. Per layer: ``q = LN_a(x)``; ``x = q + MHA(q, x, x)``;
``x = LN_f(x)``; ``x = x + FFN(x)``; padding rows zeroed; a final LayerNorm (eps 1e-8). Dropout 0.5 on
attention weights and inside the FFN.

Faithfulness detail: the official code pads every sequence to ``max_len`` (200) and attends over all 200 keys
with **no key-padding mask** (and, deliberately, no causal mask). A zeroed padding input has key = the key
bias and value = the value bias, so every padding key is identical. With ``pad_count`` given, this encoder
replaces the ``n`` padding keys by one key with logit ``q . b_k / sqrt(d_h) + log(n)`` and value ``b_v``:
softmax over [real keys, that key] equals softmax over [real keys, n identical pad keys]. In training,
attention dropout on the merged key keeps a Binomial(n, 1-p) count of the n pad keys, so the output has
exactly the official distribution. That lets esrkit drop the padding arithmetic (the bulk of the official
cost) without changing the function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esrkit.models.base import ENCODERS, Dropout, dropout, dropout_scale


class PaddedSelfAttention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameters and arithmetic, plus exact pad emulation.

    ``last_of=L``: ``query`` holds only the last of the sequence's ``L`` positions (keys and values are all of
    them); the dropout draws are those of the full computation, so the output is its last position exactly."""

    def __init__(self, hidden: int, heads: int, dropout: float, causal: bool) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.p, self.causal = heads, hidden // heads, dropout, causal
        self.in_proj_weight = nn.Parameter(torch.empty(3 * hidden, hidden))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * hidden))
        self.out_proj = nn.Linear(hidden, hidden)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, query: Tensor, x: Tensor, key_mask: Tensor, pad_count: Tensor | None, last_of: int = 0
    ) -> Tensor:
        B, L, d = x.shape
        Lq = query.shape[1]
        H, dh = self.heads, self.head_dim
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).view(B, Lq, H, dh).transpose(1, 2) * (dh**-0.5)
        k = F.linear(x, wk, bk).view(B, L, H, dh).transpose(1, 2)
        v = F.linear(x, wv, bv).view(B, L, H, dh).transpose(1, 2)
        allowed = key_mask[:, None, None, :]
        if self.causal:  # query i (of the last Lq positions) sees keys up to its own position
            allowed = allowed & torch.ones(Lq, L, dtype=torch.bool, device=x.device).tril(L - Lq)
        dropping = self.training and self.p > 0
        if pad_count is None:
            logits = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(logits, -1).nan_to_num(0.0)  # a row with no key attends to nothing
            probs = dropout(probs, self.p, self.training, last_of)
            out = probs @ v
        elif not dropping:
            out = _attend_with_padding_exact(q, k, v, allowed, pad_count, bk.view(H, dh), bv.view(H, dh))
        elif torch.is_grad_enabled():
            logits = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf"))
            out = self._attend_with_padding(q, v, logits, pad_count, bk.view(H, dh), bv.view(H, dh), last_of)
        else:
            out = self._attend_with_padding_no_grad(
                q, k, v, allowed, pad_count, bk.view(H, dh), bv.view(H, dh), last_of
            )
        return self.out_proj(out.transpose(1, 2).reshape(B, Lq, d))

    def _attend_with_padding(
        self,
        q: Tensor,
        v: Tensor,
        logits: Tensor,
        pad_count: Tensor,
        pad_key: Tensor,
        pad_value: Tensor,
        last_of: int = 0,
    ) -> Tensor:
        """Training: softmax over [real keys, the merged pad key], then dropout with the official
        distribution."""
        n = pad_count.to(q.dtype)[:, None, None]  # (B,1,1)
        pad_logit = _pad_logit(q, pad_key, n)  # (B,H,Lq)
        probs = torch.softmax(torch.cat([logits, pad_logit.unsqueeze(-1)], -1), -1)
        real, pad_w = probs[..., :-1], probs[..., -1]
        real = dropout(real, self.p, True, last_of)
        kept, total = self._pad_keep(n, pad_w, last_of)
        return real @ v + (pad_w * kept / total).unsqueeze(-1) * pad_value[None, :, None, :]

    def _attend_with_padding_no_grad(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        allowed: Tensor,
        pad_count: Tensor,
        pad_key: Tensor,
        pad_value: Tensor,
        last_of: int = 0,
    ) -> Tensor:
        """``_attend_with_padding`` (same random draws, same values up to rounding) for passes without a graph
        (self-distillation teachers), in place and without copies: the softmax is normalised after the value
        product, on (B, H, Lq, d_h) instead of (B, H, Lq, L)."""
        n = pad_count.to(q.dtype)[:, None, None]
        logits = q @ k.transpose(-1, -2)
        logits.masked_fill_(~allowed, float("-inf"))
        pad_logit = (q * pad_key[None, :, None, :]).sum(-1)
        pad_logit = _pad_logit(q, pad_key, n)
        top = torch.maximum(logits.amax(-1), pad_logit)  # finite: every row has its pad key or a real key
        weights = logits.sub_(top.unsqueeze(-1)).exp_()
        pad_w = (pad_logit - top).exp_()
        total = weights.sum(-1) + pad_w
        if weights.device.type == "cpu":
            weights.mul_(dropout_scale(tuple(weights.shape), self.p, weights.dtype, last_of))
        else:
            weights = F.dropout(weights, self.p, True, inplace=True)
        kept, pads = self._pad_keep(n, pad_w, last_of)
        pad_w = pad_w * kept / pads
        out = weights @ v
        out.add_(pad_w.unsqueeze(-1) * pad_value[None, :, None, :])
        return out.div_(total.unsqueeze(-1))

    def _pad_keep(self, n: Tensor, pad_w: Tensor, last_of: int) -> tuple[Tensor, Tensor]:
        """Dropout on the merged pad key: (a Binomial(n, 1-p) count of the n pad keys that survive, the
        expected count n (1-p)), drawn for every query position even when only the last is computed (the
        random stream is the full pass's)."""
        B, H, Lq = pad_w.shape
        counts = n.expand(B, H, last_of or Lq).contiguous()
        kept = torch.binomial(counts, torch.full_like(counts, 1.0 - self.p))[..., -Lq:]
        return kept, (counts[..., -Lq:] * (1.0 - self.p)).clamp_min(1e-12)


def _pad_logit(q: Tensor, pad_key: Tensor, n: Tensor) -> Tensor:
    """The merged pad key's logit, q . b_k + log(n) (-inf without padding): (B, H, Lq)."""
    logit = (q * pad_key[None, :, None, :]).sum(-1)
    return torch.where(n > 0, logit + torch.log(n.clamp_min(1.0)), torch.full_like(logit, float("-inf")))


def _attend_with_padding_exact(
    q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, pad_count: Tensor, pad_key: Tensor, pad_value: Tensor
) -> Tensor:
    """Without dropout (evaluation): the merged pad key appended as one more key, in one fused attention
    call."""
    B, H, Lq, dh = q.shape
    n = pad_count.to(q.dtype)
    k_ext = torch.cat([k, pad_key[None, :, None, :].expand(B, H, 1, dh)], 2)
    v_ext = torch.cat([v, pad_value[None, :, None, :].expand(B, H, 1, dh)], 2)
    real_bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
    real_bias.masked_fill_(~allowed, float("-inf"))
    pad_bias = torch.where(n > 0, torch.log(n.clamp_min(1.0)), torch.full_like(n, float("-inf")))
    bias = torch.cat(
        [real_bias.expand(B, 1, Lq, k.shape[2]), pad_bias.view(B, 1, 1, 1).expand(B, 1, Lq, 1)], -1
    )
    return F.scaled_dot_product_attention(q, k_ext, v_ext, attn_mask=bias, scale=1.0)  # q is pre-scaled


class PointWiseFeedForward(nn.Module):
    """x + Dropout(W2 ReLU(Dropout(W1 x))) — the official 1x1-conv FFN written with Linear layers."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, x: Tensor, last_of: int = 0) -> Tensor:
        return x + self.dropout2(self.fc2(torch.relu(self.dropout1(self.fc1(x), last_of))), last_of)


@ENCODERS.register("sasrec", objective="seq2seq", inputs="transformer")
class SASRecEncoder(nn.Module):
    def __init__(
        self,
        hidden: int,
        layers: int = 2,
        heads: int = 1,
        dropout: float = 0.5,
        causal: bool = False,
        **_: object,
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.attention_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(layers))
        self.attentions = nn.ModuleList(
            PaddedSelfAttention(hidden, heads, dropout, causal) for _ in range(layers)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(layers))
        self.ffns = nn.ModuleList(PointWiseFeedForward(hidden, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-8)

    supports_last_only = True  # forward(..., last_only=True) computes the last position only (teachers, eval)

    def forward(
        self, x: Tensor, mask: Tensor, pad_count: Tensor | None = None, last_only: bool = False, **_: object
    ) -> Tensor:
        """(B, L, d) hidden states; ``last_only``: (B, 1, d), the last position only. Every position of the
        last layer's input is still needed (they are its keys), but its queries, FFN and norms shrink to one
        position, and the dropout draws are those of the full pass (the same result, random numbers included).
        """
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = x * keep
        layers = list(zip(self.attention_norms, self.attentions, self.ffn_norms, self.ffns))
        for i, (attn_norm, attn, ffn_norm, ffn) in enumerate(layers):
            if last_only and i == len(layers) - 1:
                q = attn_norm(x[:, -1:])
                h = q + attn(q, x, mask, pad_count, last_of=x.shape[1])
                return self.final_norm(ffn(ffn_norm(h), last_of=x.shape[1]) * keep[:, -1:])
            q = attn_norm(x)
            x = q + attn(q, x, mask, pad_count)
            x = ffn(ffn_norm(x)) * keep
        return self.final_norm(x[:, -1:] if last_only else x)


__all__ = ["PaddedSelfAttention", "PointWiseFeedForward", "SASRecEncoder"]
