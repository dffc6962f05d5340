"""Training and prediction batches, built with vectorised tensor ops on the training device.

All sequences live on the device as one CSR pair (``items``, ``offsets``); a batch is gathered by index, so
there is no per-sample Python loop and no DataLoader. Semantics follow the official generators exactly
(``generators/data.py``):

* ``seq2seq`` (SASRec): input = train[:-1] (last ``max_len``), target at each position = the next item, one
  negative per position, uniform over [1, n_items] and never in the user's training sequence;
* ``cloze`` (BERT4Rec): an epoch has 2 x users samples; sample s < U masks each training token with
  probability ``mask_prob`` (80% [MASK], 10% random item, 10% unchanged), sample s >= U masks only the last
  training item;
* ``last`` (GRU4Rec): input = train[:-1], target = train[-1], ``negatives`` distinct negatives;
* teachers (self-distillation): a similar user's train[:-1], right-aligned, standard positions;
* prediction: input = the evaluated prefix; BERT4Rec appends [MASK] and drops the oldest item at full length.

Inputs are ``SeqInput`` (right-aligned tokens, positions, padding counts: esrkit/data/tensors.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from esrkit.data.tensors import DeviceSequences, SeqInput, make_input, positions_of


@dataclass
class TrainBatch:
    users: Tensor  # (B,) user rows (whose neighbours teach them)
    inp: SeqInput  # the ranking-loss input (BERT4Rec: the masked tokens)
    pos: Tensor  # seq2seq/cloze: (B, L) target per position (0 = no loss); last: (B,)
    neg: Tensor  # (B, L, k) or (B, k)
    users_np: np.ndarray | None = None  # the same rows on the host (avoids a device sync)
    lengths_np: np.ndarray | None = (
        None  # real items per input row, on the host (bucket widths without a sync)
    )


def seq2seq_batch(
    seqs: DeviceSequences, users_np: np.ndarray, max_len: int, negatives: int, gen
) -> TrainBatch:
    users = torch.as_tensor(users_np, device=seqs.device)
    train_len = seqs.train_lengths(users_np)
    window = seqs.window(users, train_len, max_len + 1, min_width=2)  # train items, one extra for the shift
    tokens, pos = window[:, :-1], window[:, 1:]
    pos = pos * (tokens != 0)  # only real inputs have a target (a one-item training sequence has none)
    neg = seqs.sample_negatives(users, (*pos.shape, negatives), train_len, gen)
    neg = neg * (pos != 0).unsqueeze(-1)
    return TrainBatch(
        users, make_input(tokens, max_len), pos, neg, users_np, np.clip(train_len - 1, 0, max_len)
    )


def last_item_batch(
    seqs: DeviceSequences, users_np: np.ndarray, max_len: int, negatives: int, gen
) -> TrainBatch:
    users = torch.as_tensor(users_np, device=seqs.device)
    train_len = seqs.train_lengths(users_np)
    tokens = seqs.window(users, train_len - 1, max_len)
    target = seqs.items[seqs.offsets[users] + torch.as_tensor(train_len - 1, device=seqs.device)]
    neg = _distinct_negatives(seqs, users, negatives, train_len, gen)
    return TrainBatch(
        users, make_input(tokens, max_len), target, neg, users_np, np.clip(train_len - 1, 0, max_len)
    )


def _distinct_negatives(seqs: DeviceSequences, users: Tensor, k: int, exclude: np.ndarray, gen) -> Tensor:
    neg = seqs.sample_negatives(users, (len(users), k), exclude, gen)
    if k > 1:  # the official loop also excludes negatives already drawn for the same sample
        for _ in range(100):
            srt = torch.sort(neg, 1).values
            dup = (srt[:, 1:] == srt[:, :-1]).any(1)
            if not bool(dup.any()):
                break
            rows = torch.nonzero(dup).squeeze(1)
            neg[rows] = seqs.sample_negatives(users[rows], (len(rows), k), exclude[rows.cpu().numpy()], gen)
    return neg


def cloze_batch(
    seqs: DeviceSequences, samples_np: np.ndarray, max_len: int, mask_prob: float, negatives: int, gen
) -> TrainBatch:
    """``samples_np`` in [0, 2U): s < U random cloze masking of user s, s >= U masks user s-U's last item."""
    n_users = seqs.n_users
    users_np = samples_np % n_users
    last_only = torch.as_tensor(samples_np >= n_users, device=seqs.device)
    users = torch.as_tensor(users_np, device=seqs.device)
    train_len = seqs.train_lengths(users_np)
    tokens = seqs.window(users, train_len, max_len)
    real = tokens != 0
    dev = seqs.device
    u = torch.rand(tokens.shape, device=dev, generator=gen)
    masked = (u < mask_prob) & real
    r = (
        u / mask_prob
    )  # the official reuse of the same uniform draw: <0.8 [MASK], <0.9 random item, else unchanged
    random_items = torch.randint(1, seqs.n_items + 1, tokens.shape, device=dev, generator=gen)
    replaced = torch.where(
        r < 0.8, torch.full_like(tokens, seqs.n_items + 1), torch.where(r < 0.9, random_items, tokens)
    )
    last_col = torch.zeros_like(masked)
    last_col[:, -1] = True
    masked = torch.where(last_only.unsqueeze(1), last_col & real, masked)
    replaced = torch.where(last_only.unsqueeze(1), torch.full_like(tokens, seqs.n_items + 1), replaced)
    new_tokens = torch.where(masked, replaced, tokens)
    pos = torch.where(masked, tokens, torch.zeros_like(tokens))
    neg = seqs.sample_negatives(users, (*tokens.shape, negatives), train_len, gen) * masked.unsqueeze(-1)
    return TrainBatch(
        users, make_input(new_tokens, max_len), pos, neg, users_np, np.clip(train_len, 0, max_len)
    )


