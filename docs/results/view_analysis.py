"""What each score view of a trained model puts in the top 10 (docs/RESULTS.md, "Best under full ranking").

    python docs/results/view_analysis.py RUN_DIR [RUN_DIR ...]

For every run (a seed folder), on the test split under full ranking: N@10 / H@10 overall and on tail items of
the fused score and, for models with several score views (LLM-ESR), of each view's own logits; and what the
top 10 holds: the mean training-popularity percentile of the recommended items, the share of tail items (the
run's own group rule), and how much the views' top 10 lists overlap. Reads the best checkpoint; makes no LLM
call.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from esrkit.data.groups import pareto_threshold
from esrkit.evaluation.evaluator import Evaluator
from esrkit.evaluation.metrics import metrics_from_ranks
from esrkit.models.popularity import training_items
from esrkit.runs.load import load_run


def top_lists(ev: Evaluator, users: torch.Tensor, items: torch.Tensor, k: int = 10) -> np.ndarray:
    """(n_users, k) top item ids under full ranking with the input history excluded."""
    prefix = ev.data.lengths() - 1
    out = []
    for start in range(0, len(users), 1024):
        rows = np.arange(start, min(start + 1024, len(users)))
        scores = users[rows] @ items.T
        scores[:, 0] = float("-inf")
        r, i = ev._history(rows, prefix)
        scores[r, i] = float("-inf")
        out.append(torch.topk(scores, k, 1).indices.cpu().numpy())
    return np.concatenate(out)


def is_tail_item(data, rule: str, ts_item: int) -> np.ndarray:
    """(n_items + 1,) the group rule of esrkit/data/groups.py applied to every item (row 0: padding)."""
    pop = data.item_popularity()
    if rule == "official":
        return pop < ts_item
    return pop < pareto_threshold(pop[1:][pop[1:] > 0].astype(float))


def analyse(run_dir: str) -> list[str]:
    run = load_run(run_dir, device="cpu")
    cfg, data, model = run.cfg, run.inputs.data, run.model
    ev = Evaluator(
        data,
        "test",
        run.seqs,
        max_len=cfg.data.max_len,
        ts_user=cfg.data.ts_user,
        ts_item=cfg.data.ts_item,
        group_rule=cfg.data.group_rule,
    )
    with torch.no_grad():
        users, items = ev.user_vectors(model), model.all_item_vectors()
    counts = np.bincount(training_items(data), minlength=data.n_items + 1)
    percentile = np.argsort(np.argsort(counts[1:])) / max(data.n_items - 1, 1)  # 0 = least popular
    tail_items = is_tail_item(data, cfg.data.group_rule, cfg.data.ts_item)
    views = {"fused": slice(None)}
    for i, view in enumerate(getattr(model, "score_views", lambda: [])()):
        views[("collaborative", "semantic")[i] if i < 2 else f"view {i}"] = view
    lines = [
        f"## {run_dir}",
        "",
        "| score | N@10 | H@10 | tail-item N@10 | top-10 popularity percentile | "
        "top-10 tail share | top-10 overlap with fused |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fused_top = None
    for name, view in views.items():
        ranks = ev._full_ranks(users[:, view].contiguous(), items[:, view].contiguous())
        overall = metrics_from_ranks(ranks, (10,))
        tail = metrics_from_ranks(ranks[ev.groups.masks()["tail_item"]], (10,))
        top = top_lists(ev, users[:, view].contiguous(), items[:, view].contiguous())
        if fused_top is None:
            fused_top = top
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, fused_top)])
        lines.append(
            f"| {name} | {overall['ndcg@10']:.4f} | {overall['hr@10']:.4f} | {tail['ndcg@10']:.4f} | "
            f"{percentile[top - 1].mean():.3f} | {tail_items[top].mean():.3f} | {overlap:.3f} |"
        )
    return lines + [""]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        print("\n".join(analyse(path)))
