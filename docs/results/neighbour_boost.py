"""A score bonus for the text neighbours of a user's last items, chosen on validation (docs/RESULTS.md, "Best
under full ranking").

    python docs/results/neighbour_boost.py RUN_DIR [RUN_DIR ...] [--betas 0,0.25,0.5,1] [--items 1,3]
        [--tails 0,2] [--json FILE] [--tail-first 0.01,0.02]

For a run of LLMInit with ``model.text_neighbours`` (its best checkpoint holds each item's K nearest items by
text): every candidate j among the K text neighbours of the user's last M input items gets beta x 2
sigmoid(-s z_j) added to its score, z_j its standardised log training popularity (summed over the M items
where their neighbours overlap): ``model.neighbour_boost`` (beta), ``model.neighbour_boost_items`` (M) and
``model.neighbour_boost_tail`` (s), which training and epoch selection do not use, so one trained run serves
every setting. Each setting of the grid is evaluated on validation and test (the same numbers as ``esrkit
evaluate RUN --split valid --neighbour-boost BETA --neighbour-boost-items M --neighbour-boost-tail S``); one
setting for all the runs given (a recipe's) is the one with the best mean validation full N@10 (ties to the
smaller bonus), reported on test beside no bonus, overall and on tail items. Makes no LLM call.

``--tail-first TOL[,TOL...]`` also applies a rule for catalogues that put their tail first, using validation
only: among the settings whose mean validation N@10 is at least (1 - TOL) x the best setting's, the one with
the best mean validation tail-item N@10 (the validation split's own tail items).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from esrkit.evaluation.metrics import metrics_from_ranks
from esrkit.runs.load import load_run, run_evaluator
from esrkit.utils.io import atomic_write_text

Setting = tuple[float, int, float]  # (beta, M, s)


def grid(betas: list[float], items: list[int], tails: list[float]) -> list[Setting]:
    """Every (beta, M, s), no bonus once, smallest bonus first (the order ties are broken in)."""
    on = sorted(itertools.product([b for b in betas if b > 0], items, tails))
    return [(0.0, 1, 0.0), *on]


def label(setting: Setting) -> str:
    beta, m, s = setting
    return "none" if beta == 0 else f"beta {beta:g}, last {m}, tail {s:g}"


def ranks_per_setting(ev, model, settings: list[Setting]) -> dict[Setting, np.ndarray]:
    """Full-ranking rank of each user's target under each setting (the evaluator applies the bonus, as the
    reported metrics and serving do)."""
    out = {}
    for beta, m, s in settings:
        model.neighbour_boost, model.bonus_history, model.neighbour_boost_tail = beta, m, s
        out[(beta, m, s)] = ev.evaluate(model, ("full",)).ranks["full"]
    return out


def ndcg(ranks: np.ndarray, mask: np.ndarray | None = None) -> float:
    return metrics_from_ranks(ranks if mask is None else ranks[mask], (10,))["ndcg@10"]


def analyse(run_dir: str, settings: list[Setting]) -> dict:
    run = load_run(run_dir, device="cpu")
    if run.model.text_neighbours is None:
        raise SystemExit(f"{run_dir}: needs a run with model.text_neighbours")
    valid_ev = run_evaluator(run, "valid")
    valid_tail = valid_ev.groups.masks()["tail_item"]
    valid_ranks = ranks_per_setting(valid_ev, run.model, settings)
    test_ev = run_evaluator(run, "test")
    tail = test_ev.groups.masks()["tail_item"]
    test = ranks_per_setting(test_ev, run.model, settings)  # every setting: a recipe fixes one for all seeds
    return {
        "run": run_dir,
        "settings": [
            {
                "beta": k[0],
                "items": k[1],
                "tail": k[2],
                "valid": ndcg(valid_ranks[k]),
                "valid_tail_item": ndcg(valid_ranks[k], valid_tail),
                "test": {"overall": ndcg(test[k]), "tail_item": ndcg(test[k], tail)},
            }
            for k in settings
        ],
    }


def best_by(field: str, candidates: list[Setting], settings: list[Setting], mean: dict) -> Setting:
    """The candidate with the best mean ``field`` (to 6 decimals); ties to the smaller bonus (earlier in
    ``settings``)."""
    return max(candidates, key=lambda k: (round(mean[k][field], 6), -settings.index(k)))


def pick_tail_first(settings: list[Setting], mean: dict, tolerance: float) -> Setting:
    """Best mean validation tail-item N@10 among the settings within ``tolerance`` (relative) of the best mean
    validation N@10; ties to the smaller bonus."""
    floor = (1 - tolerance) * max(mean[k]["valid"] for k in settings)
    near = [k for k in settings if mean[k]["valid"] >= floor]
    return best_by("valid_tail_item", near, settings, mean)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--betas", default="0,0.25,0.5,1")
    ap.add_argument("--items", default="1,3", help="M: the last M items' neighbours")
    ap.add_argument("--tails", default="0,2", help="s: rarer neighbours get more")
    ap.add_argument("--json", type=Path, help="also write every run's numbers here")
    ap.add_argument(
        "--tail-first",
        default="",
        metavar="TOL[,TOL...]",
        help="also pick by the tail-first rule: best validation tail-item N@10 within TOL of the best "
        "validation N@10 (e.g. 0.01,0.02)",
    )
    args = ap.parse_args()
    settings = grid(
        [float(x) for x in args.betas.split(",")],
        [int(x) for x in args.items.split(",")],
        [float(x) for x in args.tails.split(",")],
    )
    records = [analyse(path, settings) for path in args.runs]
    mean = {
        k: {
            "valid": float(np.mean([r["settings"][i]["valid"] for r in records])),
            "valid_tail_item": float(np.mean([r["settings"][i]["valid_tail_item"] for r in records])),
            **{
                g: float(np.mean([r["settings"][i]["test"][g] for r in records]))
                for g in ("overall", "tail_item")
            },
        }
        for i, k in enumerate(settings)
    }
    chosen = best_by("valid", settings, settings, mean)
    tolerances = [float(x) for x in args.tail_first.split(",") if x]
    tail_first = {tol: pick_tail_first(settings, mean, tol) for tol in tolerances}
    print(f"mean of {len(records)} run(s) | validation N@10 (tail items) | test N@10 | test tail-item N@10")
    print("| setting | validation | validation tail-item | test | test tail-item |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for k in settings:
        mark = " (chosen)" if k == chosen else ""
        mark += "".join(f" (tail-first {tol:g})" for tol, pick in tail_first.items() if pick == k)
        m = mean[k]
        print(
            f"| {label(k)}{mark} | {m['valid']:.5f} | {m['valid_tail_item']:.5f} | {m['overall']:.4f} "
            f"| {m['tail_item']:.4f} |"
        )
    if args.json:
        chosen_record = {"beta": chosen[0], "items": chosen[1], "tail": chosen[2]}
        record = {"chosen": chosen_record, "runs": records}
        if tail_first:
            record["tail_first"] = [
                {"tolerance": tol, "beta": pick[0], "items": pick[1], "tail": pick[2]}
                for tol, pick in tail_first.items()
            ]
        text = json.dumps(record, indent=2) + "\n"
        atomic_write_text(args.json, text)


if __name__ == "__main__":
    main()
