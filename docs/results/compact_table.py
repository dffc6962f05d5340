"""One line per run of a study record: the numbers docs/RESULTS.md quotes, with each seed's stopping epochs.

    python docs/results/compact_table.py STUDY_JSON [--versus RUN] [--cold]

Reads only the record (study.json, as `esrkit study compare` writes and docs/results/ publishes), so the table
can be rebuilt without the run folders. Columns: test N@10 under full ranking (overall, tail items, tail
users, and with --cold the held-out items), the paper's sampled N@10 (overall, tail items), the relative
change of full overall N@10 against --versus (mean over seeds), and best / last epoch per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _mean(record: dict, protocol: str, group: str) -> float | None:
    values = [
        seed["results"]["test"][protocol][group]["ndcg@10"]
        for seed in record.values()
        if group in seed["results"]["test"].get(protocol, {})
    ]
    return statistics.fmean(values) if values else None


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _epochs(results: dict) -> str:
    if results["best_epoch"] < 0:
        return "not trained"
    return f"{results['best_epoch']}/{results['epochs_run']}"


def compact_table(study: dict, versus: str | None = None, cold: bool = False) -> str:
    groups = [("full", "overall"), ("full", "tail_item"), ("full", "tail_user")]
    groups += [("full", "cold_item")] if cold else []
    groups += [("sampled", "overall"), ("sampled", "tail_item")]
    head = ["full N@10", "full tail-item", "full tail-user"] + (["full cold-item"] if cold else [])
    head += ["sampled N@10", "sampled tail-item"]
    head += [f"full vs {study['labels'].get(versus, versus)}"] if versus else []
    lines = [
        "| run | seeds | " + " | ".join(head) + " | best / last epoch |",
        "| --- | ---: | " + " | ".join("---:" for _ in head) + " | --- |",
    ]
    base = _mean(study["records"][versus], "full", "overall") if versus in study["records"] else None
    for run in study["runs"]:
        record = study["records"].get(run)
        if not record:
            continue
        cells = [_cell(_mean(record, p, g)) for p, g in groups]
        if versus:
            value = _mean(record, "full", "overall")
            cells.append("–" if run == versus or not base else f"{(value - base) / base * 100:+.1f}%")
        epochs = ", ".join(_epochs(seed["results"]) for seed in record.values())
        label = study["labels"].get(run, run)
        lines.append(f"| {label} | {len(record)} | " + " | ".join(cells) + f" | {epochs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--versus", default=None, help="run name the full overall N@10 is compared with")
    parser.add_argument("--cold", action="store_true", help="add the held-out (cold) items' column")
    args = parser.parse_args()
    print(compact_table(json.loads(args.study.read_text()), args.versus, args.cold), end="")


if __name__ == "__main__":
    main()
