"""Which embedding inputs the published records were trained on.

    python docs/results/record_inputs.py [docs/results/*.json]

For every study record (a study.json with ``records``) and every seed with LLM embeddings, the run's dataset,
its prompt template, the prompts hash (the middle part of the embedding directory's name), the provider's
options and the item table's fingerprint (a hash of the vectors themselves). Seeds of one dataset and provider
whose fingerprints differ were trained on different vectors: another prompt template, another provider option,
or another machine's last bits (MiniLM on the AMD EPYC and on the Intel Xeon; docs/RESULTS.md). Two prompts
hashes with one fingerprint are the same vectors under two versions of the hash. So `esrkit study`'s refusal
to pool seeds with different fingerprints can be foreseen from the published files alone.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def seed_inputs(record: dict) -> tuple | None:
    """(dataset fp, provider, options, template, prompts hash, item fingerprint) of one seed, or None."""
    items = (record.get("provenance", {}).get("fingerprints", {}).get("embeddings") or {}).get("items")
    if not isinstance(items, dict) or not items.get("fingerprint"):
        return None
    dataset, prompts, _ = Path(items.get("source", "--")).name.split("-", 2)
    options = json.dumps(record.get("config", {}).get("embedding", {}).get("options", {}), sort_keys=True)
    return (
        dataset,
        items.get("provider", "?"),
        options,
        items.get("templates", "?"),
        prompts,
        items["fingerprint"][:12],
    )


def collect(paths: list[Path]) -> dict[tuple, set[str]]:
    """inputs -> the 'file:run' names trained on them."""
    found: dict[tuple, set[str]] = defaultdict(set)
    for path in paths:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("records"), dict):
            continue
        for run, seeds in data["records"].items():
            for record in seeds.values():
                inputs = seed_inputs(record)
                if inputs is not None:
                    found[inputs].add(f"{path.stem}:{run}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="*", type=Path, help="study records (default: docs/results/*.json)")
    args = parser.parse_args()
    found = collect(args.records or sorted(HERE.glob("*.json")))
    print("| dataset | provider | options | template | prompts hash | item fingerprint | runs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for inputs in sorted(found):
        runs = sorted(found[inputs])
        shown = ", ".join(runs[:4]) + (f" and {len(runs) - 4} more" if len(runs) > 4 else "")
        print("| " + " | ".join(inputs) + f" | {shown} |")


if __name__ == "__main__":
    main()
