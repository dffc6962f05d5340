"""A side-by-side reference with the official LLM-ESR code's *cost structure*, for speed comparisons only.

It does the same arithmetic the official implementation does per training step — every sequence padded to
max_len = 200, a per-sample Python loop building the batch (the official Dataset.__getitem__ + default
collate), nn.MultiheadAttention over all 200 keys, the 1536 -> 768 -> 64 adapter applied to every token, ten
teacher sequences per user run with an autograd graph and then detached, torch's own dropout — so the two can
be timed on the same machine in one run. It is written from the documented behaviour (shared/reference), not
copied, and is not used by esrkit itself. Its outputs are not checked here (tests/models/test_fidelity.py
checks esrkit against an independent padded reference).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _FFN(nn.Module):
    def __init__(self, d: int, p: float) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(d, d, 1), nn.Conv1d(d, d, 1)
        self.d1, self.d2 = nn.Dropout(p), nn.Dropout(p)

    def forward(self, x):
        y = self.d2(self.c2(torch.relu(self.d1(self.c1(x.transpose(-1, -2))))))
        return y.transpose(-1, -2) + x


class _SASRecBlock(nn.Module):
    def __init__(self, d: int, layers: int = 2, p: float = 0.5) -> None:
        super().__init__()
        self.ln_a = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(layers))
        self.mha = nn.ModuleList(nn.MultiheadAttention(d, 1, p) for _ in range(layers))
        self.ln_f = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(layers))
        self.ffn = nn.ModuleList(_FFN(d, p) for _ in range(layers))
        self.last = nn.LayerNorm(d, eps=1e-8)

    def forward(self, x, tokens):
        keep = ~(tokens == 0).unsqueeze(-1)
        x = x * keep
        for i in range(len(self.mha)):
            s = x.transpose(0, 1)
            q = self.ln_a[i](s)
            out, _ = self.mha[i](q, s, s)
            x = (q + out).transpose(0, 1)
            x = self.ffn[i](self.ln_f[i](x)) * keep
        return self.last(x)


class _GRUBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.gru = nn.GRU(d, d, bias=False, batch_first=True)

    def forward(self, x, tokens):
        return self.gru(x)[0]


class _CrossAttention(nn.Module):
    def __init__(self, d: int, heads: int = 2) -> None:
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.o = nn.Linear(d, d)

    def forward(self, x, y, tokens):
        B, L, d = x.shape
        q = self.q(x).view(B, L, self.h, self.dh).transpose(1, 2)
        k = self.k(y).view(B, L, self.h, self.dh).transpose(1, 2)
        v = self.v(y).view(B, L, self.h, self.dh).transpose(1, 2)
        mask = (tokens == 0).unsqueeze(1).repeat(1, L, 1).unsqueeze(1)
        a = torch.softmax((q @ k.transpose(-1, -2)).masked_fill(mask, -1e9) / math.sqrt(self.dh), -1) @ v
        return self.o(a.transpose(1, 2).reshape(B, L, d))


class OfficialStyleLLMESR(nn.Module):
    """Dual-view LLM-ESR with the official computation layout (padded, per-token adapter)."""

    def __init__(
        self, llm: np.ndarray, pca: np.ndarray, backbone: str, d: int = 64, max_len: int = 200
    ) -> None:
        super().__init__()

        def z(a):  # the padding row and the [MASK] row around the table, as the official models add them
            return np.concatenate([np.zeros((1, a.shape[1])), a, np.zeros((1, a.shape[1]))]).astype(
                np.float32
            )

        self.llm = nn.Embedding.from_pretrained(torch.as_tensor(z(llm)), freeze=True)
        self.idt = nn.Embedding.from_pretrained(torch.as_tensor(z(pca)), freeze=False)
        self.adapter = nn.Sequential(
            nn.Linear(llm.shape[1], llm.shape[1] // 2), nn.Linear(llm.shape[1] // 2, d)
        )
        self.pos = nn.Embedding(max_len + 100, d)
        self.drop = nn.Dropout(0.5)
        self.llm2id, self.id2llm = _CrossAttention(d), _CrossAttention(d)
        self.backbone = backbone
        self.enc = _GRUBlock(d) if backbone == "gru4rec" else _SASRecBlock(d)
        self.d = d

    def log2feats(self, tokens, positions):
        ids = self.idt(tokens)
        llm = self.adapter(self.llm(tokens))
        if self.backbone != "gru4rec":
            ids = self.drop(ids * self.d**0.5 + self.pos(positions))
            llm = self.drop(llm * self.d**0.5 + self.pos(positions))
        co = self.llm2id(llm, ids, tokens)
        se = self.id2llm(ids, llm, tokens)
        return torch.cat([self.enc(co, tokens), self.enc(se, tokens)], -1)

    def item(self, ids):
        return torch.cat([self.idt(ids), self.adapter(self.llm(ids))], -1)


def _pad_left(seq: list[int], L: int) -> tuple[np.ndarray, np.ndarray]:
    seq = seq[-L:]
    out = np.zeros(L, dtype=np.int64)
    pos = np.zeros(L, dtype=np.int64)
    if seq:
        out[-len(seq) :] = seq
        pos[-len(seq) :] = np.arange(1, len(seq) + 1)
    return out, pos


def official_style_batch(
    train: list[list[int]],
    users: np.ndarray,
    sim: np.ndarray,
    n_items: int,
    backbone: str,
    rng: np.random.Generator,
    L: int = 200,
    mask_prob: float = 0.6,
) -> dict:
    """Per-sample Python loops, as the official Dataset.__getitem__ (plus default collation)."""
    rows = {"seq": [], "pos": [], "neg": [], "positions": [], "sim_seq": [], "sim_positions": []}
    for u in users:
        inter = train[u]
        non = set(inter)
        if backbone == "sasrec":
            seq, positions = _pad_left(inter[:-1], L)
            pos, _ = _pad_left(inter[1:], L)
            neg = np.zeros(L, dtype=np.int64)
            for j in range(L):
                if pos[j]:
                    t = rng.integers(1, n_items + 1)
                    while t in non:
                        t = rng.integers(1, n_items + 1)
                    neg[j] = t
        elif backbone == "bert4rec":
            toks, labels, negs = [], [], []
            for s in inter:
                if rng.random() < mask_prob:
                    toks.append(n_items + 1)
                    labels.append(s)
                    t = rng.integers(1, n_items + 1)
                    while t in non:
                        t = rng.integers(1, n_items + 1)
                    negs.append(t)
                else:
                    toks.append(s)
                    labels.append(0)
                    negs.append(0)
            seq, positions = _pad_left(toks, L)
            pos, _ = _pad_left(labels, L)
            neg, _ = _pad_left(negs, L)
        else:
            seq, positions = _pad_left(inter[:-1], L)
            pos = np.array([inter[-1]])
            t = rng.integers(1, n_items + 1)
            while t in non:
                t = rng.integers(1, n_items + 1)
            neg = np.array([t])
        ss, sp = zip(*[_pad_left(train[v][:-1], L) for v in sim[u]])
        for k, v in zip(
            ("seq", "pos", "neg", "positions", "sim_seq", "sim_positions"),
            (seq, pos, neg, positions, np.stack(ss), np.stack(sp)),
        ):
            rows[k].append(v)
    return {k: torch.as_tensor(np.stack(v)) for k, v in rows.items()}


def official_style_step(
    model: OfficialStyleLLMESR, opt: torch.optim.Optimizer, batch: dict, alpha: float = 0.1
) -> float:
    seq, positions, pos, neg = batch["seq"], batch["positions"], batch["pos"], batch["neg"]
    feats = model.log2feats(seq, positions)
    if model.backbone == "gru4rec":
        u = feats[:, -1]
        pl = (u * model.item(pos[:, 0])).sum(-1)
        nl = (u * model.item(neg[:, 0])).sum(-1)
        loss = F.binary_cross_entropy_with_logits(
            pl, torch.ones_like(pl)
        ) + F.binary_cross_entropy_with_logits(nl, torch.zeros_like(nl))
    else:
        idx = pos != 0
        pl = (feats * model.item(pos)).sum(-1)[idx]
        nl = (feats * model.item(neg)).sum(-1)[idx]
        loss = F.binary_cross_entropy_with_logits(
            pl, torch.ones_like(pl)
        ) + F.binary_cross_entropy_with_logits(nl, torch.zeros_like(nl))
    student = model.log2feats(seq, positions)[:, -1]  # the second forward pass
    B, N, L = batch["sim_seq"].shape
    teacher = model.log2feats(batch["sim_seq"].view(-1, L), batch["sim_positions"].view(-1, L))[:, -1]
    teacher = teacher.detach().view(B, N, -1).mean(1)  # graph built, then detached (official)
    loss = loss + alpha * F.mse_loss(student, teacher)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)
