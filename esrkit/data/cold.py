"""The cold-item protocol: hold items out of training entirely, add them afterwards from their text alone.

``cold_split`` picks a fraction of the items that occur (``random`` with a seed, or the ``newest``), renumbers
the catalogue so the held-out items come last, and returns two datasets:

* ``train``: the warm catalogue (ids ``1..n_warm``); every interaction with a cold item is removed from every
  sequence, so neither training inputs, targets, negatives nor validation ever see one. Users left with fewer
  than 3 interactions are dropped from it (leave-one-out needs 3);
* ``full``: every user and every item (cold ids ``n_warm + 1..n_items``), unchanged sequences, for the test
  after the cold items were added with the model family's new-item contract. Its item metadata holds the cold
  items' text, which is all a model may use of them.

Nothing the model trains on comes from a user's test target: a warm user's training part is a subsequence of
the original ``seq[:-2]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from esrkit.data.sequences import MIN_SEQUENCE_LENGTH, SequenceData
from esrkit.registry import Registry

COLD_MODES: Registry[Callable[[SequenceData, int, int], np.ndarray]] = Registry("cold-item mode")


@COLD_MODES.register("random")
def random_items(data: SequenceData, count: int, seed: int) -> np.ndarray:
    """``count`` items drawn uniformly (seeded) among the items that occur."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(occurring_items(data), size=count, replace=False))


@COLD_MODES.register("newest")
def newest_items(data: SequenceData, count: int, seed: int) -> np.ndarray:
    """The ``count`` items first seen last: by their earliest timestamp when the dataset has timestamps;
    otherwise by their mean relative position in the sequences they occur in (0 = a user's first item, 1 = the
    last), since an item released late can only appear late in histories. Ties: the larger id is newer."""
    items = occurring_items(data)
    age = first_timestamps(data) if data.timestamps is not None else mean_relative_positions(data)
    order = np.lexsort((-items, -age[items]))  # newest first; ties: larger id first
    return np.sort(items[order[:count]])


def occurring_items(data: SequenceData) -> np.ndarray:
    return np.flatnonzero(np.bincount(data.items, minlength=data.n_items + 1)[1:]) + 1


def first_timestamps(data: SequenceData) -> np.ndarray:
    """Earliest timestamp per item id (index 0 unused; never-seen items get +inf)."""
    first = np.full(data.n_items + 1, np.inf)
    np.minimum.at(first, data.items, np.asarray(data.timestamps, dtype=np.float64))
    return first


def mean_relative_positions(data: SequenceData) -> np.ndarray:
    """Per item id, the mean of position / (length - 1) over its interactions (index 0 unused)."""
    lengths = data.lengths()
    within = np.arange(len(data.items)) - np.repeat(data.offsets[:-1], lengths)
    relative = within / np.repeat(np.maximum(lengths - 1, 1), lengths)
    total = np.bincount(data.items, weights=relative, minlength=data.n_items + 1)
    count = np.bincount(data.items, minlength=data.n_items + 1)
    return total / np.maximum(count, 1)


@dataclass
class ColdSplit:
    train: SequenceData
    full: SequenceData
    n_warm: int
    original_ids: np.ndarray  # (n_items + 1,) renumbered id -> the dataset's original id (0 -> 0)
    train_users: np.ndarray  # rows of ``full`` that are the users of ``train``, in order
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_cold(self) -> int:
        return self.full.n_items - self.n_warm

    def cold_target(self, split: str = "test") -> np.ndarray:
        """Boolean mask over ``full``'s users: the split's target is a cold item."""
        return self.full.targets(split) > self.n_warm


def check_cold_options(fraction: float, mode: str) -> None:
    """Fail before any work on options that cannot describe a cold-item split."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(
            f"data.cold_items must be a fraction in [0, 1) of the items (0 = off), not {fraction}"
        )
    COLD_MODES.get(mode)  # names the known modes when unknown


def cold_split(data: SequenceData, fraction: float, mode: str = "random", seed: int = 0) -> ColdSplit:
    check_cold_options(fraction, mode)
    occurring = occurring_items(data)
    count = max(1, round(fraction * len(occurring)))
    if count >= len(occurring):
        raise ValueError(f"data.cold_items={fraction} would hold out all {len(occurring)} items that occur")
    cold = COLD_MODES.get(mode)(data, count, seed)
    is_cold = np.zeros(data.n_items + 1, dtype=bool)
    is_cold[cold] = True
    # renumber: warm items keep their order as 1..n_warm, cold items follow in theirs
    original = np.concatenate([[0], np.flatnonzero(~is_cold[1:]) + 1, cold]).astype(np.int64)
    new_id = np.empty_like(original)
    new_id[original] = np.arange(len(original))
    full = _renumbered(data, original, new_id)
    n_warm = data.n_items - count
    train, rows = _without_items(full, n_warm)
    meta = {
        "fraction": fraction,
        "mode": mode,
        "seed": seed,
        "items": count,
        "warm_items": n_warm,
        "order": "timestamp"
        if mode == "newest" and data.timestamps is not None
        else ("position" if mode == "newest" else "random"),
        "train_users": len(rows),
        "users_dropped": data.n_users - len(rows),
        "interactions_removed": int(np.count_nonzero(full.items > n_warm)),
    }
    train.meta["cold_items"] = meta
    return ColdSplit(train, full, n_warm, original, rows, meta)


def _renumbered(data: SequenceData, original: np.ndarray, new_id: np.ndarray) -> SequenceData:
    attrs = [data.item_attrs[i - 1] for i in original[1:]] if data.item_attrs is not None else None
    return SequenceData(
        offsets=data.offsets,
        items=new_id[data.items].astype(np.int32),
        n_items=data.n_items,
        user_ids=list(data.user_ids),
        item_ids=[data.item_ids[i - 1] for i in original[1:]],
        item_attrs=attrs,
        timestamps=data.timestamps,
        name=data.name,
        meta=dict(data.meta),
    )


def _without_items(full: SequenceData, n_warm: int) -> tuple[SequenceData, np.ndarray]:
    """``full`` with every interaction with an item above ``n_warm`` removed and the catalogue cut to the warm
    items; users left shorter than leave-one-out needs are dropped. Returns it and its users' rows in
    ``full``."""
    keep = full.items <= n_warm
    owner = np.repeat(np.arange(full.n_users), full.lengths())
    lengths = np.bincount(owner[keep], minlength=full.n_users)
    rows = np.flatnonzero(lengths >= MIN_SEQUENCE_LENGTH)
    keep &= np.isin(owner, rows)
    offsets = np.concatenate([[0], np.cumsum(lengths[rows])]).astype(np.int64)
    timestamps = full.timestamps[keep] if full.timestamps is not None else None
    attrs = full.item_attrs[:n_warm] if full.item_attrs is not None else None
    train = SequenceData(
        offsets=offsets,
        items=full.items[keep],
        n_items=n_warm,
        user_ids=[full.user_ids[r] for r in rows],
        item_ids=full.item_ids[:n_warm],
        item_attrs=attrs,
        timestamps=timestamps,
        name=full.name,
        meta=dict(full.meta),
    )
    return train, rows
