"""New items under the ranking-time text terms: runs trained with held-out items (``data.cold_items``), ranked
on their test split with the recipe's settings and with each term turned off (no retraining).

    python docs/results/text_boost_cold.py OUT_JSON RUN/seed-42 RUN/seed-43 RUN/seed-44
    python docs/results/text_boost_cold.py --record OUT_JSON      # print the table of a written record

The runs' own ranking options are "the recipe"; the other rows change only the options named. Prints full
N@10 overall, on tail items and on the held-out items added from their text ("cold_item"), mean over the runs,
and with two runs or more each row's two-sided t-test over seeds against the recipe's row, for docs/RESULTS.md
("Cold items"). An OUT_JSON that exists keeps its runs (a seed trained later is added to the seeds already
measured); a run named again is measured again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from esrkit.evaluation.significance import seed_ttest
from esrkit.runs.bonus import Setting, rank_settings
from esrkit.runs.load import load_run
from esrkit.utils.io import atomic_write_text

SETTINGS = {  # label -> fields of the run's own Setting replaced
    "the recipe's ranking terms": {},
    "without the text term's tail weighting": {"text_tail": 0.0},
    "with the text term's tail weighting 1": {"text_tail": 1.0},  # for recipes that chose 0
    "the bonus alone": {"text": 0.0},
    "the text term alone": {"beta": 0.0},
    "neither": {"beta": 0.0, "text": 0.0},
}
GROUPS = ("overall", "tail_item", "cold_item")


def evaluate(run_dir: str) -> dict[str, dict[str, float]]:
    run = load_run(run_dir, "cpu")  # held-out items added from their text, as serving adds them
    recipe = Setting.of(run.model)
    ranked = rank_settings(run, "test", [recipe._replace(**changes) for changes in SETTINGS.values()])
    return {label: {g: ranked[g][i] for g in GROUPS} for i, label in enumerate(SETTINGS)}


def print_table(record: dict) -> None:
    runs = list(record)
    tested = len(runs) >= 2
    header = " | ".join(f"{g} N@10" + (" (p)" if tested else "") for g in ("full", "tail-item", "cold-item"))
    print(f"| ranking ({len(runs)} runs) | {header} |")
    print("| --- |" + " ---: |" * len(GROUPS))
    recipe = next(iter(SETTINGS))
    for label in (label for label in SETTINGS if label in record[runs[0]]):  # records may predate a row
        cells = []
        for g in GROUPS:
            values, base = [record[r][label][g] for r in runs], [record[r][recipe][g] for r in runs]
            p = f" ({seed_ttest(values, base):.3f})" if tested and label != recipe else ""
            cells.append(f"{np.mean(values):.4f}{p}")
        print(f"| {label} | " + " | ".join(cells) + " |")


def main(argv: list[str]) -> None:
    if argv[0] == "--record":
        print_table(json.loads(Path(argv[1]).read_text()))
        return
    out = Path(argv[0])
    record = json.loads(out.read_text()) if out.exists() else {}
    record.update({run_dir: evaluate(run_dir) for run_dir in argv[1:]})
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")  # the record's format so far
    print_table(record)


if __name__ == "__main__":
    main(sys.argv[1:])
