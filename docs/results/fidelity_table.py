"""Print the fidelity table of docs/RESULTS.md from esrkit's per-epoch metrics (metrics-<seed>.jsonl here).

The official numbers are the validation curves published with shared/reference/official-run-beauty5 (the
official code run on the same inputs): they are the comparison target, not results of esrkit.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "fidelity-beauty5"
OFFICIAL = {  # seed -> validation N@10 per epoch (official code, H200, shared/reference/official-run-beauty5)
    42: [
        0.29210,
        0.33153,
        0.35202,
        0.36520,
        0.37159,
        0.37638,
        0.38241,
        0.37784,
        0.38232,
        0.38220,
        0.38104,
        0.37832,
    ],
    43: [
        0.29283,
        0.32950,
        0.35331,
        0.36460,
        0.37134,
        0.37526,
        0.37925,
        0.38178,
        0.37844,
        0.38232,
        0.38183,
        0.38044,
    ],
    44: [
        0.29008,
        0.32966,
        0.35151,
        0.36622,
        0.37268,
        0.37915,
        0.37872,
        0.38241,
        0.37949,
        0.37812,
        0.37929,
        0.37612,
    ],
}


def main() -> None:
    ours = {}
    for seed in OFFICIAL:
        rows = [
            json.loads(line) for line in (HERE / f"metrics-{seed}.jsonl").read_text().splitlines() if line
        ]
        ours[seed] = [r["valid"]["sampled"]["overall"]["ndcg@10"] for r in rows]
    n = min(len(v) for v in ours.values())
    print("| epoch | " + " | ".join(f"seed {s}: esrkit / official" for s in OFFICIAL) + " |")
    print("| --- | " + " | ".join("---:" for _ in OFFICIAL) + " |")
    for e in range(n):
        print(f"| {e} | " + " | ".join(f"{ours[s][e]:.4f} / {OFFICIAL[s][e]:.4f}" for s in OFFICIAL) + " |")
    best_ours = [max(ours[s][:n]) for s in OFFICIAL]
    best_official = [max(OFFICIAL[s]) for s in OFFICIAL]
    mo, mf = sum(best_ours) / 3, sum(best_official) / 3
    print()
    print(
        f"Best validation N@10 (epochs 0-{n - 1} for esrkit, 0-11 official): esrkit "
        + ", ".join(f"{b:.4f}" for b in best_ours)
        + f" (mean {mo:.4f}); official "
        + ", ".join(f"{b:.4f}" for b in best_official)
        + f" (mean {mf:.4f}); difference {mo - mf:+.4f}."
    )


if __name__ == "__main__":
    main()
