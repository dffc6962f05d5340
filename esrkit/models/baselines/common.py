"""What the long-tail baselines share: option parsing, the training parts they learn from, the representation
a prediction would use, and the two-stage schedule (backbone first, then the baseline) inside esrkit's one
loop.

Nothing here changes a model's forward pass; it is data preparation and training bookkeeping. What a baseline
needs of the trainer (its ranking loss, the epoch's generator) comes through the ``StepContext`` its hooks
get.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from esrkit.config import build_dataclass
from esrkit.data.tensors import SeqInput, length_buckets, make_input

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- options
def read_options(cls: type, cfg: Any, key: str) -> Any:
    """``model.extra.<key>`` as the dataclass ``cls``: unknown keys are errors, numbers are coerced (the same
    checks as every recipe section: esrkit.config.build_dataclass)."""
    values = dict((getattr(cfg, "extra", None) or {}).get(key, {}) or {})
    return build_dataclass(cls, values, f"model.extra.{key}", what="option")


# ---------------------------------------------------------------------------------------------- training data
def long_tensor(values: np.ndarray, device: torch.device | str) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(values), dtype=torch.long, device=device)


class TrainParts:
    """Every user's training part (``seq[:-2]``) as one flat item array plus offsets, on the model's device.

    The baselines' statistics (head/tail splits, item contexts) come from these parts only, so validation and
    test interactions never leak into training."""

    def __init__(self, data: Any, device: torch.device | str = "cpu") -> None:
        lengths = np.maximum(data.lengths() - 2, 0).astype(np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        within = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        source = np.repeat(np.asarray(data.offsets[:-1], dtype=np.int64), lengths) + within
        self.n_users = len(lengths)
        self.lengths_np = lengths
        self.items_np = np.asarray(data.items, dtype=np.int64)[source]
        self.user_np = np.repeat(np.arange(self.n_users, dtype=np.int64), lengths)  # owner of each flat slot
        self.position_np = within  # 0-based position of each flat slot inside its user's part
        self.device = torch.device(device)
        self.items = torch.as_tensor(self.items_np, device=self.device)
        self.offsets = torch.as_tensor(offsets, device=self.device)
        self.lengths = torch.as_tensor(lengths, device=self.device)

    def item_counts(self, n_items: int) -> np.ndarray:
        """Training interactions per item id (repeats counted), index 0 unused."""
        return np.bincount(self.items_np, minlength=n_items + 1)[: n_items + 1].astype(np.int64)

    def windows(
        self, first: Tensor, count: Tensor, step: Tensor | int, width: int, right_aligned: bool = True
    ) -> Tensor:
        """(n, width) tokens: row r holds ``items[first[r] + step[r] * k]`` for k < count[r], right- or
        left-aligned, 0 elsewhere. ``step`` = -1 reads a part backwards."""
        col = torch.arange(width, device=self.device).unsqueeze(0)
        count = count.unsqueeze(1)
        k = col - (width - count) if right_aligned else col.expand(len(first), -1)
        valid = (k >= 0) & (k < count)
        step_t = step.unsqueeze(1) if isinstance(step, Tensor) else step
        idx = torch.where(valid, first.unsqueeze(1) + step_t * k, torch.zeros_like(k))
        return torch.where(valid, self.items[idx], torch.zeros_like(idx))

    def user_windows(self, users: Tensor, keep: int) -> Tensor:
        """The last ``keep`` items of each user's training part, right-aligned (the official
        ``user_context``)."""
        count = torch.clamp(self.lengths[users], max=keep)
        first = self.offsets[users] + self.lengths[users] - count
        width = max(1, int(count.max().item())) if len(users) else 1
        return self.windows(first, count, 1, width)


# ----------------------------------------------------------------------------------------------
# representations
def prediction_layout(tokens: Tensor, max_len: int, objective: str, mask_token: int) -> SeqInput:
    """Right-aligned item windows -> the input a prediction would see: BERT4Rec (cloze) appends [MASK] and
    keeps ``max_len - 1`` items, every other backbone keeps the last ``max_len`` items."""
    if objective == "cloze":
        kept = tokens[:, -(max_len - 1) :] if max_len > 1 else tokens[:, :0]
        tokens = torch.cat([kept, torch.full_like(tokens[:, :1], mask_token)], 1)
    else:
        tokens = tokens[:, -max_len:]
    return make_input(tokens, max_len)


def sequence_representation(
    encode: Callable[[SeqInput], Tensor],
    tokens: Tensor,
    max_len: int,
    objective: str,
    mask_token: int,
    n_buckets: int = 4,
) -> Tensor:
    """(n, D): the user representation a prediction would use for each window (its last position), encoded in
    a few length buckets so short windows are not padded to the longest (exact: rows are independent)."""
    inp = prediction_layout(tokens, max_len, objective, mask_token)
    lengths = inp.mask.sum(1)
    lengths_np = lengths.cpu().numpy()
    out: Tensor | None = None
    for rows_np in length_buckets(lengths_np, n_buckets):
        rows = torch.as_tensor(rows_np, device=tokens.device)
        width = max(1, int(lengths_np[rows_np].max()))
        last = encode(inp.rows(rows).last_columns(width))[:, -1]
        if out is None:
            out = last.new_empty(len(tokens), last.shape[-1])
        out = out.index_copy(0, rows, last)  # out of place: keeps autograd happy
    assert out is not None
    return out


# ---------------------------------------------------------------------------------------------- two stages
class BackboneFirst:
    """Mixin for baselines whose official code starts from a *trained* backbone (CITIES, MELT).

    Stage 1 trains the plain backbone with its own ranking loss. Stage 2 (the baseline) starts at the first
    epoch where either ``pretrain_epochs`` epochs have run or validation has not improved for
    ``pretrain_patience`` epochs. At the switch the best stage-1 weights (by validation, kept in memory) are
    restored, Adam's moments are cleared (the official code builds a fresh optimiser) and the trainer's early
    stopping is reset, so the final model is always a stage-2 model selected among stage-2 epochs, as the
    official code selects it.

    ``stage_start`` (a persistent buffer) records the switch epoch, so checkpoints and resumed runs know the
    stage.
    """

    pretrain_epochs: int
    pretrain_patience: int
    stage_start: Tensor

    def init_stages(self, pretrain_epochs: int, pretrain_patience: int) -> None:
        if pretrain_epochs < 0 or pretrain_patience < 0:
            raise ValueError("pretrain_epochs and pretrain_patience must be >= 0")
        self.pretrain_epochs, self.pretrain_patience = pretrain_epochs, pretrain_patience
        self.register_buffer("stage_start", torch.tensor(-1, dtype=torch.long))  # type: ignore[attr-defined]
        self._best_backbone: dict[str, Tensor] | None = None

    @property
    def baseline_active(self) -> bool:
        return int(self.stage_start.item()) >= 0

    def baseline_epoch(self, epoch: int) -> int:
        """Epochs since stage 2 began (the curriculum clock of MELT)."""
        return epoch - int(self.stage_start.item())

    def advance_stage(self, ctx: Any) -> bool:
        """Call from ``on_epoch_start``; True on the epoch stage 2 begins."""
        if self.baseline_active:
            return False
        state = getattr(ctx.trainer, "state", None)
        if state is not None and ctx.epoch > 0 and state.best_epoch == ctx.epoch - 1:
            weights = self.state_dict().items()  # type: ignore[attr-defined]
            self._best_backbone = {k: v.detach().clone() for k, v in weights}
        if not self._backbone_finished(ctx, state):
            if ctx.epoch == getattr(ctx.options, "epochs", 0) - 1:
                log.warning(
                    "%s: the last epoch is still backbone pretraining; the baseline never trains "
                    "(raise train.epochs or lower pretrain_epochs/pretrain_patience)",
                    type(self).__name__,
                )
            return False
        if self._best_backbone is not None:
            self.load_state_dict(self._best_backbone)  # type: ignore[attr-defined]
        elif ctx.epoch > 0:
            log.warning(
                "%s: no in-memory best backbone (resumed run?); stage 2 starts from the current weights",
                type(self).__name__,
            )
        self._best_backbone = None
        self.stage_start.fill_(ctx.epoch)
        _fresh_optimiser_and_stopper(ctx.trainer)
        log.info(
            "%s: backbone pretraining done; the baseline trains from epoch %d", type(self).__name__, ctx.epoch
        )
        return True

    def _backbone_finished(self, ctx: Any, state: Any) -> bool:
        if ctx.epoch >= self.pretrain_epochs:
            return True
        patience = self.pretrain_patience
        trainer_patience = int(getattr(ctx.options, "patience", 0) or 0)
        if patience and trainer_patience > 1:
            patience = min(patience, trainer_patience - 1)  # switch before the trainer would stop
        return bool(patience) and state is not None and state.bad_epochs >= patience


def _fresh_optimiser_and_stopper(trainer: Any) -> None:
    optimizer = getattr(trainer, "optimizer", None)
    if optimizer is not None:
        optimizer.state.clear()
    state = getattr(trainer, "state", None)
    if state is not None:
        state.best_score, state.best_epoch, state.bad_epochs = -math.inf, -1, 0


def batches_per_epoch(ctx: Any) -> int:
    """Steps in a full epoch (MELT sizes its branch batches from it). ``max_batches_per_epoch`` is ignored on
    purpose: it is a smoke-test knob, and a shortened epoch should keep the per-step cost, not cram every head
    user and item into its few steps."""
    n_samples = int(getattr(ctx.trainer, "n_samples", ctx.seqs.n_users))
    return max(1, math.ceil(n_samples / max(1, ctx.options.batch_size)))


def token_chunks(lengths: Tensor, budget: int = 65_536) -> list[slice]:
    """Consecutive slices of rows sorted by ascending length, each about ``budget`` padded tokens."""
    lengths_np = lengths.cpu().numpy()
    chunks, start, n = [], 0, len(lengths_np)
    while start < n:
        end = start + 1
        while end < n and (end - start + 1) * max(1, int(lengths_np[end])) <= budget:
            end += 1
        chunks.append(slice(start, end))
        start = end
    return chunks
