"""The paper's figures as PNG files, built without pyplot's global state (``matplotlib.figure.Figure`` only).

* Figure 1 ``figure_longtail``: user-length and item-popularity histograms of a dataset, with models' N@10 per
  5-group bucket on a second axis when runs are given;
* Figure 3 ``figure_sweep``: test N@10 / H@10 against each swept value (alpha, N), from a ``sweep.json``;
* Figure 4 ``figure_groups``: bars per 5-group user and item bucket, one bar per model;
* Figure 5 ``figure_tsne``: t-SNE of item embeddings coloured by popularity bucket (the vectors of trained
  runs and the raw LLM item embeddings, given by esrkit/runs/figures.py: reporting never loads a model).

Every function saves the PNG and returns the ``Figure`` so tests can count bars and lines. ``esrkit report
--figures`` draws them from run folders with esrkit/runs/figures.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from esrkit.data.groups import (
    ITEM_BUCKET_EDGES,
    ITEM_BUCKET_LABELS,
    USER_BUCKET_EDGES,
    USER_BUCKET_LABELS,
    evaluated_input_length,
)
from esrkit.data.stats import dataset_stats
from esrkit.reporting.collect import Run, protocol_title, unique_labels
from esrkit.reporting.tables import column_title, format_value

USER_GROUPS = tuple(f"user_{b}" for b in USER_BUCKET_LABELS)
ITEM_GROUPS = tuple(f"item_{b}" for b in ITEM_BUCKET_LABELS)
COLOURS = (
    "#4C72B0",
    "#DD8452",
    "#55A868",
    "#C44E52",
    "#8172B3",
    "#937860",
    "#DA8BC3",
    "#8C8C8C",
    "#CCB974",
    "#64B5CD",
)
POP_COLOURS = ("#d62728", "#ff7f0e", "#bcbd22", "#17becf", "#1f77b4")  # tail (red) -> head (blue)
DPI = 130


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _metric_label(metric: str) -> str:
    return column_title("overall", metric).split(" ", 1)[1]


# ---------------------------------------------------------------------------------------------- Figure 4
def figure_groups(
    runs: list[Run],
    path: str | Path,
    protocol: str = "sampled",
    metrics: tuple[str, ...] = ("ndcg@10", "hr@10"),
    labels: list[str] | None = None,
    title: str = "",
) -> Figure:
    """Rows = metrics, columns = user buckets / item buckets; one bar per model in every bucket."""
    labels = labels or unique_labels(runs)
    fig = Figure(figsize=(11, 3.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), 2, squeeze=False)
    width = 0.8 / max(len(runs), 1)
    for row, metric in enumerate(metrics):
        for col, (groups, ticks, what) in enumerate(
            (
                (USER_GROUPS, USER_BUCKET_LABELS, "users: input length"),
                (ITEM_GROUPS, ITEM_BUCKET_LABELS, "items: target popularity"),
            )
        ):
            ax = axes[row][col]
            x = np.arange(len(groups))
            for i, (run, label) in enumerate(zip(runs, labels)):
                heights = [run.mean(protocol, g, metric) for g in groups]
                ax.bar(
                    x + (i - (len(runs) - 1) / 2) * width,
                    heights,
                    width,
                    label=label,
                    color=COLOURS[i % len(COLOURS)],
                )
            counts = [runs[0].users(protocol, g) if runs else None for g in groups]
            ax.set_xticks(x, [t if n is None else f"{t}\n(n={n})" for t, n in zip(ticks, counts)], fontsize=8)
            ax.set_xlabel(what)
            ax.set_ylabel(_metric_label(metric))
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    negatives = runs[0].config.get("eval", {}).get("negatives", 100) if runs else 100
    fig.suptitle(
        f"{title + ' — ' if title else ''}5-group performance [{protocol}: "
        f"{protocol_title(protocol, negatives)}]",
        fontsize=10,
    )
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------- Figure 3
def _anchor(sweep: dict[str, Any]) -> dict[str, Any]:
    """Where the other keys sit in a panel: the recipe (``each``) or the selected setting (``product``)."""
    best = (sweep.get("best") or {}).get("params")
    return dict(best) if sweep["mode"] == "product" and best else dict(sweep["base"])


def _panel_points(
    sweep: dict[str, Any], key: str, anchor: dict[str, Any]
) -> list[tuple[Any, dict[str, Any]]]:
    points = []
    for value in sweep["grid"][key]:
        want = {**anchor, key: value}
        entry = next(
            (e for e in sweep["settings"] if all(_same(e["params"].get(k), v) for k, v in want.items())), None
        )
        points.append((value, entry or {}))
    return points


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def figure_sweep(
    sweep: dict[str, Any],
    path: str | Path,
    protocol: str | None = None,
    metrics: tuple[str, ...] = ("ndcg@10", "hr@10"),
) -> Figure:
    """One panel per swept key: test metrics against the value (categorical x, grid order); the setting chosen
    on validation is circled. Pending settings are gaps."""
    done = [e for e in sweep["settings"] if e.get("status") == "done"]
    protocol = protocol or next(
        (p for p in ("sampled", "full") if any(p in e["test"] for e in done)), "sampled"
    )
    keys = list(sweep["grid"])
    anchor = _anchor(sweep)
    best = (sweep.get("best") or {}).get("name")
    fig = Figure(figsize=(4.8 * len(keys), 3.8), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        points = _panel_points(sweep, key, anchor)
        x = np.arange(len(points))
        for i, metric in enumerate(metrics):
            stats = [e.get("test", {}).get(protocol, {}).get("overall", {}).get(metric) for _, e in points]
            y = np.array([s["mean"] if s else np.nan for s in stats])
            sd = np.array([s["std"] if s else np.nan for s in stats])
            colour = COLOURS[i % len(COLOURS)]
            ax.plot(x, y, marker="o", color=colour, label=_metric_label(metric))
            if np.nanmax(np.nan_to_num(sd, nan=0.0)) > 0:
                ax.fill_between(x, y - sd, y + sd, color=colour, alpha=0.15)
            chosen = [j for j, (_, e) in enumerate(points) if e.get("name") == best]
            if chosen:
                ax.scatter(x[chosen], y[chosen], s=160, facecolors="none", edgecolors="black", zorder=3)
        ax.set_xticks(x, [format_value(v) for v, _ in points])
        ax.set_xlabel(key.split(".")[-1])
        ax.set_ylabel(f"test [{protocol}]")
        others = ", ".join(f"{k.split('.')[-1]}={format_value(v)}" for k, v in anchor.items() if k != key)
        ax.set_title(f"{key.split('.')[-1]}" + (f" ({others})" if others else ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Sweep {sweep.get('prefix', '')} ({sweep['mode']}): circle = chosen on validation "
        f"{sweep['select']['metric']}; shaded: ±1 std over seeds; {protocol_title(protocol)}",
        fontsize=9,
    )
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------- Figure 5
def popularity_buckets(popularity: np.ndarray) -> np.ndarray:
    """Bucket index (the paper's 1-9 / 10-29 / 30-59 / 60-99 / 100+) of each item's popularity."""
    return np.searchsorted(ITEM_BUCKET_EDGES, popularity, side="right")


def tsne_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE  # optional heavy dependency: scikit-learn loads only for t-SNE

    n = len(vectors)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(vectors, dtype=np.float64)
    )


def figure_tsne(
    panels: list[tuple[str, np.ndarray]],
    popularity: np.ndarray,
    path: str | Path,
    max_items: int = 3000,
    seed: int = 0,
    title: str = "",
) -> Figure:
    """One t-SNE panel per (title, (n_items, d) vectors); one scatter per popularity bucket (5 per panel).
    Above ``max_items`` the same random subset of items is used in every panel."""
    popularity = np.asarray(popularity)
    keep = np.arange(len(popularity))
    if len(keep) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(keep), max_items, replace=False))
    buckets = popularity_buckets(popularity[keep])
    fig = Figure(figsize=(4.8 * len(panels), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, vectors) in zip(axes, panels):
        xy = tsne_2d(np.asarray(vectors)[keep], seed)
        for b, label in enumerate(ITEM_BUCKET_LABELS):
            sel = buckets == b
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=6,
                color=POP_COLOURS[b],
                edgecolors="none",
                label=f"{label} ({int(sel.sum())})",
            )
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(title="item popularity", fontsize=7, title_fontsize=8, markerscale=2, loc="best")
    fig.suptitle(title or f"t-SNE of item embeddings ({len(keep)} items)", fontsize=10)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------- Figure 1
def _bucket_centres(values: np.ndarray, edges: tuple[int, ...]) -> np.ndarray:
    """Median value inside each bucket (where a bucket's point sits on the histogram's x axis)."""
    idx = np.searchsorted(edges, values, side="right")
    lows = (1,) + tuple(edges)
    out = []
    for b in range(len(edges) + 1):
        inside = values[idx == b]
        out.append(float(np.median(inside)) if inside.size else float(lows[b]))
    return np.array(out)


def figure_longtail(
    data: Any,
    path: str | Path,
    runs: list[Run] | None = None,
    protocol: str = "sampled",
    metric: str = "ndcg@10",
    max_len: int = 200,
) -> Figure:
    """(a) users per sequence length, (b) items per popularity (log-log), each with the models' ``metric`` per
    5-group bucket on a second y axis (one line per run)."""
    stats = dataset_stats(data, max_len=max_len)
    lengths = data.lengths()
    pop = data.item_popularity()[1:]
    pop = pop[pop > 0]
    fig = Figure(figsize=(13, 4.4), layout="constrained")
    ax_u, ax_i = fig.subplots(1, 2)
    top = int(np.percentile(lengths, 99)) + 1
    ax_u.hist(np.minimum(lengths, top), bins=np.arange(1, top + 2) - 0.5, color="#9ecae1")
    ax_u.set_yscale("log")
    ax_u.set_xlabel(f"interactions per user (clipped at {top})")
    ax_u.set_ylabel("users")
    ax_u.set_title(
        f"(a) long-tail users: {100 * stats['users_lt10_share']:.1f}% have < 10 interactions", fontsize=9
    )
    bins = np.unique(np.logspace(0, math.log10(max(pop.max(), 2)) + 0.01, 30).astype(int))
    ax_i.hist(pop, bins=bins, color="#fdae6b")
    ax_i.set_xscale("log")
    ax_i.set_yscale("log")
    for axis in (ax_u.yaxis, ax_i.yaxis, ax_i.xaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax_i.set_xlabel("users per item (popularity)")
    ax_i.set_ylabel("items")
    ax_i.set_title(
        f"(b) long-tail items: {100 * stats['items_le30_share']:.1f}% have <= 30 interactions", fontsize=9
    )
    if runs:
        centres_u = _bucket_centres(evaluated_input_length(data, "test", max_len), USER_BUCKET_EDGES)
        target_pop = data.item_popularity()[data.targets("test")]
        centres_i = _bucket_centres(target_pop, ITEM_BUCKET_EDGES)
        for ax, groups, centres in ((ax_u, USER_GROUPS, centres_u), (ax_i, ITEM_GROUPS, centres_i)):
            twin = ax.twinx()
            for i, (run, label) in enumerate(zip(runs, unique_labels(runs))):
                twin.plot(
                    centres,
                    [run.mean(protocol, g, metric) for g in groups],
                    marker="o",
                    color=COLOURS[i % len(COLOURS)],
                    label=label,
                )
            twin.set_ylabel(f"{_metric_label(metric)} per 5-group bucket [{protocol}]")
        handles, labels = twin.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.suptitle(
        f"{data.name}: {data.n_users:,} users, {data.n_items:,} items, {data.n_interactions:,} "
        f"interactions" + (f" — {protocol_title(protocol)}" if runs else ""),
        fontsize=10,
    )
    _save(fig, path)
    return fig


FIGURES: dict[str, Callable[..., Figure]] = {
    "fig1": figure_longtail,
    "fig3": figure_sweep,
    "fig4": figure_groups,
    "fig5": figure_tsne,
}
