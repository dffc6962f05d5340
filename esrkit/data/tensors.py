"""Sequence tensors: right-aligned item sequences as model inputs, and every user's sequence on a device.

Sequences are right-aligned (the most recent item is last), as in the official LLM-ESR code. Positions count
1..len from the oldest kept item (0 = padding); ``pad_count`` = ``max_len`` - len records the padding the
official fixed-length layout would have had (the encoders use it to reproduce that computation exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from esrkit.data.sequences import SequenceData


@dataclass
class SeqInput:
    """A batch of right-aligned item sequences."""

    tokens: Tensor  # (B, L) long; 0 = padding, n_items + 1 = [MASK]
    positions: Tensor  # (B, L) long; 1..len counted from the oldest kept item, 0 at padding
    pad_count: Tensor  # (B,) long; padding slots of the official fixed max_len layout

    @property
    def mask(self) -> Tensor:
        return self.tokens != 0

    def rows(self, index: Tensor) -> SeqInput:
        return SeqInput(self.tokens[index], self.positions[index], self.pad_count[index])

    def last_columns(self, n: int) -> SeqInput:
        """Keep the last ``n`` columns (sequences are right-aligned, so nothing real is lost if n >= max
        length)."""
        return SeqInput(self.tokens[:, -n:], self.positions[:, -n:], self.pad_count)

    def with_leading_pad(self) -> SeqInput:
        """Prepend one padding column (used by recurrent encoders to read the padding input)."""
        pad = torch.zeros_like(self.tokens[:, :1])
        return SeqInput(torch.cat([pad, self.tokens], 1), torch.cat([pad, self.positions], 1), self.pad_count)


class DeviceSequences:
    """Every user's full sequence on one device, with vectorised prefix gathering and negative sampling."""

    def __init__(self, data: SequenceData, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.n_items = data.n_items
        self.n_users = data.n_users
        self.items = torch.as_tensor(data.items.astype(np.int64), device=self.device)
        self.offsets = torch.as_tensor(data.offsets, device=self.device)
        self.lengths_np = data.lengths().astype(np.int64)
        self.offsets_np = data.offsets

    # ------------------------------------------------------------------ gathering
    def window(self, users: Tensor, prefix: np.ndarray | Tensor, keep: int, min_width: int = 1) -> Tensor:
        """Right-aligned tokens (B, W): the last ``min(prefix, keep)`` items of each user's first ``prefix``
        items."""
        prefix_t = torch.as_tensor(prefix, device=self.device)
        taken = prefix_t.clamp(min=0, max=keep)
        if isinstance(prefix, np.ndarray):  # known on the host: no device synchronisation
            width = max(min_width, int(np.clip(prefix, 0, keep).max()) if len(prefix) else min_width)
        else:
            width = max(min_width, int(taken.max().item()) if len(taken) else min_width)
        col = torch.arange(width, device=self.device).unsqueeze(0)
        lead = (width - taken).unsqueeze(1)
        idx = self.offsets[users].unsqueeze(1) + prefix_t.unsqueeze(1) - taken.unsqueeze(1) + (col - lead)
        valid = col >= lead
        idx = torch.where(valid, idx, torch.zeros_like(idx))
        return torch.where(valid, self.items[idx], torch.zeros_like(idx))

    def train_lengths(self, users: np.ndarray) -> np.ndarray:
        return self.lengths_np[users] - 2

    def train_log_popularity(self) -> Tensor:
        """(n_items,) log of each item's share of the training interactions (every user's sequence minus its
        validation and test items), add-one smoothed so no item has probability 0; row j-1 = item j."""
        train_len = np.clip(self.lengths_np - 2, 0, None)
        starts = self.offsets_np[:-1]
        idx = np.repeat(starts, train_len) + (
            np.arange(train_len.sum()) - np.repeat(np.cumsum(train_len) - train_len, train_len)
        )
        items = self.items.cpu().numpy()[idx]
        counts = np.bincount(items, minlength=self.n_items + 1)[1 : self.n_items + 1].astype(np.float64) + 1.0
        return torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------ negatives
    def sample_negatives(
        self,
        users: Tensor,
        shape: tuple[int, ...],
        exclude_prefix: np.ndarray | Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Uniform item ids in [1, n_items] that are not among each user's first ``exclude_prefix`` items.

        ``shape`` is (B, ...). Rejection sampling, vectorised: candidates that hit the user's excluded items
        are redrawn until none do (the official ``random_neq`` loop, batched).
        """
        excl = torch.as_tensor(exclude_prefix, device=self.device)
        keys = self._user_item_keys(users, excl)
        out = torch.randint(1, self.n_items + 1, shape, device=self.device, generator=generator)
        rows = torch.arange(len(users), device=self.device).view(-1, *([1] * (len(shape) - 1))).expand(shape)
        for _ in range(1000):
            bad = _isin_sorted(rows * (self.n_items + 2) + out, keys)
            n_bad = int(bad.sum().item())
            if n_bad == 0:
                return out
            out[bad] = torch.randint(1, self.n_items + 1, (n_bad,), device=self.device, generator=generator)
        raise RuntimeError("could not sample negatives: a user has interacted with (almost) every item")

    def _user_item_keys(self, users: Tensor, prefix: Tensor) -> Tensor:
        """Sorted keys row * (n_items + 2) + item for every item in each batch row's first ``prefix``
        items."""
        counts = prefix.clamp(min=0)
        rows = torch.repeat_interleave(torch.arange(len(users), device=self.device), counts)
        starts = torch.repeat_interleave(self.offsets[users], counts)
        within = torch.arange(int(counts.sum().item()), device=self.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        items = self.items[starts + within]
        return torch.sort(rows * (self.n_items + 2) + items).values


def _isin_sorted(values: Tensor, sorted_keys: Tensor) -> Tensor:
    if sorted_keys.numel() == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, values).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == values


def positions_of(tokens: Tensor) -> Tensor:
    """1..len counted from the oldest real item; 0 at padding (right-aligned, contiguous sequences)."""
    mask = (tokens != 0).long()
    return torch.cumsum(mask, 1) * mask


def make_input(tokens: Tensor, max_len: int) -> SeqInput:
    lengths = (tokens != 0).sum(1)
    return SeqInput(tokens, positions_of(tokens), max_len - lengths)


def length_buckets(lengths: np.ndarray, n_buckets: int, min_size: int = 16) -> list[np.ndarray]:
    """Row groups of similar length (sorted), at most ``n_buckets``, none smaller than ``min_size`` rows."""
    order = np.argsort(lengths, kind="stable")
    if n_buckets <= 1 or len(order) < 2 * min_size:
        return [order]
    n = min(n_buckets, len(order) // min_size)
    return [chunk for chunk in np.array_split(order, n) if len(chunk)]
