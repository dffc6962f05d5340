"""Cost of one training step per ranking loss (``model.loss``), side by side in one process.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/loss_speed.py                 # synthetic Beauty scale, CPU
    OMP_WAIT_POLICY=PASSIVE python benchmarks/loss_speed.py --items 12101 --users 22363   # Beauty 5-core size
    ... --consecutive 5        # five steps of a loss per turn, the last four timed (warm caches)
    ... --block-sizes 128,256  # the fused ce at these rows per block instead of the losses

SASRec (hidden 64, causal, the plain ID model) on synthetic data with Beauty's length distribution (see
train_speed.py), batch 128. Every loss trains the same model from the same seed on the same batches; seconds
per step are the median over ``--batches`` steps after two warm-up steps, the losses taking turns step by
step. The full-softmax ``ce`` costs m x N x D multiply-adds three times per step (m scored positions, N items)
plus m x N exponentials, which no implementation avoids; the sampled losses cost m x k x D. The row
"ce, unfused reference" is torch's cross-entropy on the whole score matrix, what esrkit's ``ce`` ran before it
was fused; the "fresh memory" rows are the fused ``ce`` of commit 5658426 (each product into new
memory, the item gradient summed by a separate ``+=``); the "b9d3a04" rows that of commit b9d3a04
(a batch's last block as many rows as were left, each a new product shape for oneDNN); the "55ca0dd" row that
of commit 55ca0dd (with bfloat16 products, the softmax sums by torch's sum down each block).
Figures go to the "Ranking losses: step cost" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from train_speed import beauty_scale  # noqa: E402

from esrkit.data.tensors import DeviceSequences  # noqa: E402
from esrkit.models import MODELS  # noqa: E402
from esrkit.registry import LOSSES as LOSSES_REGISTRY  # noqa: E402
from esrkit.training import losses as losses_module  # noqa: E402
from esrkit.training.losses import LossSpec  # noqa: E402
from esrkit.training.trainer import Trainer, TrainerOptions  # noqa: E402


@LOSSES_REGISTRY.register("ce_unfused")
def ce_unfused(scorer, hs, pos, neg, ctx):
    """The reference `ce` is measured against: torch's cross-entropy on the whole (positions x items) score
    matrix, autograd's backward (what esrkit ran before the fused loss)."""
    return F.cross_entropy(scorer.states(hs) @ scorer.all_real().T, pos - 1)


class _FreshMemoryCE(torch.autograd.Function):
    """The fused ``ce`` of commit 5658426, kept as the reference the current one is measured
    against: the same (items x rows) blocks, but every product's result in newly allocated memory and each
    block's item gradient added by a separate ``+=`` (the current one writes into memory it holds and
    accumulates inside the product)."""

    @staticmethod
    def forward(ctx, hs, items, pos, rows, low):
        grad_hs, grad_items = torch.empty_like(hs), torch.zeros_like(items)
        total = hs.new_zeros(())
        with losses_module._cpu_bfloat16_products(low):
            for start in range(0, hs.shape[0], rows):
                h, target = hs[start : start + rows], pos[start : start + rows]
                scores = items @ h.T
                target_scores = scores[target, torch.arange(len(h))]
                top = scores.amax(0)
                weights = scores.sub_(top).exp_()
                z = weights.sum(0)
                total += (top + z.log() - target_scores).sum()
                grad_hs[start : start + rows] = (weights.T @ items) / z[:, None] - items[target]
                grad_items += weights @ (h / z[:, None])
                grad_items.index_add_(0, target, h, alpha=-1.0)
        ctx.save_for_backward(grad_hs, grad_items)
        ctx.m = hs.shape[0]
        return total / ctx.m

    @staticmethod
    def backward(ctx, grad):
        grad_hs, grad_items = ctx.saved_tensors
        return grad_hs * grad / ctx.m, grad_items * grad / ctx.m, None, None, None


