"""Each figure writes a PNG and draws the expected bars, lines and scatters (matplotlib objects inspected)."""

from __future__ import annotations

import numpy as np
from matplotlib.collections import PathCollection

from esrkit.reporting.collect import collect_runs, group_runs
from esrkit.reporting.figures import (
    FIGURES,
    figure_groups,
    figure_longtail,
    figure_sweep,
    figure_tsne,
    popularity_buckets,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000


def test_registry():
    assert set(FIGURES) == {"fig1", "fig3", "fig4", "fig5"}


def test_figure4_bars_per_group_and_model(make_run, tmp_path):
    make_run("sas", {1: 0.2}, model="id")
    make_run("init", {1: 0.3}, model="llminit")
    make_run("esr", {1: {"default": 0.4, "item_100+": float("nan")}}, model="llmesr")
    (runs,) = group_runs(collect_runs([make_run.root])).values()  # the paper's row order
    fig = figure_groups(runs, tmp_path / "f4.png", "sampled")
    _png(tmp_path / "f4.png")
    assert len(fig.axes) == 4  # (N@10, H@10) x (users, items)
    for ax in fig.axes:
        assert len(ax.patches) == 3 * 5
    users_ax = fig.axes[0]
    assert users_ax.get_xticklabels()[0].get_text() == "1-4\n(n=10)"
    heights = [p.get_height() for p in users_ax.patches]
    assert heights[:5] == [0.2] * 5 and heights[10:] == [0.4] * 5
    assert [t.get_text() for t in users_ax.get_legend().get_texts()] == ["SASRec", "LLMInit", "LLM-ESR"]
    items_ax = fig.axes[1]
    assert np.isnan(items_ax.patches[14].get_height())  # the empty 100+ bucket draws nothing


def _sweep(mode: str = "each") -> dict:
    grid = {"model.alpha": [1, 0.5, 0.1], "retrieval.n_similar": [2, 10]}
    base = {"model.alpha": 0.1, "retrieval.n_similar": 10}
    points = [(1.0, 10, 0.10), (0.5, 10, 0.30), (0.1, 10, 0.20), (0.1, 2, 0.25)]
    settings = []
    for alpha, n, score in points:
        test = {
            "sampled": {
                "overall": {
                    "ndcg@10": {"mean": score, "std": 0.01},
                    "hr@10": {"mean": 2 * score, "std": 0.02},
                }
            }
        }
        settings.append(
            {
                "name": f"r-alpha={alpha}-n={n}",
                "params": {"model.alpha": alpha, "retrieval.n_similar": n},
                "status": "done",
                "valid": {"mean": score},
                "test": test,
            }
        )
    settings.append(
        {"name": "pending", "params": {"model.alpha": 0.1, "retrieval.n_similar": 6}, "status": "pending"}
    )
    return {
        "prefix": "r",
        "mode": mode,
        "grid": grid,
        "base": base,
        "settings": settings,
        "select": {"metric": "ndcg@10", "split": "valid"},
        "best": {"name": "r-alpha=0.5-n=10", "params": settings[1]["params"]},
    }


def test_figure3_lines_per_swept_key(tmp_path):
    fig = figure_sweep(_sweep(), tmp_path / "f3.png")
    _png(tmp_path / "f3.png")
    alpha_ax, n_ax = fig.axes
    assert len(alpha_ax.get_lines()) == 2 and len(n_ax.get_lines()) == 2  # N@10 and H@10
    ndcg = alpha_ax.get_lines()[0]
    assert list(ndcg.get_ydata()) == [0.10, 0.30, 0.20]
    assert [t.get_text() for t in alpha_ax.get_xticklabels()] == ["1", "0.5", "0.1"]
    # the n_similar panel holds alpha at the recipe value (0.1): n=2 -> 0.25, n=10 -> 0.20
    assert list(n_ax.get_lines()[0].get_ydata()) == [0.25, 0.20]
    chosen = [c for c in alpha_ax.collections if isinstance(c, PathCollection)]
    assert len(chosen) == 2  # the selected setting circled on both lines
    assert not [c for c in n_ax.collections if isinstance(c, PathCollection)]


def test_figure3_product_anchors_at_the_best_setting(tmp_path):
    fig = figure_sweep(_sweep("product"), tmp_path / "f3p.png")
    n_ax = fig.axes[1]
    ys = list(n_ax.get_lines()[0].get_ydata())
    assert np.isnan(ys[0]) and ys[1] == 0.30  # alpha=0.5, n=2 not run: a gap


def test_figure5_one_scatter_per_popularity_bucket(tmp_path):
    rng = np.random.default_rng(0)
    pop = np.array([1, 5, 12, 40, 70, 150] * 10)
    panels = [("model", rng.normal(size=(60, 8))), ("raw LLM", rng.normal(size=(60, 16)))]
    fig = figure_tsne(panels, pop, tmp_path / "f5.png", max_items=50)
    _png(tmp_path / "f5.png")
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.collections) == 5
        assert sum(len(c.get_offsets()) for c in ax.collections) == 50
    assert list(popularity_buckets(np.array([1, 9, 10, 29, 30, 60, 99, 100]))) == [0, 0, 1, 1, 2, 3, 3, 4]


def test_figure1_histograms_and_model_lines(make_run, tmp_path):
    from esrkit.data.synthetic import SyntheticOptions, generate

    data = generate(SyntheticOptions(n_users=200, n_items=150, seed=1))
    make_run("sas", {1: 0.2}, model="id")
    make_run("esr", {1: 0.4}, model="llmesr")
    runs = collect_runs([make_run.root])
    fig = figure_longtail(data, tmp_path / "f1.png", runs)
    _png(tmp_path / "f1.png")
    users_ax, items_ax, twin_u, twin_i = fig.axes
    assert len(users_ax.patches) > 5 and len(items_ax.patches) > 5
    assert sum(p.get_height() for p in users_ax.patches) == data.n_users
    assert len(twin_u.get_lines()) == 2 and len(twin_i.get_lines()) == 2
    lines = {line.get_label(): list(line.get_ydata()) for line in twin_u.get_lines()}
    assert lines == {"LLM-ESR": [0.4] * 5, "SASRec": [0.2] * 5}
    bare = figure_longtail(data, tmp_path / "f1b.png")
    assert len(bare.axes) == 2