def teacher_input(seqs: DeviceSequences, users_np: np.ndarray, max_len: int) -> SeqInput:
    """A (similar) user's train[:-1], the official ``_get_user_seq``."""
    users = torch.as_tensor(users_np, device=seqs.device)
    tokens = seqs.window(users, seqs.train_lengths(users_np) - 1, max_len)
    return make_input(tokens, max_len)


def prediction_input(
    seqs: DeviceSequences, users_np: np.ndarray, split: str, max_len: int, objective: str, mask_token: int
) -> SeqInput:
    """The evaluated prefix (valid: seq[:-2], test: seq[:-1], next: the whole sequence, for recommending);
    BERT4Rec appends [MASK]."""
    users = torch.as_tensor(users_np, device=seqs.device)
    held_out = {"valid": 2, "test": 1, "next": 0}
    if split not in held_out:
        raise ValueError(f"split must be one of {sorted(held_out)}, not {split!r}")
    prefix = seqs.lengths_np[users_np] - held_out[split]
    if objective != "cloze":
        return make_input(seqs.window(users, prefix, max_len), max_len)
    tokens = seqs.window(users, prefix, max_len - 1)
    full = torch.as_tensor(prefix >= max_len, device=seqs.device)
    return _cloze_prediction(tokens, full, max_len, mask_token)


def history_input(
    histories: list[np.ndarray],
    max_len: int,
    objective: str,
    mask_token: int,
    device: torch.device | str = "cpu",
) -> SeqInput:
    """``prediction_input`` for histories that are not in a dataset (serving an unseen user): the same tokens,
    positions and padding counts as for a dataset user with this whole sequence."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    if objective != "cloze":
        return make_input(_right_aligned(histories, lengths, max_len, device), max_len)
    tokens = _right_aligned(histories, lengths, max_len - 1, device)
    return _cloze_prediction(tokens, torch.as_tensor(lengths >= max_len, device=device), max_len, mask_token)


def _right_aligned(histories: list[np.ndarray], lengths: np.ndarray, keep: int, device) -> Tensor:
    """(B, W) tokens: the last ``keep`` items of each history, right-aligned (``DeviceSequences.window``)."""
    taken = np.clip(lengths, 0, keep)
    out = np.zeros((len(histories), max(1, int(taken.max()) if len(taken) else 1)), dtype=np.int64)
    width = out.shape[1]
    for row, (history, n) in enumerate(zip(histories, taken.tolist())):
        if n:
            out[row, width - n :] = history[len(history) - n :]
    return torch.as_tensor(out, device=device)


def _cloze_prediction(tokens: Tensor, full: Tensor, max_len: int, mask_token: int) -> SeqInput:
    """Official predict(): cat([last max_len items, MASK]) then drop the first column; ``full``: the sequence
    filled the window, so its positions start at 2."""
    tokens = torch.cat([tokens, torch.full_like(tokens[:, :1], mask_token)], 1)
    positions = positions_of(tokens) + full.unsqueeze(1).long() * (tokens != 0).long()
    lengths = (tokens != 0).sum(1)
    return SeqInput(tokens, positions, max_len - lengths)
