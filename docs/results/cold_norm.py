"""Items added after training, at their PCA length or at the trained rows' mean length (docs/RESULTS.md,
"Cold items"; the option is ``model.new_item_norm``).

    python docs/results/cold_norm.py RUN_DIR [RUN_DIR ...]

For cold-item runs (`data.cold_items`) of LLMInit, with or without text neighbours: the test split under full
ranking, overall and on the users whose target is a held-out item, with the held-out items added as the run
added them (``new_item_norm=projection``, the default) and rescaled as ``new_item_norm=trained`` does (the
same function). Reads the best checkpoint; makes no LLM call (the held-out items come from the run's embedding
cache). One markdown row per run, then the mean over the runs given.
"""

from __future__ import annotations

import statistics
import sys

import torch

from esrkit.evaluation.metrics import metrics_from_ranks
from esrkit.models.idrec import with_mean_length
from esrkit.runs.load import load_run, run_evaluator


def _ndcg(ev, model, mask) -> tuple[float, float]:
    with torch.no_grad():
        ranks = ev._full_ranks(ev.user_vectors(model), model.all_item_vectors())
    return metrics_from_ranks(ranks, (10,))["ndcg@10"], metrics_from_ranks(ranks[mask], (10,))["ndcg@10"]


def compare(run_dir: str) -> list[float]:
    """[overall, cold-item] N@10 with the projection's length, then with the trained rows' mean length."""
    run = load_run(run_dir, device="cpu")
    model = run.model
    if run.inputs.cold is None or not hasattr(model, "new_item_norm"):
        raise SystemExit(f"{run_dir}: needs a cold-item run of model.name=llminit")
    ev = run_evaluator(run, "test")
    cold = ev.groups.masks()["cold_item"]
    n_warm = run.inputs.data.n_items
    weight = model.items.weight
    as_added = _ndcg(ev, model, cold)
    with torch.no_grad():
        trained = weight[1 : n_warm + 1].numpy()
        weight[n_warm + 1 : model.n_items + 1] = torch.as_tensor(
            with_mean_length(weight[n_warm + 1 : model.n_items + 1].numpy(), trained)
        )
    return [*as_added, *_ndcg(ev, model, cold)]


if __name__ == "__main__":
    print(
        "| run | overall N@10, projection | overall N@10, trained length | cold-item N@10, projection | "
        "cold-item N@10, trained length |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = []
    for path in sys.argv[1:]:
        row = compare(path)
        rows.append(row)
        print(f"| {path} | {row[0]:.4f} | {row[2]:.4f} | {row[1]:.4f} | {row[3]:.4f} |", flush=True)
    if len(rows) > 1:
        mean = [statistics.fmean(col) for col in zip(*rows)]
        print(f"| mean of {len(rows)} | {mean[0]:.4f} | {mean[2]:.4f} | {mean[1]:.4f} | {mean[3]:.4f} |")
