"""A plan's confirmation: a `tune-bonus` record's settings against a study record's baselines.

    python docs/results/tail_first_confirmation.py BONUS_JSON STUDY_JSON [--recipe-bonus 0.25,3,1]
        [--also 0,1,0,1,3,1 ...] [--baselines gru4rec-ce-seq,llminit-ce-seq]

BONUS_JSON is what `esrkit tune-bonus --with-test --tail-first TOL --json` (or neighbour_boost.py) wrote for
the confirmation seeds; STUDY_JSON the study record holding the baselines `sasrec-ce` and `llminit-ce` on the
same seeds (docs/results/confirm-scientific-45-47.json). For the configuration as trained, with the recipe's
bonus, with validation's choice and with each tail-first pick it prints test full N@10 overall and on tail
items, the change against each baseline with a two-sided t-test over seeds, and the plans' test
(results/tail-first-plan*.md, results/text-boost-plan.md): above both baselines with p < 0.05, tail items at
least 1.5x SASRec-CE's. Records written before the text term (model.text_boost) read as having it off.
``--baselines`` names another study's pair (the ID-only one first), e.g. the GRU4Rec study's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from esrkit.evaluation.significance import seed_ttest
from esrkit.runs.bonus import NO_BONUS, Setting

BASELINES = ("sasrec-ce", "llminit-ce")


def seed_of(run_dir: str) -> str:
    return Path(run_dir).name.removeprefix("seed-")


def baseline_scores(
    study: dict, seeds: list[str], group: str, names: tuple[str, ...]
) -> dict[str, list[float]]:
    records = study["records"]
    return {
        name: [records[name][s]["results"]["test"]["full"][group]["ndcg@10"] for s in seeds] for name in names
    }


def setting_scores(bonus: dict, key: Setting) -> tuple[list[float], list[float]]:
    overall, tail = [], []
    for run in bonus["runs"]:
        row = next(r for r in run["settings"] if Setting.from_record(r) == key)
        overall.append(row["test"]["overall"])
        tail.append(row["test"]["tail_item"])
    return overall, tail


def describe(label: str, key, overall, tail, base, base_tail) -> str:
    """One setting's line; ``base`` holds the ID-only baseline first, then LLMInit."""
    mean, mean_tail = statistics.mean(overall), statistics.mean(tail)
    id_only, llminit = base
    ratio = mean_tail / statistics.mean(base_tail[id_only])
    parts = [f"{label} ({key.label()}): N@10 {mean:.4f}"]
    passed = ratio >= 1.5
    for name in base:
        gain, p = mean / statistics.mean(base[name]) - 1, seed_ttest(overall, base[name])
        passed &= gain > 0 and p < 0.05
        parts.append(f"{gain:+.1%} vs {name} (p = {p:.2g})")
    tail_gain = mean_tail / statistics.mean(base_tail[llminit]) - 1
    parts.append(
        f"tail items {mean_tail:.4f} = {ratio:.2f}x {id_only}'s ({tail_gain:+.1%} vs {llminit}'s, "
        f"p = {seed_ttest(tail, base_tail[llminit]):.2g})"
    )
    return "; ".join(parts) + f" -> plan's test {'met' if passed else 'not met'}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bonus_json")
    parser.add_argument("study_json")
    parser.add_argument("--recipe-bonus", default="0.25,3,1", help="beta,items,tail of the recipe's bonus")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="B,M,S[,G,m,T[,A,H]]",
        help="one more setting to print (the bonus's three numbers, then the text term's, then the "
        "popularity tilt's two), repeatable",
    )
    parser.add_argument("--baselines", default=",".join(BASELINES), help="the ID-only and LLMInit rows")
    args = parser.parse_args(argv)
    names = tuple(args.baselines.split(","))
    bonus = json.loads(Path(args.bonus_json).read_text())
    study = json.loads(Path(args.study_json).read_text())
    if "test" not in bonus["runs"][0]["settings"][0]:
        raise SystemExit(f"{args.bonus_json}: no test numbers; write it with --with-test")
    seeds = [seed_of(run["run"]) for run in bonus["runs"]]
    base = baseline_scores(study, seeds, "overall", names)
    base_tail = baseline_scores(study, seeds, "tail_item", names)
    beta, items, tail = args.recipe_bonus.split(",")
    rows = [("as trained", NO_BONUS), ("recipe bonus", Setting(float(beta), int(items), float(tail)))]
    rows.append(("validation's choice", Setting.from_record(bonus["chosen"])))
    for pick in bonus.get("tail_first", []):
        rows.append((f"tail-first {pick['tolerance']:g}", Setting.from_record(pick)))
    for text in args.also:
        values = text.split(",")
        kinds = (float, int, float, float, int, float, float, int)
        rows.append(("also", Setting(*(kind(v) for kind, v in zip(kinds, values, strict=False)))))
    levels = [
        f"{name} {statistics.mean(base[name]):.4f}, tail items {statistics.mean(base_tail[name]):.4f}"
        for name in names
    ]
    print(f"seeds {', '.join(seeds)}; " + "; ".join(levels))
    graded = {Setting.from_record(r) for r in bonus["runs"][0]["settings"]}
    for label, key in rows:
        if key not in graded:  # a small confirmation grid need not hold the recipe's setting
            print(f"{label} ({key.label()}): not in {args.bonus_json}'s grid")
            continue
        print(describe(label, key, *setting_scores(bonus, key), base, base_tail))


if __name__ == "__main__":
    main()
