"""A score bonus for the text neighbours of a user's last item, chosen on validation (docs/RESULTS.md, "Best
under full ranking").

    python docs/results/neighbour_boost.py RUN_DIR [RUN_DIR ...] [--betas 0,0.25,0.5,1,2]

For a run of LLMInit with ``model.text_neighbours`` (its best checkpoint holds each item's K nearest items by
text): every candidate j among the K text neighbours of the user's last input item gets ``beta`` added to its
score (full ranking, history excluded, as the evaluator ranks). ``beta`` is chosen on the validation split
(highest overall N@10; ties to the smaller beta) and reported on test beside beta = 0, overall and on tail
items.
A post-hoc analysis of trained runs: the bonus is not part of training, evaluation or serving (no option sets
it). Makes no LLM call.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from esrkit.evaluation.metrics import metrics_from_ranks, rank_of_target
from esrkit.runs.load import load_run, run_evaluator
from esrkit.utils.io import atomic_write_text


def last_input_items(ev, rows: np.ndarray) -> np.ndarray:
    """The last item of each user's input for the evaluator's split (the item before the target)."""
    prefix = ev.data.lengths() - (2 if ev.split == "valid" else 1)
    return ev.data.items[ev.data.offsets[rows] + prefix[rows] - 1].astype(np.int64)


def ranks_per_beta(ev, model, neighbours: torch.Tensor, betas: list[float]) -> dict[float, np.ndarray]:
    """Full-ranking rank of each user's target with the bonus at each beta (ties broken as the evaluator
    does)."""
    with torch.no_grad():
        users, items = ev.user_vectors(model), model.all_item_vectors()
    n_users = len(users)
    targets = torch.as_tensor(ev.targets[:n_users])
    prefix = ev.data.lengths() - (2 if ev.split == "valid" else 1)
    out: dict[float, list] = {b: [] for b in betas}
    gens = {b: torch.Generator().manual_seed(ev.seed) for b in betas}  # one tie-breaking stream, as evaluated
    block = 1024
    for start in range(0, n_users, block):
        rows = np.arange(start, min(start + block, n_users))
        base = users[rows] @ items.T
        bonus = torch.zeros_like(base)
        bonus.scatter_(1, neighbours[torch.as_tensor(last_input_items(ev, rows))], 1.0)
        bonus[:, 0] = 0.0
        hist_r, hist_i = ev._history(rows, prefix)
        tgt = targets[rows]
        for beta in betas:
            scores = base + beta * bonus
            t = scores.gather(1, tgt.unsqueeze(1)).squeeze(1)
            scores[:, 0] = float("-inf")
            scores[hist_r, hist_i] = float("-inf")
            scores.scatter_(1, tgt.unsqueeze(1), float("-inf"))
            out[beta].append(rank_of_target(t, scores, ev.ties, gens[beta]))
    return {b: torch.cat(v).numpy() for b, v in out.items()}


def ndcg(ranks: np.ndarray, mask: np.ndarray | None = None) -> float:
    return metrics_from_ranks(ranks if mask is None else ranks[mask], (10,))["ndcg@10"]


def analyse(run_dir: str, betas: list[float]) -> dict:
    run = load_run(run_dir, device="cpu")
    tn = run.model.text_neighbours
    if tn is None:
        raise SystemExit(f"{run_dir}: needs a run with model.text_neighbours")
    neighbours = tn.neighbour_ids[: run.model.n_items + 1].cpu()
    valid_ev = run_evaluator(run, "valid")
    valid = {b: ndcg(r) for b, r in ranks_per_beta(valid_ev, run.model, neighbours, betas).items()}
    chosen = max(betas, key=lambda b: (round(valid[b], 6), -b))
    test_ev = run_evaluator(run, "test")
    tail = test_ev.groups.masks()["tail_item"]
    test = ranks_per_beta(test_ev, run.model, neighbours, sorted({0.0, chosen}))
    return {
        "run": run_dir,
        "valid": valid,
        "beta": chosen,
        "test": {b: {"overall": ndcg(r), "tail_item": ndcg(r, tail)} for b, r in test.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--betas", default="0,0.25,0.5,1,2")
    ap.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = ap.parse_args()
    betas = sorted({float(x) for x in args.betas.split(",")} | {0.0})
    print(
        "| run | validation N@10 per beta | chosen beta | test N@10, beta 0 -> chosen | test tail-item N@10 |"
    )
    print("| --- | --- | ---: | --- | --- |")
    records = []
    for path in args.runs:
        r = analyse(path, betas)
        records.append(r)
        per_beta = ", ".join(f"{b:g}: {v:.4f}" for b, v in r["valid"].items())
        zero, best = r["test"][0.0], r["test"][r["beta"]]
        print(
            f"| {path} | {per_beta} | {r['beta']:g} | {zero['overall']:.4f} -> {best['overall']:.4f} | "
            f"{zero['tail_item']:.4f} -> {best['tail_item']:.4f} |",
            flush=True,
        )
    if args.json:
        atomic_write_text(args.json, json.dumps({"betas": betas, "runs": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
