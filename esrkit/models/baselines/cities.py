"""CITIES (Jang et al., ICDM 2020): contextual inference of tail-item embeddings, over any backbone.

Tail items get poor embeddings because they are seen too rarely. CITIES learns an *embedding-inference
function* on head items, whose embeddings are trustworthy: given a few contexts an item occurs in (the items
around it in users' sequences, the item itself masked), predict the item's embedding. At inference the
function, fed with all the contexts of each tail item, replaces that tail item's embedding; head items keep
theirs.

Two stages inside esrkit's one training loop (see ``BackboneFirst``): the plain backbone trains first; then
the backbone is frozen and only the inference function trains, on head items, with the official MSE objective.
While stage 2 is evaluated (every validation, the final test) the backbone sees the item table with tail rows
replaced.

The inference function follows the official ``Model``: frozen item embeddings of a context ``[left 24, MASK,
right 24]`` -> learned per-position weights -> sinusoidal positions -> a transformer "context interpreter" ->
masked mean per context -> a transformer "context aggregator" over the K contexts -> mean -> linear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esrkit.data.tensors import SeqInput
from esrkit.models.base import MODELS, Dropout
from esrkit.models.baselines.common import BackboneFirst, TrainParts, long_tensor, read_options, token_chunks
from esrkit.models.idrec import IDRecommender, common_options
from esrkit.models.recommender import ModelAssets, insert_item_rows


@dataclass
class CitiesOptions:
    """``model.extra.cities``. Defaults are the official ``config.py`` unless noted."""

    tail_threshold: int = 5  # FREQ_LBOUND: items with <= this many training interactions are tail (inferred)
    context_len: int = 24  # MAX_LEN: items taken on each side of the masked item
    max_shots: int = 10  # MAX_N_SHOT: a training step gives each head item K ~ U{1..max_shots} contexts
    item_batch: int = 128  # TRAIN_BATCH_SIZE: head items per training step
    heads: int = 4  # N_HEAD
    layers: int = 2  # N_LAYER, for the interpreter and for the aggregator
    dropout: float = 0.2  # ffn/residual/positional dropout (official attention dropout: 0.5)
    pretrain_epochs: int = 200  # stage-1 cap (esrkit); 0 = no backbone stage
    pretrain_patience: int = 10  # switch when validation has not improved this long (esrkit); 0 = cap only


class ContextLayer(nn.Module):
    """One post-norm transformer block (the official ``EncoderLayer``): x = LN(x + attn), x = LN(x + ffn)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.ReLU(), Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )
        self.norm1, self.norm2 = nn.LayerNorm(hidden, eps=1e-6), nn.LayerNorm(hidden, eps=1e-6)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, padding: Tensor | None = None) -> Tensor:
        att, _ = self.attention(x, x, x, key_padding_mask=padding, need_weights=False)
        x = self.norm1(x + self.dropout(att))
        return self.norm2(x + self.dropout(self.ffn(x)))


class EmbeddingInference(nn.Module):
    """Contexts (B, K, 2C+1 item vectors with the centre masked) -> one inferred item embedding (B, D)."""

    def __init__(
        self, hidden: int, context_len: int, heads: int = 4, layers: int = 2, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(
                f"CITIES: hidden size {hidden} is not divisible by {heads} heads (model.extra.cities.heads)"
            )
        width = 2 * context_len + 1
        self.context_len = context_len
        self.mask_vector = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))  # stands for the hidden item
        self.position_weights = nn.Parameter(torch.ones(width))  # the official PositionalAttention
        self.register_buffer("sinusoid", _sinusoid(width, hidden) / math.sqrt(hidden), persistent=False)
        self.input_dropout = Dropout(dropout)
        self.interpreter = nn.ModuleList(ContextLayer(hidden, heads, dropout) for _ in range(layers))
        self.aggregator = nn.ModuleList(ContextLayer(hidden, heads, dropout) for _ in range(layers))
        self.out = nn.Linear(hidden, hidden)

    def forward(self, left: Tensor, right: Tensor, table: Tensor) -> Tensor:
        """``left``/``right``: (B, K, C) item ids (0 = padding) before/after the hidden item; ``table``: the
        (frozen) item embeddings."""
        B, K, C = left.shape
        # drop the outer columns that are padding in every row: exact (padding is masked and left out of the
        # mean) and much cheaper for short sequences; positions keep their place in the official 2C+1 layout
        n_left, n_right = _used_width(left, from_right=True), _used_width(right, from_right=False)
        left, right = left[..., C - n_left :], right[..., :n_right]
        tokens = torch.cat([left, left.new_ones(B, K, 1), right], -1).view(B * K, n_left + 1 + n_right)
        x = F.embedding(tokens, table)
        centre = torch.zeros_like(tokens, dtype=torch.bool)
        centre[:, n_left] = True  # token 1 there is only a placeholder: the centre is never padding
        x = torch.where(centre.unsqueeze(-1), self.mask_vector.expand_as(x), x)
        cols = slice(C - n_left, C + 1 + n_right)
        x = self.input_dropout(x * self.position_weights[cols].unsqueeze(-1) + self.sinusoid[cols])
        padding = tokens == 0
        for layer in self.interpreter:
            x = layer(x, padding)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        contexts = ((x * keep).sum(1) / keep.sum(1)).view(B, K, -1)
        for layer in self.aggregator:
            contexts = layer(contexts)
        return self.out(contexts.mean(1))


