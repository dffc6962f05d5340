"""SASRec encoder (Kang & McAuley 2018) as the official LLM-ESR code runs it (pmixer style).

Everything the forward pass needs is in this file. Per layer: ``q = LN_a(x)``; ``x = q + MHA(q, x, x)``;
``x = LN_f(x)``; ``x = x + FFN(x)``; padding rows zeroed; a final LayerNorm (eps 1e-8). Dropout 0.5 on attention
weights and inside the FFN.

Faithfulness detail: the official code pads every sequence to ``max_len`` (200) and attends over all 200 keys
with **no key-padding mask** (and, deliberately, no causal mask). A zeroed padding input has key = the key bias
and value = the value bias, so every padding key is identical. With ``pad_count`` given, this encoder replaces the
``n`` padding keys by one key with logit ``q . b_k / sqrt(d_h) + log(n)`` and value ``b_v``: softmax over
[real keys, that key] equals softmax over [real keys, n identical pad keys]. In training, attention dropout on the
merged key keeps a Binomial(n, 1-p) count of the n pad keys, so the output has exactly the official distribution.
That lets esrkit drop the padding arithmetic (the bulk of the official cost) without changing the function.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esrkit.models.base import ENCODERS, Dropout, dropout


class PaddedSelfAttention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameters and arithmetic, plus exact pad emulation."""

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

    def forward(self, query: Tensor, x: Tensor, key_mask: Tensor, pad_count: Tensor | None) -> Tensor:
        B, L, d = x.shape
        H, dh = self.heads, self.head_dim
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).view(B, L, H, dh).transpose(1, 2) * (dh**-0.5)
        k = F.linear(x, wk, bk).view(B, L, H, dh).transpose(1, 2)
        v = F.linear(x, wv, bv).view(B, L, H, dh).transpose(1, 2)
        allowed = key_mask[:, None, None, :]
        if self.causal:
            allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        logits = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf"))
        if pad_count is None:
            probs = torch.softmax(logits, -1).nan_to_num(0.0)  # a row with no key attends to nothing
            probs = dropout(probs, self.p, self.training)
            out = probs @ v
        else:
            out = self._attend_with_padding(q, v, logits, pad_count, bk.view(H, dh), bv.view(H, dh))
        return self.out_proj(out.transpose(1, 2).reshape(B, L, d))

    def _attend_with_padding(
        self, q: Tensor, v: Tensor, logits: Tensor, pad_count: Tensor, pad_key: Tensor, pad_value: Tensor
    ) -> Tensor:
        n = pad_count.to(q.dtype)[:, None, None]  # (B,1,1)
        pad_logit = (q * pad_key[None, :, None, :]).sum(-1)  # (B,H,L)
        pad_logit = torch.where(n > 0, pad_logit + torch.log(n.clamp_min(1.0)), torch.full_like(pad_logit, float("-inf")))
        probs = torch.softmax(torch.cat([logits, pad_logit.unsqueeze(-1)], -1), -1)
        real, pad_w = probs[..., :-1], probs[..., -1]
        if self.training and self.p > 0:
            real = dropout(real, self.p, True)
            counts = n.expand_as(pad_w).contiguous()
            kept = torch.binomial(counts, torch.full_like(counts, 1.0 - self.p))
            pad_w = pad_w * kept / (counts * (1.0 - self.p)).clamp_min(1e-12)
        return real @ v + pad_w.unsqueeze(-1) * pad_value[None, :, None, :]


class PointWiseFeedForward(nn.Module):
    """x + Dropout(W2 ReLU(Dropout(W1 x))) — the official 1x1-conv FFN written with Linear layers."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout2(self.fc2(torch.relu(self.dropout1(self.fc1(x)))))


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
        self.attentions = nn.ModuleList(PaddedSelfAttention(hidden, heads, dropout, causal) for _ in range(layers))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(layers))
        self.ffns = nn.ModuleList(PointWiseFeedForward(hidden, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-8)

    def forward(self, x: Tensor, mask: Tensor, pad_count: Tensor | None = None, **_: object) -> Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = x * keep
        for attn_norm, attn, ffn_norm, ffn in zip(self.attention_norms, self.attentions, self.ffn_norms, self.ffns):
            q = attn_norm(x)
            x = q + attn(q, x, mask, pad_count)
            x = ffn(ffn_norm(x)) * keep
        return self.final_norm(x)


__all__ = ["SASRecEncoder", "PaddedSelfAttention", "PointWiseFeedForward"]
