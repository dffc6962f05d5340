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
from cold_mix import open_cold_run, overall_and_cold_ndcg  # the sibling script (same folder)

from esrkit.models.idrec import with_mean_length


def compare(run_dir: str) -> list[float]:
    """[overall, cold-item] N@10 with the projection's length, then with the trained rows' mean length."""
    run, ev, cold, n_warm = open_cold_run(run_dir, "of model.name=llminit")
    model = run.model
    if not hasattr(model, "new_item_norm"):
        raise SystemExit(f"{run_dir}: needs a cold-item run of model.name=llminit")
    weight = model.items.weight
    as_added = overall_and_cold_ndcg(ev, model, cold)
    with torch.no_grad():
        trained = weight[1 : n_warm + 1].numpy()
        weight[n_warm + 1 : model.n_items + 1] = torch.as_tensor(
            with_mean_length(weight[n_warm + 1 : model.n_items + 1].numpy(), trained)
        )
    return [*as_added, *overall_and_cold_ndcg(ev, model, cold)]


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
