"""Cost of a GRU4Rec training step with each row's padding before its items (the path before 2026-12-07,
the backward running through every padding step) and after them (left-aligned rows: no gradient reaches the
padding), side by side in one process.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/gru_padding.py          # Beauty 5-core size, CPU, one thread

LLMInit's padding input is the zero vector, so the bias-free GRU's state stays exactly zero through padding
and both paths compute the same states; in the left-aligned one no gradient runs back through padding steps,
where it could overflow (esrkit/models/gru4rec.py). The price is re-ordering the batch's vectors twice a call.
LLMInit on GRU4Rec (a random table in place of the PCA, hidden 128, every position a target, softmax
cross-entropy over every item), synthetic data with Beauty's length distribution (train_speed.py), batch 128;
the two paths take turns step by step on the same batches, median of the timed steps. Figures go to the
"GRU4Rec: padding steps" section of RESULTS.md.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from train_speed import beauty_scale  # noqa: E402

from esrkit.data.tensors import DeviceSequences  # noqa: E402
from esrkit.models import MODELS  # noqa: E402
from esrkit.models.gru4rec import GRU4RecEncoder  # noqa: E402
from esrkit.training.losses import LossSpec  # noqa: E402
from esrkit.training.trainer import Trainer, TrainerOptions  # noqa: E402


class PaddedGRU4Rec(GRU4RecEncoder):
    """The previous path for a zero padding input: the GRU over the whole trimmed batch, padding included
    (the cut steps were already skipped)."""

    def forward(self, x, mask, pad_count=None, shared_pad=False, **_):
        out, _ = self.gru(x)
        return out


def trainer_for(data, padded: bool, hidden: int) -> Trainer:
    torch.manual_seed(0)
    table = np.random.default_rng(0).normal(0, 0.05, (data.n_items, hidden)).astype(np.float32)  # for a PCA
    model = MODELS.get("llminit")(data.n_items, init_table=table, backbone="gru4rec", hidden=hidden)
    model.objective = "seq2seq"  # as build_model applies model.objective
    if padded:
        encoder = PaddedGRU4Rec(hidden)
        encoder.load_state_dict(model.encoder.state_dict())
        model.encoder = encoder
    return Trainer(
        model,
        DeviceSequences(data, "cpu"),
        TrainerOptions(loss=LossSpec("ce")),
        lambda m, e: {},
        None,
        None,
        progress=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=22_363)
    ap.add_argument("--items", type=int, default=12_101)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = beauty_scale(args.users, args.items)
    labels = ("padding first", "left-aligned")
    trainers = {label: trainer_for(data, label == "padding first", args.hidden) for label in labels}
    order = trainers["left-aligned"].epoch_order(0)
    gens = {label: torch.Generator().manual_seed(0) for label in trainers}
    times: dict[str, list[float]] = {label: [] for label in trainers}
    for b in range(args.batches + 2):
        rows = order[(b * 128) % len(order) :][:128]
        for label, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.step(rows, gens[label])
            if b >= 2:
                times[label].append(time.perf_counter() - t0)
    ms = {label: 1000 * statistics.median(t) for label, t in times.items()}
    for label, value in ms.items():
        print(f"{label}: {value:.1f} ms/step", flush=True)
    if not args.no_write:
        write(args, data, ms)


def write(args, data, ms: dict[str, float]) -> None:
    from _results import machine, replace_section

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}, {args.threads} thread(s). LLMInit on GRU4Rec "
        f"(hidden {args.hidden}, every position, `ce`), synthetic data with {args.users:,} users, "
        f"{args.items:,} items, mean length {float(data.lengths().mean()):.2f}, batch 128; median of "
        f"{args.batches} steps each, taking turns. Command: `python benchmarks/gru_padding.py`.",
        "",
        "| GRU4Rec rows | ms per step | vs padding first |",
        "| --- | ---: | ---: |",
    ]
    for label, value in ms.items():
        lines.append(f"| {label} | {value:.1f} | {value / ms['padding first']:.2f}x |")
    replace_section("GRU4Rec: padding steps", "\n".join(lines))


if __name__ == "__main__":
    main()
