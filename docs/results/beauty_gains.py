"""LLM-ESR's relative gains on Beauty 5-core against SASRec and LLMInit (same MiniLM inputs), with seed
t-tests.

    python docs/results/beauty_gains.py runs/results     # prints the Markdown table used in docs/RESULTS.md

The three runs come from docs/results/run_experiments.sh step 2b. They are named beauty5-<model>-sasrec rather
than the study's id / llmesr-<provider> / llminit-<provider>, so this script relabels them and reuses the
study's own gains table (esrkit.reporting.study.gains_table): the same arithmetic and t-test as the Scientific
study's table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from esrkit.reporting.collect import read_run
from esrkit.reporting.study import gains_markdown, gains_table

RUNS = {
    "id": "beauty5-id-sasrec",
    "llminit-minilm": "beauty5-llminit-sasrec",
    "llmesr-minilm": "beauty5-llmesr-sasrec",
}


def main(root: str) -> None:
    runs = []
    for study_name, folder in RUNS.items():
        run = read_run(Path(root) / folder)
        if run is None:
            sys.exit(f"{Path(root) / folder}: no finished seed")
        run.name = study_name
        runs.append(run)
        print(f"<!-- {folder}: seeds {run.seeds} -->")
    print(gains_markdown(gains_table(runs)), end="")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
