"""Dataset statistics: the paper's Table 3 columns, its Figure 1 long-tail shares, and what preprocessing
dropped.

``dataset_stats`` returns a plain dict (JSON-ready); ``format_stats`` renders it as a two-column table. Tail
shares use ``esrkit.data.groups.compute_groups`` so they are exactly the groups the evaluation reports.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from esrkit.data.groups import OFFICIAL_THRESHOLDS, compute_groups, group_warnings
from esrkit.data.sequences import SequenceData

DEFAULT_THRESHOLDS = (9, 4)  # the DataConfig defaults (the official Beauty values)
SHORT_USER_LENGTH = 10  # paper Fig. 1(a): "users with fewer than 10 items"
TAIL_ITEM_INTERACTIONS = 30  # paper Fig. 1(b): "items with no more than 30 interaction records"
HEAD_SHARE = 0.2


def default_thresholds(name: str) -> tuple[int, int]:
    """The official per-dataset (ts_user, ts_item) when the name is a paper dataset, else the defaults."""
    return OFFICIAL_THRESHOLDS.get(name.lower(), DEFAULT_THRESHOLDS)


def repeat_count(data: SequenceData) -> int:
    """Interactions that repeat an earlier (user, item) pair of the same user."""
    users = np.repeat(np.arange(data.n_users, dtype=np.int64), data.lengths())
    pairs = users * (data.n_items + 1) + data.items.astype(np.int64)
    return int(len(pairs) - len(np.unique(pairs)))


def top_share(counts: np.ndarray, share: float = HEAD_SHARE) -> float:
    """Fraction of all interactions held by the ``share`` most-interacted items (``floor(share * n)``, at
    least 1: the rounding behind the shared datasets' documented 58.1% / 52.0% / 51.8%)."""
    if counts.size == 0 or counts.sum() == 0:
        return 0.0
    k = max(1, math.floor(share * counts.size))
    return float(np.sort(counts)[::-1][:k].sum() / counts.sum())


def is_present(value: Any) -> bool:
    """An attribute counts as covered when it is not null, blank or an empty container."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple, dict, set)):
        return len(value) > 0
    return True


def attribute_coverage(data: SequenceData) -> dict[str, dict[str, float | int]]:
    """Per field: items (of 1..n_items) with a non-empty value, and that count's share."""
    if data.item_attrs is None:
        return {}
    present: dict[str, int] = {}
    for attrs in data.item_attrs:
        for key, value in attrs.items():
            if is_present(value):
                present[key] = present.get(key, 0) + 1
            else:
                present.setdefault(key, 0)
    n = max(data.n_items, 1)
    return {
        k: {"items": v, "share": v / n} for k, v in sorted(present.items(), key=lambda kv: (-kv[1], kv[0]))
    }


def group_stats(data: SequenceData, ts_user: int, ts_item: int, max_len: int) -> dict[str, Any]:
    """Tail shares of the test instances under the official thresholds and under the paper's 20% rule."""
    official = compute_groups(
        data, "test", ts_user=ts_user, ts_item=ts_item, rule="official", max_len=max_len
    )
    pareto = compute_groups(data, "test", rule="pareto", max_len=max_len)
    n = max(data.n_users, 1)
    return {
        "ts_user": ts_user,
        "ts_item": ts_item,
        "tail_users": int(official.tail_user.sum()),
        "tail_user_share": float(official.tail_user.sum() / n),
        "tail_item_instances": int(official.tail_item.sum()),
        "tail_item_share": float(official.tail_item.sum() / n),
        "pareto_tail_user_share": float(pareto.tail_user.sum() / n),
        "pareto_tail_item_share": float(pareto.tail_item.sum() / n),
    }


def dataset_stats(
    data: SequenceData,
    ts_user: int | None = None,
    ts_item: int | None = None,
    max_len: int = 200,
    group_rule: str = "official",
) -> dict[str, Any]:
    """Every number ``esrkit data stats`` shows, as a dict; ``group_warnings`` says when ``group_rule`` (with
    these thresholds) leaves a long-tail group empty or tiny, and which rule would fit."""
    default_user, default_item = default_thresholds(data.name)
    ts_user = ts_user if ts_user is not None else default_user
    ts_item = ts_item if ts_item is not None else default_item
    lengths = data.lengths()
    counts = data.interaction_counts()[1:]
    occurring = counts[counts > 0]
    n_cells = data.n_users * max(data.n_items, 1)
    meta_counts = dict(data.meta.get("counts", {}))
    return {
        "name": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "items_occurring": int(occurring.size),
        "interactions": data.n_interactions,
        "sparsity": 1.0 - data.n_interactions / n_cells if n_cells else 0.0,
        "avg_length": float(lengths.mean()) if lengths.size else 0.0,
        "min_length": int(lengths.min()) if lengths.size else 0,
        "median_length": float(np.median(lengths)) if lengths.size else 0.0,
        "max_length": int(lengths.max()) if lengths.size else 0,
        "repeats": repeat_count(data),
        "users_lt10_share": float((lengths < SHORT_USER_LENGTH).mean()) if lengths.size else 0.0,
        "items_le30_share": float((occurring <= TAIL_ITEM_INTERACTIONS).mean()) if occurring.size else 0.0,
        "item_interactions_min": int(occurring.min()) if occurring.size else 0,
        "item_interactions_median": float(np.median(occurring)) if occurring.size else 0.0,
        "item_interactions_max": int(occurring.max()) if occurring.size else 0,
        "top20_items_interaction_share": top_share(occurring),
        "has_timestamps": data.timestamps is not None,
        "attribute_coverage": attribute_coverage(data),
        "groups": group_stats(data, ts_user, ts_item, max_len),
        "group_warnings": group_warnings(data, "test", ts_user, ts_item, group_rule, max_len),
        "preprocessing": {
            k: v for k, v in meta_counts.items() if k not in ("users", "items", "interactions")
        },
        "skipped_malformed": data.meta.get("skipped_malformed", {}),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"
    return str(value)


SHARE_KEYS = {"sparsity", "users_lt10_share", "items_le30_share", "top20_items_interaction_share"}


def format_stats(stats: dict[str, Any]) -> str:
    """A readable two-column table (shares as percentages)."""
    rows: list[tuple[str, str]] = []
    for key, value in stats.items():
        if isinstance(value, (dict, list)):
            continue
        rows.append((key, f"{100 * value:.2f}%" if key in SHARE_KEYS else _fmt(value)))
    groups = stats.get("groups", {})
    for key, value in groups.items():
        rows.append((f"groups.{key}", f"{100 * value:.2f}%" if key.endswith("share") else _fmt(value)))
    for field, cov in stats.get("attribute_coverage", {}).items():
        rows.append((f"coverage.{field}", f"{cov['items']:,} ({100 * cov['share']:.1f}%)"))
    for key, value in stats.get("preprocessing", {}).items():
        if not isinstance(value, dict):
            rows.append((f"prep.{key}", _fmt(value)))
    for key, value in stats.get("skipped_malformed", {}).items():
        rows.append((f"skipped.{key}", _fmt(value)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"warning: {w}" for w in stats.get("group_warnings", [])]
    return "\n".join(lines)
