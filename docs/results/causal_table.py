"""Does training-time leakage explain LLM-ESR's full-ranking deficit? Official (bidirectional) vs causal
attention.

    python docs/results/causal_table.py runs/results     # prints the Markdown table used in docs/RESULTS.md

The official SASRec and LLM-ESR's cross-attention attend in both directions while training next-item
prediction at every position, so position t reads item t+1. `model.causal=true` removes that (self- and
cross-attention). Each pair differs only in that switch; numbers are test-split N@10 from each run's
results.json (mean over its seeds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAIRS = [  # label, official run folder, causal run folder (relative to the results root)
    ("SASRec (hidden 128)", "study-scientific-sasrec/id", "scientific-id-causal"),
    ("LLMInit, MiniLM (hidden 128)", "study-scientific-sasrec/llminit-minilm", "scientific-llminit-causal"),
    ("LLM-ESR, MiniLM", "study-scientific-sasrec/llmesr-minilm", "scientific-llmesr-causal"),
]
CELLS = [("sampled", "overall"), ("sampled", "tail_item"), ("full", "overall"), ("full", "tail_item")]


def mean_metric(folder: Path, protocol: str, group: str, seed: int | None = None) -> float | None:
    paths = sorted(folder.glob("seed-*/results.json" if seed is None else f"seed-{seed}/results.json"))
    vals = [json.loads(p.read_text())["test"][protocol][group]["ndcg@10"] for p in paths]
    return sum(vals) / len(vals) if vals else None


def main(root: str) -> None:
    base = Path(root)
    print(
        "| model (seed 42) | "
        + " | ".join(f"{p} {g.replace('_', ' ')} N@10: official / causal" for p, g in CELLS)
        + " |"
    )
    print("| --- | " + " | ".join("---:" for _ in CELLS) + " |")
    for label, official, causal in PAIRS:
        cells = []
        for protocol, group in CELLS:
            a = mean_metric(base / official, protocol, group, seed=42)  # the causal runs have seed 42 only
            b = mean_metric(base / causal, protocol, group, seed=42)
            cells.append("–" if a is None or b is None else f"{a:.4f} / {b:.4f} ({(b - a) / a * 100:+.0f}%)")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
