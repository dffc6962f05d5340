"""CPU threads and the OpenMP wait policy for a training step, alone and beside a second job.

    python benchmarks/threads.py            # writes the "CPU threads and the OpenMP wait policy" section
    python benchmarks/threads.py --no-write

esrkit sets ``OMP_WAIT_POLICY=PASSIVE`` on import (esrkit/__init__.py), and torch uses every core by default.
This times loss_speed.py's SASRec step (hidden 64, Beauty 5-core's 12,101 items, batch 128; ``bce`` and the
fused ``ce`` in float32 and bfloat16) under each (wait policy, threads) pair, once alone and once as two
copies at the same time (two jobs sharing the machine, as when two seeds train side by side). Each
measurement is its own process, since the wait policy is read when torch loads OpenMP.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = [("PASSIVE", 1), ("PASSIVE", 2), ("ACTIVE", 2)]  # (OMP_WAIT_POLICY, torch threads)
LOSSES = ["bce", "ce, 64 rows per block", "ce, 64 rows per block, bfloat16"]


def start(policy: str, threads: int, out: Path, items: int, users: int, batches: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(HERE / "loss_speed.py"),
        f"--users={users}",
        f"--items={items}",
        "--block-sizes=64",
        f"--threads={threads}",
        f"--batches={batches}",
        "--no-write",
        f"--json={out}",
    ]
    env = dict(os.environ, OMP_WAIT_POLICY=policy)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)


def measure(policy: str, threads: int, copies: int, args) -> list[dict[str, float]]:
    """Milliseconds per step of each loss, one dict per copy run at the same time."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"{i}.json" for i in range(copies)]
        procs = [start(policy, threads, out, args.items, args.users, args.batches) for out in outs]
        if any(p.wait() for p in procs):
            raise SystemExit(f"loss_speed.py failed under OMP_WAIT_POLICY={policy}, {threads} thread(s)")
        return [{k: v * 1000 for k, v in json.loads(o.read_text())["losses"].items()} for o in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=12_101)
    ap.add_argument("--users", type=int, default=22_363)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from _results import machine, replace_section

    where = machine()
    rows = []
    for policy, threads in CONFIGS:
        alone = measure(policy, threads, 1, args)[0]
        shared = measure(policy, threads, 2, args)
        both = {k: max(copy[k] for copy in shared) for k in LOSSES}  # the slower copy: when both are done
        rows.append((policy, threads, alone, both))
        print(
            policy, threads, {k: round(alone[k], 1) for k in LOSSES}, {k: round(both[k], 1) for k in LOSSES}
        )
    base = rows[0][2]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {where}. `python benchmarks/threads.py`: loss_speed.py's "
        f"SASRec step (hidden 64, causal, {args.items:,} items, {args.users:,} users, batch 128; median of "
        f'{args.batches} steps) in its own process per setting; "two jobs": two copies at once, the slower '
        "copy's figure. Milliseconds per step (in brackets: against PASSIVE with 1 thread, alone).",
        "",
        "| OMP_WAIT_POLICY | threads | alone: bce | alone: ce | alone: ce bfloat16 | two jobs: bce "
        "| two jobs: ce | two jobs: ce bfloat16 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for policy, threads, alone, both in rows:
        cells = [f"{alone[k]:.1f} ({alone[k] / base[k]:.2f}x)" for k in LOSSES]
        cells += [f"{both[k]:.1f} ({both[k] / base[k]:.2f}x)" for k in LOSSES]
        lines.append(f"| {policy} | {threads} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    if args.no_write:
        print(text)
    else:
        replace_section("CPU threads and the OpenMP wait policy", text)


if __name__ == "__main__":
    main()
