"""What a product of a shape not seen before costs: the first call against the same call again.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/block_shapes.py               # Beauty 5-core's 12,101 items
    ... --items 57289 --no-write

The fused ``ce`` (esrkit/training/losses.py) makes three products per block of scored positions: the scores
(items x rows), the states' gradient (rows x hidden) and the items' gradient (items x hidden). A batch's last
block used to have as many rows as were left, a number of its own in nearly every batch; with bfloat16
products oneDNN builds a kernel for every new shape, so each step paid that build on top of the product. This
times each product at row counts never used before in the process (the first call) and the same call once
more, with float32 and with bfloat16 factors; one thread. Figures go to the "Ranking losses: block shapes"
section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from esrkit.training.losses import _cpu_bfloat16_products  # noqa: E402

PRECISION = {False: "float32", True: "bfloat16"}


def block_products(items: torch.Tensor, rows: int, gen: torch.Generator):
    """The fused ce's three products for a block of ``rows`` states, as (name, call) pairs."""
    h = torch.randn(rows, items.shape[1], generator=gen)
    scores = torch.empty(items.shape[0], rows)
    torch.mm(items, h.T, out=scores)
    scores.exp_()
    grad_items = torch.zeros_like(items)
    return [
        ("scores (items x rows)", lambda: torch.mm(items, h.T, out=scores)),
        ("states' gradient (rows x hidden)", lambda: torch.mm(scores.T, items)),
        ("items' gradient (items x hidden)", lambda: grad_items.addmm_(scores, h)),
    ]


def time_first_and_again(items: torch.Tensor, row_counts: list[int], low: bool) -> dict[str, tuple]:
    """Median milliseconds of each product's first call at a new row count, and of the same call again."""
    gen = torch.Generator().manual_seed(0)
    first: dict[str, list[float]] = {}
    again: dict[str, list[float]] = {}
    with _cpu_bfloat16_products(low):
        for rows in row_counts:
            for name, call in block_products(items, rows, gen):
                times = []
                for _ in range(2):
                    t0 = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t0)
                first.setdefault(name, []).append(times[0] * 1e3)
                again.setdefault(name, []).append(times[1] * 1e3)
    return {name: (statistics.median(first[name]), statistics.median(again[name])) for name in first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=12_101)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--shapes", type=int, default=12, help="new row counts timed per precision")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    items = torch.randn(args.items, args.hidden, generator=torch.Generator().manual_seed(1)) * 0.1
    # row counts below a 256-row block, each used once in the process, none a multiple of 16
    counts = {low: [101 + 2 * low + 13 * k for k in range(args.shapes)] for low in (False, True)}
    results = {low: time_first_and_again(items, counts[low], low) for low in (False, True)}
    for low, res in results.items():
        for name, (a, b) in res.items():
            print(f"{PRECISION[low]} {name}: first {a:.2f} ms, again {b:.2f} ms", flush=True)
    if not args.no_write:
        write(args, results)


def write(args, results) -> None:
    from _results import machine, replace_section

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}, 1 thread. {args.items:,} items, hidden "
        f"{args.hidden}; median over {args.shapes} row counts from 101 to "
        f"{103 + 13 * (args.shapes - 1)}, each new to the process. Command: "
        "`python benchmarks/block_shapes.py"
        + (f" --items {args.items}" if args.items != 12_101 else "")
        + "`.",
        "",
        "| product | factors | first call of a shape, ms | the same call again, ms | first / again |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for low, res in results.items():
        for name, (a, b) in res.items():
            lines.append(f"| {name} | {PRECISION[low]} | {a:.2f} | {b:.2f} | {a / b:.1f}x |")
    replace_section(f"Ranking losses: block shapes ({args.items:,} items)", "\n".join(lines))


if __name__ == "__main__":
    main()
