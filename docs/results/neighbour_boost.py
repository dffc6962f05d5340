"""A score bonus for the text neighbours of a user's last item, chosen on validation (docs/RESULTS.md, "Best
under full ranking").

    python docs/results/neighbour_boost.py RUN_DIR [RUN_DIR ...] [--betas 0,0.25,0.5,1,2]

For a run of LLMInit with ``model.text_neighbours`` (its best checkpoint holds each item's K nearest items by
text): every candidate j among the K text neighbours of the user's last input item gets ``beta`` added to its
score: ``model.neighbour_boost``, which training and epoch selection do not use, so one trained run serves
every beta. ``beta`` is chosen on the validation split (highest overall full N@10; ties to the smaller beta)
and reported on test beside beta = 0, overall and on tail items (the same choice as ``esrkit evaluate RUN
--split valid --neighbour-boost BETA`` for each beta); then one beta for all the runs given (a recipe's
setting), by their mean validation N@10. Makes no LLM call.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from esrkit.evaluation.metrics import metrics_from_ranks
from esrkit.runs.load import load_run, run_evaluator
from esrkit.utils.io import atomic_write_text


def ranks_per_beta(ev, model, betas: list[float]) -> dict[float, np.ndarray]:
    """Full-ranking rank of each user's target with ``model.neighbour_boost`` at each beta (the evaluator
    applies it, as the reported metrics and serving do)."""
    out = {}
    for beta in betas:
        model.neighbour_boost = beta
        out[beta] = ev.evaluate(model, ("full",)).ranks["full"]
    return out


def ndcg(ranks: np.ndarray, mask: np.ndarray | None = None) -> float:
    return metrics_from_ranks(ranks if mask is None else ranks[mask], (10,))["ndcg@10"]


def analyse(run_dir: str, betas: list[float]) -> dict:
    run = load_run(run_dir, device="cpu")
    tn = run.model.text_neighbours
    if tn is None:
        raise SystemExit(f"{run_dir}: needs a run with model.text_neighbours")
    valid_ev = run_evaluator(run, "valid")
    valid = {b: ndcg(r) for b, r in ranks_per_beta(valid_ev, run.model, betas).items()}
    chosen = max(betas, key=lambda b: (round(valid[b], 6), -b))
    test_ev = run_evaluator(run, "test")
    tail = test_ev.groups.masks()["tail_item"]
    test = ranks_per_beta(test_ev, run.model, betas)  # every beta: a recipe fixes one for all seeds
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
    mean_valid = {b: float(np.mean([r["valid"][b] for r in records])) for b in betas}
    fixed = max(betas, key=lambda b: (round(mean_valid[b], 6), -b))
    test_at = {g: float(np.mean([r["test"][fixed][g] for r in records])) for g in ("overall", "tail_item")}
    per_beta = ", ".join(f"{b:g}: {v:.5f}" for b, v in mean_valid.items())
    print(
        f"\none beta for all runs, by mean validation N@10: {fixed:g} ({per_beta}); "
        f"test N@10 {test_at['overall']:.4f}, tail-item {test_at['tail_item']:.4f}"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps({"betas": betas, "runs": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
