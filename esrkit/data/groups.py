"""Long-tail user and item groups, exactly as the official LLM-ESR code computes them, plus the paper's
variants.

Official rule (``--ts_user``/``--ts_item``, applied to the evaluated instance):

* user: ``seq_len`` = number of items in the evaluated *input* (test: ``n_u - 1``), capped at ``max_len``;
  tail if ``seq_len < ts_user``;
* item: ``pop`` of the *target* item = distinct users over all data (train+valid+test); tail if ``pop <
  ts_item``.

Paper rule (``rule="pareto"``): the top 20% of users by length and of items by popularity are head.
Five buckets (paper Fig. 4): users by ``seq_len`` at 5/10/15/20, items by ``pop`` at 10/30/60/100.

Thresholds made for one dataset can leave another's groups empty (a 5-core set has no item below 4 users, long
histories have no user below 9 items): ``group_warnings`` says so and which rule would fit, and ``esrkit data
stats`` and ``esrkit train`` print it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from esrkit.data.sequences import SequenceData

# Per-dataset thresholds used by the official scripts (experiments/*.bash).
OFFICIAL_THRESHOLDS: dict[str, tuple[int, int]] = {"yelp": (12, 13), "fashion": (3, 4), "beauty": (9, 4)}
USER_BUCKET_EDGES = (5, 10, 15, 20)
ITEM_BUCKET_EDGES = (10, 30, 60, 100)
USER_BUCKET_LABELS = ("1-4", "5-9", "10-14", "15-19", "20+")
ITEM_BUCKET_LABELS = ("1-9", "10-29", "30-59", "60-99", "100+")


@dataclass(frozen=True)
class Groups:
    """Boolean masks over users (rows) for one evaluated split, plus bucket indices."""

    tail_user: np.ndarray
    tail_item: np.ndarray
    user_bucket: np.ndarray
    item_bucket: np.ndarray
    seq_len: np.ndarray
    target_pop: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # more named masks (the cold-item protocol's)

    def masks(self) -> dict[str, np.ndarray]:
        out = {
            "tail_item": self.tail_item,
            "head_item": ~self.tail_item,
            "tail_user": self.tail_user,
            "head_user": ~self.tail_user,
        }
        for b, label in enumerate(USER_BUCKET_LABELS):
            out[f"user_{label}"] = self.user_bucket == b
        for b, label in enumerate(ITEM_BUCKET_LABELS):
            out[f"item_{label}"] = self.item_bucket == b
        out.update(self.extra)
        return out


def evaluated_input_length(data: SequenceData, split: str = "test", max_len: int = 200) -> np.ndarray:
    prefix, _ = data.split_lengths(split)
    return np.minimum(prefix, max_len)


def pareto_threshold(values: np.ndarray, head_share: float = 0.2) -> float:
    """Smallest value that is still 'head' when the top ``head_share`` by value are head (ties go to head)."""
    if values.size == 0:
        return np.inf
    k = max(1, int(np.ceil(head_share * values.size)))
    return float(np.sort(values)[::-1][k - 1])


def compute_groups(
    data: SequenceData,
    split: str = "test",
    ts_user: int = 9,
    ts_item: int = 4,
    rule: str = "official",
    max_len: int = 200,
) -> Groups:
    seq_len = evaluated_input_length(data, split, max_len)
    pop = data.item_popularity()
    target_pop = pop[data.targets(split)]
    if rule == "official":
        tail_user = seq_len < ts_user
        tail_item = target_pop < ts_item
    elif rule == "pareto":
        user_len = data.lengths()
        item_pop = pop[1:][pop[1:] > 0]
        tail_user = user_len < pareto_threshold(user_len.astype(float))
        tail_item = target_pop < pareto_threshold(item_pop.astype(float))
    else:
        raise ValueError(f"group rule must be 'official' or 'pareto', not {rule!r}")
    return Groups(
        tail_user=tail_user,
        tail_item=tail_item,
        user_bucket=np.searchsorted(USER_BUCKET_EDGES, seq_len, side="right"),
        item_bucket=np.searchsorted(ITEM_BUCKET_EDGES, target_pop, side="right"),
        seq_len=seq_len,
        target_pop=target_pop,
    )


# a group is "tiny" below this share of the evaluated users or this many users: its metrics are mostly noise
TINY_SHARE = 0.01
TINY_COUNT = 10
RULE_KEYS = "data.group_rule / data.ts_user / data.ts_item"


def group_sizes(groups: Groups) -> dict[str, int]:
    return {
        "tail users": int(groups.tail_user.sum()),
        "head users": int((~groups.tail_user).sum()),
        "tail-item targets": int(groups.tail_item.sum()),
        "head-item targets": int((~groups.tail_item).sum()),
    }


def small_groups(groups: Groups) -> dict[str, int]:
    """The long-tail groups that are empty or tiny (fewer than 1% of the users, or than 10)."""
    n = len(groups.tail_user)
    limit = max(TINY_COUNT, TINY_SHARE * n)
    return {name: k for name, k in group_sizes(groups).items() if k < limit}


def suggested_thresholds(data: SequenceData, split: str = "test", max_len: int = 200) -> tuple[int, int]:
    """Official-rule thresholds that split this data like the paper's 20% rule (the top 20% are head)."""
    seq_len = evaluated_input_length(data, split, max_len)
    pop = data.item_popularity()
    ts_user = pareto_threshold(seq_len.astype(float))
    ts_item = pareto_threshold(pop[1:][pop[1:] > 0].astype(float))
    return int(ts_user) if np.isfinite(ts_user) else 1, int(ts_item) if np.isfinite(ts_item) else 1


