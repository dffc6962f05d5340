"""MELT (Kim et al., SIGIR 2023): mutual enhancement of long-tailed users and items, over any backbone.

Bilateral branches on top of a trained backbone (official ``models/MELT_SASRec.py``):

* **user branch** ``W_U``: head users' full training sequences teach their own recent sub-sequences
  (``||W_U f(S_few) - f(S_full)||^2``, curriculum weight ``w_u``), so ``W_U`` learns what a short history
  misses; at inference a *tail* user's representation becomes ``f(S) + W_U f(S)``; head users are untouched;
* **item branch** ``W_I``: a head item's embedding is reconstructed from a few of its contexts (sequences that
  end in it), each enhanced by the user branch (``f(c) + W_U f(c)``) and averaged (curriculum weight ``w_i``);
  at the start of every epoch every *tail* item's embedding is overwritten with ``W_I`` of the mean of all its
  contexts (plain backbone), then trains on;
* total loss = ranking loss + ``lamb_u`` * user loss + ``lamb_i`` * item loss.

Head/tail follow the official Pareto split of the *training* parts: a user is tail when its length is <= the
``pareto`` quantile of lengths, an item is tail when its training count is <= the ``pareto - 0.02`` quantile
of the counts of trained items. Stage 1 trains the backbone (the official code loads a pretrained SASRec), see
``BackboneFirst``; the curriculum clock counts stage-2 epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.data.tensors import SeqInput
from esrkit.models.base import MODELS
from esrkit.models.baselines.common import (
    BackboneFirst,
    TrainParts,
    batches_per_epoch,
    long_tensor,
    read_options,
    sequence_representation,
    token_chunks,
)
from esrkit.models.idrec import IDRecommender, common_options
from esrkit.models.recommender import ModelAssets


@dataclass
class MeltOptions:
    """``model.extra.melt``. Defaults: the official README's MELT+SASRec Beauty row (argparse: 0.2 / 0.3 /
    0.8)."""

    lamb_u: float = 0.1  # user-branch weight
    lamb_i: float = 0.4  # item-branch weight
    e_max: int = 180  # the curriculum's epoch scale
    pareto: float = (
        0.8  # users (items: pareto - 0.02) above this quantile are head; "Amazon: 0.8, Others: 0.5"
    )
    pretrain_epochs: int = 200  # stage-1 cap (esrkit); 0 = no backbone stage
    pretrain_patience: int = 10  # switch when validation has not improved this long (esrkit); 0 = cap only


@dataclass
class _EpochPlan:
    """This epoch's order of head users and head items, consumed chunk by chunk (the official side
    loaders)."""

    users: Tensor
    items: Tensor
    user_chunk: int
    item_chunk: int
    step: int = 0


@MODELS.register("melt")
class MELT(BackboneFirst, IDRecommender):
    _parts: TrainParts | None = None
    _plan: _EpochPlan | None = None

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> MELT:
        return cls(
            n_items, options=read_options(MeltOptions, cfg, "melt"), max_len=max_len, **common_options(cfg)
        )

    def __init__(self, n_items: int, options: MeltOptions | None = None, **backbone) -> None:
        super().__init__(n_items, **backbone)
        self.options = o = options or MeltOptions()
        if not 0.02 < o.pareto < 1.0 or o.e_max < 1:
            raise ValueError(f"MELT: pareto must be in (0.02, 1) and e_max >= 1, got {o}")
        self.init_stages(o.pretrain_epochs, o.pretrain_patience)
        self.user_transfer = nn.Linear(self.hidden, self.hidden)  # W_U
        self.item_inference = nn.Linear(self.hidden, self.hidden)  # W_I
        nn.init.xavier_normal_(self.user_transfer.weight)
        nn.init.xavier_normal_(self.item_inference.weight)
        # saved with checkpoints: inference needs to know who is a tail user without ``setup``
        self.register_buffer("user_threshold", torch.tensor(0.0))
        self.item_threshold = 0.0

    # ------------------------------------------------------------------ data
    def setup(self, data) -> None:
        """Pareto head/tail splits and item contexts from the training parts (official ``split_head_tail`` and
        ``save_user_item_context``)."""
        parts = TrainParts(data, self.device)
        self._parts = parts
        user_thr = float(np.quantile(parts.lengths_np, self.options.pareto))
        self.user_threshold.fill_(user_thr)
        self.head_users = torch.as_tensor(np.nonzero(parts.lengths_np > user_thr)[0], device=self.device)
        counts = parts.item_counts(self.n_items)
        trained = counts[1:][counts[1:] > 0]
        self.item_threshold = float(np.quantile(trained, self.options.pareto - 0.02)) if len(trained) else 0.0
        self.item_counts = torch.as_tensor(counts, device=self.device)
        ids = np.arange(self.n_items + 1)
        self.head_items = torch.as_tensor(ids[counts > self.item_threshold], device=self.device)
        first, count, step, owner = _melt_contexts(parts, self.max_len)
        order = np.argsort(owner, kind="stable")
        per_item = np.bincount(owner, minlength=self.n_items + 1)[: self.n_items + 1]
        ptr = np.zeros(self.n_items + 2, dtype=np.int64)
        np.cumsum(per_item, out=ptr[1:])
        self.ctx_ptr, self.ctx_first, self.ctx_count, self.ctx_step = (
            long_tensor(a, self.device) for a in (ptr, first[order], count[order], step[order])
        )
        self.tail_items = torch.as_tensor(
            ids[(counts <= self.item_threshold) & (per_item > 0) & (ids > 0)], device=self.device
        )
        if len(self.head_users) == 0 or len(self.head_items) == 0:
            raise ValueError(
                "MELT: no head user or head item under this Pareto split; lower model.extra.melt.pareto"
            )

    # ------------------------------------------------------------------ prediction
    def encode(self, inp: SeqInput) -> Tensor:
        """The backbone; in evaluation after stage 2 began, tail users' last position gets ``+ W_U(.)``."""
        out = self.backbone_encode(inp)
        if self.training or not self.baseline_active:
            return out
        real = (inp.tokens != 0) & (inp.tokens != self.mask_token)
        tail = real.sum(1) <= self.user_threshold
        last = out[:, -1]
        enhanced = torch.where(tail.unsqueeze(1), last + self.user_transfer(last), last)
        return torch.cat([out[:, :-1], enhanced.unsqueeze(1)], 1)

    def backbone_encode(self, inp: SeqInput) -> Tensor:
        return IDRecommender.encode(self, inp)

    def represent(self, tokens: Tensor) -> Tensor:
        """The official ``user_representation``: the plain backbone's prediction representation of windows."""
        return sequence_representation(
            self.backbone_encode, tokens, self.max_len, self.objective, self.mask_token
        )

    # ------------------------------------------------------------------ training hooks
    def on_epoch_start(self, ctx) -> None:
        self.advance_stage(ctx)
        if not self.baseline_active:
            return
        self.plan_epoch(batches_per_epoch(ctx), ctx.generator)
        self.update_tail_items()

    def training_loss(self, batch, ctx) -> dict[str, Tensor] | None:
        if not self.baseline_active:
            return None
        rank = ctx.ranking_loss(batch)
        users, items = self._next_chunks(ctx.generator)
        epoch = self.baseline_epoch(ctx.epoch)
        user_loss = self.user_branch_loss(users, epoch, ctx.generator)
        item_loss = self.item_branch_loss(items, epoch, ctx.generator)
        loss = rank + self.options.lamb_u * user_loss + self.options.lamb_i * item_loss
        return {"loss": loss, "rank": rank, "user_branch": user_loss, "item_branch": item_loss}

    def plan_epoch(self, n_batches: int, generator: torch.Generator | None = None) -> None:
        """Shuffle head users and items; chunk sizes so one epoch visits each once (official side loaders)."""
        self._require_setup()
        dev = self.device
        users = self.head_users[torch.randperm(len(self.head_users), generator=generator, device=dev)]
        items = self.head_items[torch.randperm(len(self.head_items), generator=generator, device=dev)]
        steps = max(1, n_batches - 1)
        self._plan = _EpochPlan(users, items, len(users) // steps + 1, len(items) // steps + 1)

    def _next_chunks(self, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        if self._plan is None:
            self.plan_epoch(1, generator)
        p = self._plan
        assert p is not None
        users = _cyclic_chunk(p.users, min(p.user_chunk, len(p.users)), p.step)
        items = _cyclic_chunk(p.items, min(p.item_chunk, len(p.items)), p.step)
        p.step += 1
        return users, items

    # ------------------------------------------------------------------ user branch
    def user_branch_loss(self, users: Tensor, epoch: int, generator: torch.Generator | None = None) -> Tensor:
        """Head users only: ``mean(w_u * (W_U f(last R items) - f(full))^2)``, R ~ U{1..floor(thr) - 1}."""
        parts = self._require_setup()
        thr = float(self.user_threshold)
        full = parts.user_windows(users, self.max_len)
        length = (full != 0).sum(1)
        high = max(2, int(thr))  # numpy's randint(1, thr) of the official code
        recent = torch.randint(1, high, (len(users),), generator=generator, device=self.device)
        col = torch.arange(full.shape[1], device=self.device).unsqueeze(0)
        few = torch.where(col >= full.shape[1] - recent.unsqueeze(1), full, torch.zeros_like(full))
        full_rep, few_rep = self.represent(full), self.represent(few)
        weight = self.user_weight(length.to(full_rep.dtype), epoch)
        return (weight.unsqueeze(1) * (self.user_transfer(few_rep) - full_rep) ** 2).mean()

    def user_weight(self, length: Tensor, epoch: int) -> Tensor:
        """Curriculum ``|sin(pi/2 * e/e_max + pi / (2 (L_max - thr - 1)) * (n - thr - 1))|``."""
        thr = float(self.user_threshold)
        scale = math.pi / (2 * max(self.max_len - thr - 1, 1.0))
        return torch.abs(torch.sin(math.pi / 2 * epoch / self.options.e_max + scale * (length - thr - 1)))

    # ------------------------------------------------------------------ item branch
    def item_branch_loss(self, items: Tensor, epoch: int, generator: torch.Generator | None = None) -> Tensor:
        """Head items: a few distinct contexts each (n ~ U{1..min(#contexts, thr)}), enhanced by the user
        branch and averaged, reconstruct the item embedding through ``W_I`` (official weighting: ``(w_i *
        diff)^2``)."""
        self._require_setup()
        dev = self.device
        start = self.ctx_ptr[items]
        available = self.ctx_ptr[items + 1] - start
        cap = torch.clamp(
            torch.minimum(available, torch.full_like(available, int(self.item_threshold))), min=1
        )
        wanted = 1 + (torch.rand(len(items), generator=generator, device=dev) * cap).long().clamp(max=cap - 1)
        owner, local = _distinct_sample(available, wanted, generator)
        rows = start[owner] + local
        reps = self.represent(self._context_windows(rows))
        reps = reps + self.user_transfer(reps)  # knowledge transfer from the user branch
        mean = _mean_by_owner(reps, owner, len(items))
        target = self.items(items)
        weight = self.item_weight(items, epoch)
        return ((weight.unsqueeze(1) * (self.item_inference(mean) - target)) ** 2).mean()

    def item_weight(self, items: Tensor, epoch: int) -> Tensor:
        """Curriculum ``|sin(pi/2 * e/e_max + pi/100 * (min(n_ctx, thr + 50) - thr - 1))|``."""
        thr = self.item_threshold
        n_ctx = torch.clamp(self.item_counts[items].float(), max=thr + 50)
        return torch.abs(
            torch.sin(math.pi / 2 * epoch / self.options.e_max + math.pi / 100 * (n_ctx - thr - 1))
        )

    @torch.no_grad()
    def update_tail_items(self, budget: int = 65_536) -> None:
        """Official ``update_tail_item_representation``: tail item embedding := W_I(mean of its contexts)."""
        self._require_setup()
        if len(self.tail_items) == 0:
            return
        was = self.training
        self.eval()
        start = self.ctx_ptr[self.tail_items]
        available = self.ctx_ptr[self.tail_items + 1] - start
        owner = torch.repeat_interleave(torch.arange(len(self.tail_items), device=self.device), available)
        rows = (
            start[owner]
            + torch.arange(len(owner), device=self.device)
            - torch.repeat_interleave(torch.cumsum(available, 0) - available, available)
        )
        order = torch.argsort(self.ctx_count[rows], stable=True)  # similar lengths together: little padding
        sums = torch.zeros(len(self.tail_items), self.hidden, device=self.device)
        for part in token_chunks(self.ctx_count[rows[order]], budget):
            picked = order[part]
            sums.index_add_(0, owner[picked], self.represent(self._context_windows(rows[picked])))
        mean = sums / available.unsqueeze(1).to(sums.dtype)
        self.items.weight[self.tail_items] = self.item_inference(mean)
        self.train(was)

    # ------------------------------------------------------------------ helpers
    def _context_windows(self, rows: Tensor) -> Tensor:
        parts = self._require_setup()
        count = self.ctx_count[rows]
        width = max(1, int(count.max().item())) if len(rows) else 1
        return parts.windows(self.ctx_first[rows], count, self.ctx_step[rows], width)

    def _require_setup(self) -> TrainParts:
        if self._parts is None:
            raise RuntimeError("MELT needs setup(data) before training")
        return self._parts


def _melt_contexts(parts: TrainParts, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per training occurrence of item i at position p: the prefix ending in i, and (parts longer than one)
    the suffix from i read backwards so that i is last (official ``item_context``). Returns first, count, step
    and the owning item of every context."""
    slot = np.arange(len(parts.items_np), dtype=np.int64)
    pos, n = parts.position_np, parts.lengths_np[parts.user_np]
    prefix_count = np.minimum(pos + 1, max_len)
    both = n > 1
    suffix_count = np.minimum(n - pos, max_len)[both]
    first = np.concatenate([slot - prefix_count + 1, slot[both] + suffix_count - 1])
    count = np.concatenate([prefix_count, suffix_count])
    step = np.concatenate([np.ones(len(slot), np.int64), -np.ones(int(both.sum()), np.int64)])
    owner = np.concatenate([parts.items_np, parts.items_np[both]])
    return first, count, step, owner


def _cyclic_chunk(order: Tensor, size: int, step: int) -> Tensor:
    """Chunk ``step`` of ``order``, wrapping around when an epoch has more steps than chunks."""
    return order[(step * size + torch.arange(size, device=order.device)) % len(order)]


def _distinct_sample(
    available: Tensor, wanted: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """For each group g, ``wanted[g]`` distinct local indices in [0, available[g]): (owner, local) pairs."""
    dev = available.device
    owner = torch.repeat_interleave(torch.arange(len(available), device=dev), available)
    within = torch.arange(len(owner), device=dev) - torch.repeat_interleave(
        torch.cumsum(available, 0) - available, available
    )
    # a random order inside each group; groups stay contiguous and in place, so ``within`` is also the rank
    keys = owner.double() + torch.rand(len(owner), generator=generator, device=dev, dtype=torch.float64) * 0.5
    order = torch.argsort(keys)
    chosen = order[within < wanted[owner]]
    return owner[chosen], within[chosen]


def _mean_by_owner(values: Tensor, owner: Tensor, n: int) -> Tensor:
    sums = values.new_zeros(n, values.shape[1]).index_add(0, owner, values)
    counts = torch.bincount(owner, minlength=n).clamp(min=1).to(values.dtype)
    return sums / counts.unsqueeze(1)