def _used_width(tokens: Tensor, from_right: bool) -> int:
    """Columns of (..., C) right-aligned (``from_right``) or left-aligned tokens that hold an item in some
    row."""
    used = (tokens != 0).reshape(-1, tokens.shape[-1]).any(0)
    if not bool(used.any()):
        return 0
    idx = torch.nonzero(used).squeeze(1)
    return int(tokens.shape[-1] - idx.min().item()) if from_right else int(idx.max().item() + 1)


def _sinusoid(length: int, dim: int) -> Tensor:
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return table


@dataclass
class ItemContexts:
    """Every context of the items that have one, grouped by item (CSR on the device)."""

    ptr: Tensor  # (n_items + 3,) contexts of item i are rows ptr[i]:ptr[i+1]
    slot: Tensor  # (n,) flat index (in TrainParts) of the hidden item
    left: Tensor  # (n,) items available before it (<= context_len)
    right: Tensor  # (n,) items available after it (<= context_len)


@MODELS.register("cities")
class CITIES(BackboneFirst, IDRecommender):
    """A backbone whose tail-item embeddings are inferred from their contexts (stage 2)."""

    _stale = False  # the inference function changed since ``inferred`` was computed
    _contexts: ItemContexts | None = None
    _parts: TrainParts | None = None

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> CITIES:
        return cls(
            n_items,
            options=read_options(CitiesOptions, cfg, "cities"),
            max_len=max_len,
            **common_options(cfg),
        )

    def __init__(self, n_items: int, options: CitiesOptions | None = None, **backbone) -> None:
        super().__init__(n_items, **backbone)
        self.options = o = options or CitiesOptions()
        if o.tail_threshold < 0 or o.context_len < 1 or o.max_shots < 1 or o.item_batch < 1:
            raise ValueError(f"CITIES: invalid options {o}")
        self.init_stages(o.pretrain_epochs, o.pretrain_patience)
        self.inference = EmbeddingInference(self.hidden, o.context_len, o.heads, o.layers, o.dropout)
        # the inference result travels with checkpoints, so a reloaded model predicts without ``setup``
        self.register_buffer("is_tail", torch.zeros(n_items + 2, dtype=torch.bool))
        self.register_buffer("inferred", torch.zeros(n_items + 2, self.hidden))

    # ------------------------------------------------------------------ data
    def setup(self, data) -> None:
        """Head/tail split and every item's contexts, from the training parts."""
        parts = TrainParts(data, self.device)
        counts = parts.item_counts(self.n_items)
        self._parts = parts
        self._contexts = _build_contexts(parts, self.n_items, self.options.context_len, self.device)
        has_context = (self._contexts.ptr[1:] - self._contexts.ptr[:-1]).cpu().numpy()[: self.n_items + 1] > 0
        ids = np.arange(self.n_items + 1)
        self.head_items = torch.as_tensor(
            ids[(counts > self.options.tail_threshold) & has_context], device=self.device
        )
        tail = (counts <= self.options.tail_threshold) & has_context & (ids > 0)
        self.tail_items = torch.as_tensor(ids[tail], device=self.device)
        if len(self.head_items) == 0:
            raise ValueError(
                f"CITIES: no head item has more than {self.options.tail_threshold} training "
                "interactions; lower model.extra.cities.tail_threshold"
            )

    # ------------------------------------------------------------------ item side
    def item_table(self) -> Tensor:
        """The backbone's table; while stage 2 is evaluated, tail rows are the inferred embeddings."""
        if self.training or not self.baseline_active:
            return self.items.weight
        return torch.where(self.is_tail.unsqueeze(1), self.inferred, self.items.weight)

    def item_vectors(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.item_table())

    def all_item_vectors(self) -> Tensor:
        return self.item_table()[: self.n_items + 1]

    def add_untrained_items(self, count: int, generator: torch.Generator | None = None) -> None:
        """An item added after training has no context to infer from: it keeps an untrained row."""
        n_items = self.n_items
        super().add_untrained_items(count, generator)
        self.is_tail = insert_item_rows(self.is_tail, self.is_tail.new_zeros(count), n_items)
        self.inferred = insert_item_rows(self.inferred, self.inferred.new_zeros(count, self.hidden), n_items)

    def encode(self, inp: SeqInput) -> Tensor:
        inp, added = self._maybe_leading_pad(self.encoder, inp)
        x = self.inputs(F.embedding(inp.tokens, self.item_table()), inp.positions)
        out = self.encoder(x, inp.mask, **self._encoder_kwargs(inp, shared_pad=True))
        return out[:, 1:] if added else out

    # ------------------------------------------------------------------ training hooks
    def on_epoch_start(self, ctx) -> None:
        if self.advance_stage(ctx):
            self._stale = True

    def training_loss(self, batch, ctx) -> dict[str, Tensor] | None:
        """Stage 1: the backbone's own loss. Stage 2: the official MSE of the inference function on head items
        (the backbone gets no gradient, so Adam leaves it untouched)."""
        if not self.baseline_active:
            return None
        loss = self.inference_loss(ctx.generator)
        self._stale = True
        return {"loss": loss, "cities_mse": loss}

    def inference_loss(self, generator: torch.Generator | None = None) -> Tensor:
        """K ~ U{1..max_shots} contexts (with replacement) for ``item_batch`` random head items; MSE to their
        backbone embeddings."""
        contexts = self._require_contexts()
        o, dev = self.options, self.device
        k = int(torch.randint(1, o.max_shots + 1, (1,), generator=generator, device=dev).item())
        items = self.head_items[
            torch.randint(len(self.head_items), (o.item_batch,), generator=generator, device=dev)
        ]
        start, count = contexts.ptr[items], contexts.ptr[items + 1] - contexts.ptr[items]
        draw = torch.rand(o.item_batch, k, generator=generator, device=dev)
        rows = start.unsqueeze(1) + (draw * count.unsqueeze(1)).long().clamp(max=count.unsqueeze(1) - 1)
        table = self.items.weight.detach()
        left, right = self._context_tokens(rows.reshape(-1))
        pred = self.inference(left.view(o.item_batch, k, -1), right.view(o.item_batch, k, -1), table)
        return F.mse_loss(pred, table[items])

    def train(self, mode: bool = True) -> CITIES:
        """Entering evaluation recomputes the tail embeddings if the inference function changed."""
        super().train(mode)
        if not mode and self._stale and self.baseline_active and self._contexts is not None:
            self._stale = False
            self.refresh_tail_embeddings()
        return self

    @torch.no_grad()
    def refresh_tail_embeddings(self, budget: int = 65_536) -> None:
        """Every tail item with contexts gets the inference of *all* its contexts (grouped by context
        count)."""
        contexts = self._require_contexts()
        was = self.inference.training
        self.inference.eval()
        table = self.items.weight.detach()
        counts = contexts.ptr[self.tail_items + 1] - contexts.ptr[self.tail_items]
        for k in torch.unique(counts).tolist():
            group = self.tail_items[counts == k]
            group_rows = contexts.ptr[group].unsqueeze(1) + torch.arange(k, device=self.device)
            # items with short contexts together, so most chunks drop most padding columns
            width = (contexts.left[group_rows] + contexts.right[group_rows]).amax(1) + 1
            order = torch.argsort(width, stable=True)
            group, group_rows = group[order], group_rows[order]
            for part in token_chunks(width[order] * k, budget):
                items, rows = group[part], group_rows[part]
                left, right = self._context_tokens(rows.reshape(-1))
                n = len(items)
                self.inferred[items] = self.inference(left.view(n, k, -1), right.view(n, k, -1), table)
        self.is_tail.zero_()
        self.is_tail[self.tail_items] = True
        self.inference.train(was)

    # ------------------------------------------------------------------ helpers
    def _require_contexts(self) -> ItemContexts:
        if self._contexts is None or self._parts is None:
            raise RuntimeError("CITIES needs setup(data) before its inference function can train or run")
        return self._contexts

    def _context_tokens(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(n, C) left contexts (right-aligned, 'pre' padding) and right contexts (left-aligned, 'post')."""
        c, parts, C = self._contexts, self._parts, self.options.context_len
        assert c is not None and parts is not None
        slot, left, right = c.slot[rows], c.left[rows], c.right[rows]
        return parts.windows(slot - left, left, 1, C), parts.windows(
            slot + 1, right, 1, C, right_aligned=False
        )


def _build_contexts(parts: TrainParts, n_items: int, context_len: int, device: torch.device) -> ItemContexts:
    """One context per training occurrence whose ±context_len window holds at least 3 items (official
    rule)."""
    part_len = parts.lengths_np[parts.user_np]
    left = np.minimum(parts.position_np, context_len)
    right = np.minimum(part_len - parts.position_np - 1, context_len)
    keep = left + right + 1 > 2
    slots = np.nonzero(keep)[0]
    order = np.argsort(parts.items_np[slots], kind="stable")
    slots = slots[order]
    counts = np.bincount(parts.items_np[slots], minlength=n_items + 2)[: n_items + 2]
    ptr = np.zeros(n_items + 3, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ItemContexts(*(long_tensor(a, device) for a in (ptr, slots, left[slots], right[slots])))
