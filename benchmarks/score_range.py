"""How far trained models' scores are from needing the fused ``ce``'s shift (esrkit/training/losses.py).

    python benchmarks/score_range.py runs/scientific-best/seed-42 [RUN_DIR ...]
    python benchmarks/score_range.py RUN_DIR --batches 20 --no-write

The fused softmax exponentiates a block's scores as they are and redoes the block shifted by its column maxima
only where a column's sum of exponentials leaves ``UNSHIFTED_SUMS``; a model whose scores often lie beyond
about +-40 would pay one more product per block. For each trained run this feeds ``--batches`` training
batches of its own data through its best checkpoint with ``model.loss=ce`` (training mode, as in training) and
reports the range of the scores and of log z (z the unshifted sum of each scored position) and the share of
blocks that needed the shift.

Results go to the "Ranking losses: score range of trained models" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from esrkit.runs.load import load_run  # noqa: E402
from esrkit.training import losses  # noqa: E402
from esrkit.training.losses import LossSpec  # noqa: E402
from esrkit.training.trainer import Trainer, TrainerOptions  # noqa: E402


class BlockRecorder:
    """Wraps ``losses._softmax_numerators`` to record each block's scores before they are exponentiated."""

    def __init__(self) -> None:
        self.original = losses._softmax_numerators
        self.lo = self.hi = 0.0
        self.log_z: list[Tensor] = []
        self.blocks = self.shifted = 0

    def __call__(self, scores, refill, sums):
        self.lo, self.hi = min(self.lo, scores.min().item()), max(self.hi, scores.max().item())
        self.log_z.append(torch.logsumexp(scores, 0))
        weights, z, shift = self.original(scores, refill, sums)
        self.blocks += 1
        self.shifted += not isinstance(shift, float)
        return weights, z, shift


def score_range(run_dir: Path, batches: int) -> dict:
    run = load_run(run_dir, device="cpu")
    recorder = BlockRecorder()
    trainer = Trainer(
        run.model, run.seqs, TrainerOptions(loss=LossSpec("ce")), lambda m, e: {}, None, None, progress=False
    )
    order, gen = trainer.epoch_order(0), torch.Generator().manual_seed(0)
    losses._softmax_numerators = recorder
    try:
        for b in range(batches):
            trainer.step(order[b * 128 : (b + 1) * 128], gen)
    finally:
        losses._softmax_numerators = recorder.original
    log_z = torch.cat(recorder.log_z)
    return {
        "run": str(run_dir),
        "model": f"{run.cfg.model.name}, hidden {run.cfg.model.hidden}, {run.data.n_items:,} items",
        "scores": (recorder.lo, recorder.hi),
        "log_z": (log_z.min().item(), log_z.max().item()),
        "blocks": recorder.blocks,
        "shifted": recorder.shifted,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [score_range(r, args.batches) for r in args.runs]
    low, high = (math.log(x) for x in losses.UNSHIFTED_SUMS)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}; {args.batches} training batches of 128 users per run, "
        f"model.loss=ce; the unshifted window is log z in [{low:.1f}, {high:.1f}]. Command: `python "
        f"benchmarks/score_range.py RUN_DIR ...`.",
        "",
        "| run | model | scores | log z | blocks shifted |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for r in rows:
        name = f"{Path(r['run']).parent.name}/{Path(r['run']).name}"
        scores, log_z = "{:.1f} to {:.1f}".format(*r["scores"]), "{:.1f} to {:.1f}".format(*r["log_z"])
        lines.append(f"| {name} | {r['model']} | {scores} | {log_z} | {r['shifted']} of {r['blocks']} |")
    print("\n".join(lines))
    if not args.no_write:
        from _results import replace_section

        replace_section("Ranking losses: score range of trained models", "\n".join(lines))


if __name__ == "__main__":
    main()