def group_warnings(
    data: SequenceData,
    split: str = "test",
    ts_user: int = 9,
    ts_item: int = 4,
    rule: str = "official",
    max_len: int = 200,
) -> list[str]:
    """What is wrong with the chosen groups on this data, and which rule to use instead ([] when nothing)."""
    small = small_groups(compute_groups(data, split, ts_user, ts_item, rule, max_len))
    if not small:
        return []
    n = data.n_users
    thresholds = f" (ts_user={ts_user}, ts_item={ts_item})" if rule == "official" else ""
    chosen = f"the {rule} group rule{thresholds}"
    found = ", ".join(f"{k:,} {name} ({k / max(n, 1):.1%})" for name, k in small.items())
    line = (
        f"{chosen} leaves {found} of {n:,} in the {split} split: those group columns are empty or rest "
        "on a handful of users."
    )
    return [f"{line} {_advice(data, split, max_len, rule)}"]


def _advice(data: SequenceData, split: str, max_len: int, rule: str) -> str:
    """The first rule that leaves no group tiny: the paper's 20% rule, else official thresholds fitted to the
    data."""
    ts_user, ts_item = suggested_thresholds(data, split, max_len)
    candidates: list[tuple[list[str], str, dict]] = []
    if rule != "pareto":
        candidates.append((["data.group_rule=pareto"], "the paper's 20% rule", {"rule": "pareto"}))
    candidates.append(
        (
            ["data.group_rule=official", f"data.ts_user={ts_user}", f"data.ts_item={ts_item}"],
            "thresholds that split this data 80/20",
            {"ts_user": ts_user, "ts_item": ts_item},
        )
    )
    for keys, why, options in candidates:
        sizes = group_sizes(groups := compute_groups(data, split, max_len=max_len, **options))
        if not small_groups(groups):
            sets = " ".join(f"--set {k}" for k in keys)
            return (
                f"Use {sets} ({why}: {sizes['tail users']:,} tail users, {sizes['tail-item targets']:,} "
                "tail-item targets)."
            )
    return (
        "No rule gives every group enough users on this data (too few users, or all alike); read the "
        f"group columns with care, or set {RULE_KEYS} yourself."
    )
