"""Evaluation negatives for the paper's protocol: target + 100 negatives per user.

As the official ``SeqDataset``: uniform over [1, n_items] (orphan ids included), never an item of the user's
evaluated sequence (valid: seq[:-1], test: the whole sequence), unique within the user's list. Drawn from a
numpy Generator seeded by (seed, split), so the negatives are fixed for a seed: validation scores are
comparable across epochs and runs (the official code re-draws validation negatives every epoch;
``validation_negatives = "resample"`` reproduces that by passing a different ``round``).
"""

from __future__ import annotations

import numpy as np

from esrkit.data.sequences import SequenceData

_SPLIT_SALT = {"valid": 1, "test": 2}


def sample_eval_negatives(
    data: SequenceData, split: str, n: int = 100, seed: int = 42, round: int = 0
) -> np.ndarray:
    """(n_users, n) int64 negatives; rejection sampling vectorised over users, first-occurrence order kept."""
    rng = np.random.default_rng([seed, _SPLIT_SALT[split], round])
    lens = data.lengths()
    excluded_len = lens - 1 if split == "valid" else lens  # valid excludes seq[:-1] (incl. its target)
    n_users, n_items = data.n_users, data.n_items
    if np.any(n_items - excluded_len < n):
        u = int(np.argmax(n_items - excluded_len < n))
        raise ValueError(f"user row {u} leaves fewer than {n} items to sample as negatives ({n_items} items)")
    width = n_items + 2
    users = np.repeat(np.arange(n_users, dtype=np.int64), excluded_len)
    starts = np.repeat(data.offsets[:-1], excluded_len)
    within = np.arange(len(users)) - np.repeat(np.cumsum(excluded_len) - excluded_len, excluded_len)
    forbidden = np.unique(users * width + data.items[starts + within].astype(np.int64))

    out = np.zeros((n_users, n), dtype=np.int64)
    filled = np.zeros(n_users, dtype=np.int64)
    todo = np.arange(n_users)
    while todo.size:
        need = n - filled[todo]
        m = int(need.max()) + 8
        cand = rng.integers(1, n_items + 1, size=(todo.size, m))
        ok = ~_isin(todo[:, None] * width + cand, forbidden)
        ok &= _first_occurrence(cand)
        already = out[todo]  # reject what was accepted in an earlier round
        ok &= ~(cand[:, :, None] == already[:, None, :]).any(-1) if filled[todo].any() else True
        for row_i, u in enumerate(todo):
            got = cand[row_i][ok[row_i]][: need[row_i]]
            out[u, filled[u] : filled[u] + got.size] = got
            filled[u] += got.size
        todo = todo[filled[todo] < n]
    return out


def _isin(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(sorted_keys, values).clip(max=max(len(sorted_keys) - 1, 0))
    return sorted_keys[pos] == values if len(sorted_keys) else np.zeros(values.shape, dtype=bool)


def _first_occurrence(cand: np.ndarray) -> np.ndarray:
    """True where a value appears for the first time in its row."""
    order = np.argsort(cand, axis=1, kind="stable")
    srt = np.take_along_axis(cand, order, 1)
    dup_sorted = np.zeros_like(srt, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    first = np.empty_like(dup_sorted)
    np.put_along_axis(first, order, ~dup_sorted, 1)
    return first