@LOSSES_REGISTRY.register("ce_fresh_memory")
def ce_fresh_memory(scorer, hs, pos, neg, ctx):
    low = ctx.spec.ce_precision == "bfloat16" and losses_module._cpu_bfloat16_matmul(hs.device)
    return _FreshMemoryCE.apply(scorer.states(hs), scorer.all_real(), pos - 1, 64, low)


@LOSSES_REGISTRY.register("ce_b9d3a04")
def ce_b9d3a04(scorer, hs, pos, neg, ctx):
    """The fused ``ce`` of commit b9d3a04, whose last block of a batch had as many rows as were left (now a
    multiple of ``ROW_QUANTUM`` on a CPU)."""
    with mock.patch.object(losses_module, "_pad_rows", lambda hs, pos, rows: (hs, pos)):
        return LOSSES_REGISTRY.get("ce")(scorer, hs, pos, neg, ctx)


@LOSSES_REGISTRY.register("ce_55ca0dd")
def ce_55ca0dd(scorer, hs, pos, neg, ctx):
    """The fused ``ce`` of commit 55ca0dd, whose softmax sums were torch's sum down each block with bfloat16
    products too (now a float32 product with a row of ones there)."""
    torch_sums = lambda items: losses_module._column_sums  # noqa: E731
    with mock.patch.object(losses_module, "_column_sums_by_product", torch_sums):
        return LOSSES_REGISTRY.get("ce")(scorer, hs, pos, neg, ctx)


DEFAULT_BATCHES = 15  # timed steps per loss; the command in a table names --batches only when it differs

LOSSES = [
    ("bce", LossSpec("bce", negatives=1)),
    ("bpr", LossSpec("bpr", negatives=1)),
    ("gbce, 256 negatives", LossSpec("gbce", negatives=256)),
    ("sampled_softmax, 1024 uniform", LossSpec("sampled_softmax", negatives=1024)),
    ("sampled_softmax, 1024 popularity", LossSpec("sampled_softmax", negatives=1024, sampler="popularity")),
    ("sampled_softmax, in-batch", LossSpec("sampled_softmax", sampler="in_batch")),
    ("ce, unfused reference", LossSpec("ce_unfused")),
    ("ce, fresh memory (5658426)", LossSpec("ce_fresh_memory")),
    ("ce, fresh memory, bfloat16 products (5658426)", LossSpec("ce_fresh_memory", ce_precision="bfloat16")),
    ("ce of b9d3a04", LossSpec("ce_b9d3a04")),
    ("ce of b9d3a04, bfloat16 products", LossSpec("ce_b9d3a04", ce_precision="bfloat16")),
    ("ce of 55ca0dd, bfloat16 products", LossSpec("ce_55ca0dd", ce_precision="bfloat16")),
    ("ce", LossSpec("ce")),
    ("ce, bfloat16 products", LossSpec("ce", ce_precision="bfloat16")),
]


def block_size_specs(sizes: list[int]) -> list[tuple[str, LossSpec]]:
    """``--block-sizes``: the fused ``ce`` at each number of rows per block, float32 and bfloat16, beside
    ``bce`` and the unfused reference."""
    specs = [LOSSES[0], ("ce, unfused reference", LossSpec("ce_unfused"))]
    for rows in sizes:
        specs.append((f"ce, {rows} rows per block", LossSpec("ce", chunk_rows=rows)))
        specs.append(
            (f"ce, {rows} rows per block, bfloat16", LossSpec("ce", chunk_rows=rows, ce_precision="bfloat16"))
        )
    return specs


def trainer_for(data, spec: LossSpec, hidden: int) -> Trainer:
    torch.manual_seed(0)
    model = MODELS.get("id")(data.n_items, hidden=hidden, causal=True)
    return Trainer(
        model,
        DeviceSequences(data, "cpu"),
        TrainerOptions(loss=spec),
        lambda m, e: {},
        None,
        None,
        progress=False,
    )


