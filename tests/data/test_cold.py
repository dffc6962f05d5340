"""The cold-item split: which items are held out, and that training never sees them."""

from __future__ import annotations

import numpy as np
import pytest

from esrkit.data.cold import check_cold_options, cold_split, mean_relative_positions
from esrkit.data.sequences import SequenceData
from esrkit.data.synthetic import SyntheticOptions, generate


@pytest.fixture(scope="module")
def data():
    return generate(SyntheticOptions(n_users=300, n_items=200, seed=5))


def is_subsequence(part, whole) -> bool:
    it = iter(whole)
    return all(x in it for x in part)


@pytest.mark.parametrize("mode", ["random", "newest"])
def test_held_out_items_never_reach_training(data, mode) -> None:
    split = cold_split(data, 0.1, mode, seed=3)
    occurring = np.count_nonzero(np.bincount(data.items, minlength=data.n_items + 1)[1:])
    assert split.n_cold == round(0.1 * occurring) and split.n_warm + split.n_cold == data.n_items
    train, full = split.train, split.full
    assert train.n_items == split.n_warm and train.items.max() <= split.n_warm
    original = split.original_ids
    for u in range(full.n_users):  # the full data is the original, renumbered
        assert original[full.sequence(u)].tolist() == data.sequence(u).tolist()
    assert [full.item_attrs[i - 1] for i in (1, data.n_items)] == [
        data.item_attrs[original[i] - 1] for i in (1, data.n_items)
    ]
    assert full.item_ids == [data.item_ids[i - 1] for i in original[1:]]
    for r, u in enumerate(split.train_users):  # a training user's sequence: theirs without the cold items ...
        seq = full.sequence(u)
        assert train.sequence(r).tolist() == seq[seq <= split.n_warm].tolist()
        assert train.user_ids[r] == full.user_ids[u]
        # ... so what it trains on comes from the original training part only (never a validation/test target)
        assert is_subsequence(train.sequence(r)[:-2].tolist(), seq[:-2].tolist())
    dropped = np.setdiff1d(np.arange(full.n_users), split.train_users)
    assert all(np.count_nonzero(full.sequence(u) <= split.n_warm) < 3 for u in dropped)
    assert split.meta["users_dropped"] == len(dropped) and split.meta["items"] == split.n_cold
    cold_target = split.cold_target("test")
    assert cold_target.tolist() == (full.targets("test") > split.n_warm).tolist() and cold_target.any()


def test_random_is_seeded(data) -> None:
    a, b, c = (cold_split(data, 0.2, "random", s).original_ids for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_newest_uses_timestamps_and_otherwise_positions() -> None:
    seqs = [[1, 2, 3, 4], [2, 1, 5, 3], [1, 3, 2, 5]]
    ts = [[10, 20, 30, 40], [11, 21, 31, 99], [12, 22, 32, 50]]
    with_time = SequenceData.from_sequences(seqs, n_items=5, timestamps=ts)
    split = cold_split(with_time, 0.4, "newest")  # 2 of 5 items: item 4 first seen at 40, item 5 at 31
    assert sorted(split.original_ids[split.n_warm + 1 :].tolist()) == [4, 5]
    assert split.meta["order"] == "timestamp"
    no_time = SequenceData.from_sequences(seqs, n_items=5)
    positions = mean_relative_positions(no_time)
    assert positions[4] == 1.0 and positions[5] == pytest.approx((2 / 3 + 1) / 2)
    split = cold_split(no_time, 0.2, "newest")  # item 4 only ever comes last
    assert split.original_ids[split.n_warm + 1 :].tolist() == [4] and split.meta["order"] == "position"


@pytest.mark.parametrize(
    ("fraction", "mode", "message"),
    [
        (1.0, "random", r"fraction in \[0, 1\)"),
        (-0.1, "random", "fraction"),
        (0.1, "oldest", "unknown cold-item mode 'oldest'"),
    ],
)
def test_bad_options_are_named(fraction, mode, message) -> None:
    with pytest.raises((ValueError, KeyError), match=message):
        check_cold_options(fraction, mode)
