"""Compare esrkit's ID-only backbones on the paper's own Fashion/Yelp interactions with the paper's Table 1
rows.

    python docs/results/paper_gap.py runs/results        # prints the Markdown table used in docs/RESULTS.md

The paper's numbers (Liu et al., NeurIPS 2024, Table 1, sampled protocol, mean of 3 seeds) are the comparison
target; esrkit's come from each run's results.json (mean over the seeds present).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GROUPS = ("overall", "tail_item", "head_item", "tail_user", "head_user")
PAPER = {  # (dataset, backbone) -> H@10/N@10 for overall, tail item, head item, tail user, head user
    ("fashion", "sasrec"): [
        (0.4956, 0.4429),
        (0.0454, 0.0235),
        (0.6748, 0.6099),
        (0.3967, 0.3390),
        (0.6239, 0.5777),
    ],
    ("fashion", "bert4rec"): [
        (0.4668, 0.3613),
        (0.0142, 0.0067),
        (0.6470, 0.5024),
        (0.3500, 0.2344),
        (0.6183, 0.5258),
    ],
    ("fashion", "gru4rec"): [
        (0.4798, 0.3809),
        (0.0257, 0.0101),
        (0.6606, 0.5285),
        (0.3781, 0.2577),
        (0.6118, 0.5408),
    ],
    ("yelp", "sasrec"): [
        (0.5940, 0.3597),
        (0.1142, 0.0495),
        (0.7353, 0.4511),
        (0.5893, 0.3578),
        (0.6122, 0.3672),
    ],
    ("yelp", "bert4rec"): [
        (0.5307, 0.3035),
        (0.0115, 0.0044),
        (0.6836, 0.3916),
        (0.5325, 0.3047),
        (0.5241, 0.2988),
    ],
    ("yelp", "gru4rec"): [
        (0.4879, 0.2751),
        (0.0171, 0.0059),
        (0.6265, 0.3544),
        (0.4919, 0.2777),
        (0.4726, 0.2653),
    ],
}


def ours(folder: Path) -> list[tuple[float, float]] | None:
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("seed-*/results.json"))]
    if not results:
        return None
    out = []
    for g in GROUPS:
        hr = sum(r["test"]["sampled"][g]["hr@10"] for r in results) / len(results)
        nd = sum(r["test"]["sampled"][g]["ndcg@10"] for r in results) / len(results)
        out.append((hr, nd))
    return out, len(results)


def main(root: str) -> None:
    print(
        "| dataset | backbone | seeds | overall H@10 (paper) | gap | overall N@10 (paper) | tail item "
        "H@10 (paper) "
        "| head item H@10 (paper) | tail user H@10 (paper) | head user H@10 (paper) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (ds, bb), paper in PAPER.items():
        got = ours(Path(root) / f"{ds}-paper-ids-{bb}")
        if got is None:
            print(f"| {ds} | {bb} | 0 | (not run yet) | | | | | | |")
            continue
        vals, n = got
        cells = [
            f"{vals[0][0]:.4f} ({paper[0][0]:.4f})",
            f"{vals[0][0] - paper[0][0]:+.4f}",
            f"{vals[0][1]:.4f} ({paper[0][1]:.4f})",
        ]
        cells += [f"{vals[i][0]:.4f} ({paper[i][0]:.4f})" for i in range(1, 5)]
        print(f"| {ds} | {bb} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