def time_losses(
    data, specs: list[tuple[str, LossSpec]], batches: int, hidden: int, consecutive: int = 1
) -> dict[str, float]:
    """Median seconds per step of each loss. The losses take turns (round robin), so a change of load on a
    shared machine hits every loss alike instead of whichever ran at that moment. A turn is ``consecutive``
    steps of one loss, of which the first only warms up: with 1 (every step timed after two warm-up rounds)
    each step starts with caches the other losses' models filled; with more, the timed steps follow a step of
    the same model, as in training."""
    trainers = {label: trainer_for(data, spec, hidden) for label, spec in specs}
    order = next(iter(trainers.values())).epoch_order(0)
    gens = {label: torch.Generator().manual_seed(0) for label in trainers}
    times: dict[str, list[float]] = {label: [] for label in trainers}
    b = 0
    while min(len(t) for t in times.values()) < batches:
        for label, trainer in trainers.items():
            for k in range(consecutive):
                rows = order[((b + k) * 128) % len(order) :][:128]
                t0 = time.perf_counter()
                trainer.step(rows, gens[label])
                warming = b < 2 if consecutive == 1 else k == 0  # single steps: the first two rounds warm up
                if not warming:
                    times[label].append(time.perf_counter() - t0)
        b += consecutive
    return {label: statistics.median(t[:batches]) for label, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=52_204)
    ap.add_argument("--items", type=int, default=57_289)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batches", type=int, default=DEFAULT_BATCHES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--consecutive",
        type=int,
        default=1,
        help="steps of one loss per turn, the first untimed (1: single steps in turn, every one timed)",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument(
        "--block-sizes",
        help="comma-separated rows per fused ce block: time these instead of the losses (section 'fused ce "
        "block size')",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = beauty_scale(args.users, args.items)
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "users": args.users,
        "items": args.items,
        "hidden": args.hidden,
        "threads": args.threads,
        "batches": args.batches,
        "mean_length": float(data.lengths().mean()),
        "losses": {},
    }
    sizes = [int(x) for x in args.block_sizes.split(",")] if args.block_sizes else []
    specs = block_size_specs(sizes) if sizes else LOSSES
    out["consecutive"] = args.consecutive
    out["losses"] = time_losses(data, specs, args.batches, args.hidden, args.consecutive)
    out["block_sizes"] = sizes
    for label, sec in out["losses"].items():
        print(f"{label}: {sec * 1000:.1f} ms/step", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if not args.no_write:
        write(out)


def write(out: dict) -> None:
    from _results import machine, replace_section

    bce = out["losses"]["bce"]
    lines = [
        f"Measured {out['date']} on {machine()}, {out['threads']} thread(s). SASRec (hidden {out['hidden']}, "
        f"causal), synthetic data with {out['users']:,} users, {out['items']:,} items, mean length "
        f"{out['mean_length']:.2f}, batch 128; median of the timed steps. Command: `python "
        f"benchmarks/loss_speed.py --users {out['users']} --items {out['items']}"
        + (f" --batches {out['batches']}" if out.get("batches", DEFAULT_BATCHES) != DEFAULT_BATCHES else "")
        + (f" --block-sizes {','.join(map(str, out['block_sizes']))}" if out.get("block_sizes") else "")
        + (f" --consecutive {out['consecutive']}" if out.get("consecutive", 1) != 1 else "")
        + "`.",
        "",
        "| loss (`model.loss`) | ms per step | vs `bce` |",
        "| --- | ---: | ---: |",
    ]
    for label, sec in out["losses"].items():
        lines.append(f"| {label} | {sec * 1000:.1f} | {sec / bce:.2f}x |")
    kind = "fused ce block size" if out.get("block_sizes") else "step cost"
    turns = f", {out['consecutive']} steps a turn" if out.get("consecutive", 1) != 1 else ""
    replace_section(f"Ranking losses: {kind} ({out['items']:,} items{turns})", "\n".join(lines))


if __name__ == "__main__":
    main()
