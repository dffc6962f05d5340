"""A compact results table for the terminal: the paper's Table 1 columns for one or more runs."""

from __future__ import annotations

import math
from typing import Any

GROUPS = (
    ("overall", "Overall"),
    ("tail_item", "Tail item"),
    ("head_item", "Head item"),
    ("tail_user", "Tail user"),
    ("head_user", "Head user"),
)


def _value(entry: Any) -> tuple[float, float | None]:
    if isinstance(entry, dict):
        return entry["mean"], entry.get("std")
    return float(entry), None


def results_table(rows: list[tuple[str, dict[str, Any]]], protocol: str, k: int = 10) -> str:
    """``rows``: (label, test metrics {group: {metric: value or {mean, std}}}) for one protocol; a cold-item
    run (data.cold_items) gets a "Cold item" column."""
    cold = bool(rows) and all("cold_item" in g for _, g in rows)
    shown = GROUPS + ((("cold_item", "Cold item"),) if cold else ())
    header = ["model"]
    for _, title in shown:
        header += [f"{title} H@{k}", f"N@{k}"]
    lines = [header]
    for label, groups in rows:
        line = [label]
        for g, _ in shown:
            for m in (f"hr@{k}", f"ndcg@{k}"):
                entry = groups.get(g, {}).get(m)  # absent: nobody in this group (5-core: no tail item)
                mean, std = _value(entry) if entry is not None else (float("nan"), None)
                if math.isnan(mean):  # NaN: the same, in results written before empty groups were left out
                    line.append("–")
                    continue
                line.append(f"{mean:.4f}" + (f"±{std:.4f}" if std else ""))
        lines.append(line)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    title = {
        "sampled": "paper protocol: target + 100 sampled negatives",
        "full": "full ranking over all items",
    }
    out = [f"[{protocol}] {title.get(protocol, protocol)}", fmt(lines[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(r) for r in lines[1:]]
    return "\n".join(out)
