"""How a text-neighbour model scores items added after training (docs/RESULTS.md, "Cold items").

    python docs/results/cold_mix.py RUN_DIR [RUN_DIR ...]

For a cold-item run (`data.cold_items`) of LLMInit with `model.text_neighbours`: the test split under full
ranking, overall and on the users whose target is a held-out item, as trained and with the new items' gate
forced to their own PCA vector only or to their neighbours' mean only; then the gate values (a new item's, the
trained items') and the mean vector norms. Reads the best checkpoint; makes no LLM call (the held-out items
are added from the run's embedding cache, as at training).
"""

from __future__ import annotations

import sys

import torch

from esrkit.evaluation.metrics import metrics_from_ranks
from esrkit.runs.load import load_run, run_evaluator


def overall_and_cold_ndcg(ev, model, cold) -> tuple[float, float]:
    """Test N@10 under full ranking: every user, and the users whose target is a held-out item."""
    with torch.no_grad():
        ranks = ev._full_ranks(ev.user_vectors(model), model.all_item_vectors())
    return metrics_from_ranks(ranks, (10,))["ndcg@10"], metrics_from_ranks(ranks[cold], (10,))["ndcg@10"]


def open_cold_run(run_dir: str, needs: str):
    """(run, test evaluator, cold-item user mask, number of trained items) of a cold-item run, its held-out
    items added by the run's own contract; ``needs`` names what the caller requires, for the error."""
    run = load_run(run_dir, device="cpu")
    if run.inputs.cold is None:
        raise SystemExit(f"{run_dir}: needs a cold-item run {needs}")
    ev = run_evaluator(run, "test")
    return run, ev, ev.groups.masks()["cold_item"], run.inputs.data.n_items


def analyse(run_dir: str) -> list[str]:
    run, ev, cold, n_warm = open_cold_run(run_dir, "with model.text_neighbours")
    model, tn = run.model, run.model.text_neighbours
    if tn is None:
        raise SystemExit(f"{run_dir}: needs a cold-item run with model.text_neighbours")
    new = slice(n_warm + 1, model.n_items + 1)
    lines = [
        f"## {run_dir}",
        "",
        "| new items' vectors | overall N@10 | cold-item N@10 |",
        "| --- | ---: | ---: |",
    ]
    lines.append(
        "| as trained (gate g = {:.2f} on the neighbours) | {:.4f} | {:.4f} |".format(
            tn.weight(torch.tensor([n_warm + 1])).item(), *overall_and_cold_ndcg(ev, model, cold)
        )
    )
    saved = tn.popularity_z.clone()
    with torch.no_grad():
        for gate_logit, label in [(-20.0, "own PCA projection only"), (20.0, "neighbours' mean only")]:
            slope = tn.gate_slope.item()
            tn.popularity_z[new] = (gate_logit - tn.gate_bias.item()) / slope if slope else 0.0
            lines.append("| {} | {:.4f} | {:.4f} |".format(label, *overall_and_cold_ndcg(ev, model, cold)))
        tn.popularity_z.copy_(saved)
        trained_gate = tn.weight(torch.arange(1, n_warm + 1)).squeeze(-1)
        rarest = trained_gate[torch.argsort(tn.popularity_z[1 : n_warm + 1])[: max(n_warm // 5, 1)]]
        own = model.items.weight[new].norm(dim=1).mean().item()
        trained = model.items.weight[1 : n_warm + 1].norm(dim=1).mean().item()
    lines += [
        "",
        f"gate on the neighbours, trained items: mean {trained_gate.mean():.2f}, "
        f"rarest 20% {rarest.mean():.2f}",
        f"mean norm: new items' own vectors {own:.3f}, trained items' {trained:.3f}",
        "",
    ]
    return lines


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print("\n".join(analyse(path)))
