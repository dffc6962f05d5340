"""Faithful LLM-ESR against LLMInit on long histories: seconds per training epoch, side by side in one run.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/long_history.py              # 1,000 users, mean length 100
    OMP_WAIT_POLICY=PASSIVE python benchmarks/long_history.py --profile    # also the top operations of a step

Synthetic data shaped like MovieLens-100k (the case that prompted issue 21: 943 users, mean length above 100):
1,000 users with lognormal lengths of mean 100 (cut at 600), 1,700 items with long-tailed popularity, max_len
200, a random 384-d semantic table (MiniLM's width), 10 random similar users per user. Both models use the
settings a study trains them with: LLMInit = SASRec with hidden 128 whose item table starts from the PCA of
the semantic table; LLM-ESR = the official SASRec variant, hidden 64 per view, self-distillation with alpha
0.1 and teachers recomputed every step (``teacher_refresh=step``, the faithful schedule). Batch 128; length
buckets as in training. Two more rows for context: LLMInit with hidden 64 (the config default, when
``model.hidden`` is not raised to the paper's 128) and LLM-ESR with per-epoch teachers (not the official
schedule; its refresh pass is counted).

The models' steps alternate (one batch of each, then the next batch), so load from other jobs on a shared
machine falls on all alike; times are this process's CPU time (one thread), which such load disturbs far less
than wall time. Each model's epoch time is the sum of its batch times; ``--batches N`` times only the first N
batches of an epoch and scales up (per-step cost is what differs). One warm-up step each is not timed. Figures
go to the "Training speed on long histories" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

from esrkit.data.sequences import SequenceData
from esrkit.data.tensors import DeviceSequences
from esrkit.models import MODELS
from esrkit.training.objectives import SelfDistillation
from esrkit.training.trainer import Trainer, TrainerOptions

SECTION = "Training speed on long histories (LLM-ESR vs LLMInit)"
COMMAND = "nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/long_history.py"


def long_histories(n_users: int, n_items: int, mean_length: float, seed: int = 0) -> SequenceData:
    """Lognormal lengths (sigma 0.6) of the given mean, at least 5 and at most 600; Zipf-like item
    popularity."""
    rng = np.random.default_rng(seed)
    sigma = 0.6
    lengths = np.clip(np.round(rng.lognormal(np.log(mean_length) - sigma**2 / 2, sigma, n_users)), 5, 600)
    lengths = lengths.astype(np.int64)
    items = rng.zipf(1.2, size=int(lengths.sum())) % n_items + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return SequenceData(
        offsets,
        items.astype(np.int32),
        n_items,
        [str(u) for u in range(n_users)],
        [str(i) for i in range(1, n_items + 1)],
    )


def build_trainers(data: SequenceData, dim: int, max_len: int, buckets: int) -> dict[str, Trainer]:
    rng = np.random.default_rng(1)
    llm = rng.normal(0, 0.05, size=(data.n_items, dim)).astype(np.float32)
    centred = llm - llm.mean(0)
    basis = np.linalg.svd(centred, full_matrices=False)[2]
    pca = {h: (centred @ basis[:h].T).astype(np.float32) for h in (64, 128)}
    neighbours = rng.integers(0, data.n_users, size=(data.n_users, 10))
    seqs = DeviceSequences(data, "cpu")
    options = TrainerOptions(max_len=max_len, buckets=buckets)
    trainers = {}
    rows = (
        ("LLMInit", "llminit", None),
        ("LLM-ESR", "llmesr", "step"),
        ("LLMInit, hidden 64", "llminit", None),
        ("LLM-ESR, teachers per epoch", "llmesr", "epoch"),
    )
    for name, model, refresh in rows:
        torch.manual_seed(0)
        if model == "llminit":
            hidden = 64 if "64" in name else 128
            net = MODELS.get("llminit")(data.n_items, init_table=pca[hidden], hidden=hidden, max_len=max_len)
            sd = None
        else:
            net = MODELS.get("llmesr")(data.n_items, llm, pca[64], hidden=64, max_len=max_len)
            sd = SelfDistillation(seqs, neighbours, 10, 0.1, max_len=max_len, refresh=refresh)
        trainers[name] = Trainer(net, seqs, options, lambda m, e: {}, None, sd, progress=False)
    return trainers


def time_epoch(trainers: dict[str, Trainer], batches: int) -> dict[str, dict[str, float]]:
    """Alternating steps over the same batches; seconds per batch and per (extrapolated) epoch for each model
    (process CPU time, which other jobs on a shared machine disturb far less than wall time). Per-epoch
    teachers add their refresh pass over every user once per epoch."""
    first = next(iter(trainers.values()))
    order = first.epoch_order(0)
    bs = first.opt_cfg.batch_size
    n_batches = math.ceil(len(order) / bs)
    timed = min(batches or n_batches, n_batches)
    gens = {name: torch.Generator().manual_seed(0) for name in trainers}
    for name, trainer in trainers.items():  # warm-up
        trainer.model.train()
        if trainer.sd is not None and trainer.sd.refresh == "epoch":
            trainer.sd.refresh_cache(trainer.model)
        trainer.step(order[:bs], gens[name])
    spent = {name: 0.0 for name in trainers}
    per_epoch = {name: 0.0 for name in trainers}
    for name, trainer in trainers.items():
        if trainer.sd is not None and trainer.sd.refresh == "epoch":
            t0 = time.process_time()
            trainer.sd.refresh_cache(trainer.model)
            per_epoch[name] = time.process_time() - t0
    for b in range(timed):
        rows = order[b * bs : (b + 1) * bs]
        for name, trainer in trainers.items():
            t0 = time.process_time()
            trainer.step(rows, gens[name])
            spent[name] += time.process_time() - t0
    return {
        name: {
            "s_per_batch": s / timed,
            "epoch_s": s / timed * n_batches + per_epoch[name],
            "refresh_s": per_epoch[name],
            "batches_timed": timed,
            "batches_per_epoch": n_batches,
        }
        for name, s in spent.items()
    }


def profile_step(trainer: Trainer, rows: np.ndarray, top: int = 12) -> list[dict[str, float]]:
    """The operations that take the most time in one training step (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.step(rows, gen)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return [
        {
            "op": e.key,
            "ms": e.self_cpu_time_total / 1000,
            "share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--items", type=int, default=1700)
    ap.add_argument("--mean-length", type=float, default=100.0)
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--dim", type=int, default=384, help="width of the semantic (LLM) item table")
    ap.add_argument("--buckets", type=int, default=4, help="length buckets per batch (the CPU default)")
    ap.add_argument("--batches", type=int, default=0, help="batches timed per model (0 = the whole epoch)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="also profile one LLM-ESR and one LLMInit step")
    ap.add_argument("--label", default="", help="a label for this measurement (e.g. the code version)")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    ap.add_argument("--from-json", type=Path, help="update RESULTS.md from a saved --json, measure nothing")
    args = ap.parse_args()
    if args.from_json:
        write(json.loads(args.from_json.read_text()))
        return
    torch.set_num_threads(args.threads)
    data = long_histories(args.users, args.items, args.mean_length)
    lengths = data.lengths()
    trainers = build_trainers(data, args.dim, args.max_len, args.buckets)
    load_before = os.getloadavg()[0]
    timings = time_epoch(trainers, args.batches)
    from _results import machine

    out = {
        "date": time.strftime("%Y-%m-%d"),
        "label": args.label,
        "machine": machine(),
        "users": args.users,
        "items": args.items,
        "mean_length": float(lengths.mean()),
        "median_length": float(np.median(lengths)),
        "max_length": int(lengths.max()),
        "max_len": args.max_len,
        "dim": args.dim,
        "buckets": args.buckets,
        "threads": args.threads,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "models": timings,
        "ratio": timings["LLM-ESR"]["epoch_s"] / timings["LLMInit"]["epoch_s"],
    }
    for name, t in timings.items():
        print(
            f"{name}: {t['s_per_batch']:.3f} s/batch, {t['epoch_s']:.1f} s/epoch "
            f"({t['batches_timed']} of {t['batches_per_epoch']} batches timed; CPU time)",
            flush=True,
        )
    print(f"LLM-ESR / LLMInit: {out['ratio']:.2f}x", flush=True)
    if args.profile:
        rows = trainers["LLM-ESR"].epoch_order(0)[:128]
        out["profile"] = {name: profile_step(trainers[name], rows) for name in ("LLMInit", "LLM-ESR")}
        for name, ops in out["profile"].items():
            print(f"\n{name}: top operations of one step (self CPU time)")
            for op in ops:
                print(f"  {op['op']:<40} {op['ms']:9.1f} ms  {op['share']:6.1%}  {op['calls']:5d} calls")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if not args.no_write:
        write(out)


def write(out: dict) -> None:
    from _results import machine, replace_section

    m = out["models"]
    lines = [
        (
            f"Measured {out['date']} on {out.get('machine') or machine()}; {out['threads']} thread; load "
            f"average {out['load_after']:.1f} at the end (other jobs shared the 2 cores: CPU seconds below)."
        ),
        (
            f"Command: `{COMMAND}`. Data: {out['users']:,} users, {out['items']:,} items, lengths mean "
            f"{out['mean_length']:.1f} / median {out['median_length']:.0f} / max {out['max_length']} "
            "(max_len "
            f"{out['max_len']}), {out['dim']}-d semantic table, 10 similar users, batch 128, "
            f"{out['buckets']} "
            f"length buckets; the models' steps alternate. {m['LLM-ESR']['batches_timed']} of "
            f"{m['LLM-ESR']['batches_per_epoch']} batches timed per model."
        ),
        "",
        "| model | CPU s/batch | CPU s/epoch | vs LLMInit (hidden 128) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, t in m.items():
        ratio = t["epoch_s"] / m["LLMInit"]["epoch_s"]
        refresh = f" (incl. {t['refresh_s']:.1f} s refresh)" if t.get("refresh_s") else ""
        lines.append(f"| {name} | {t['s_per_batch']:.3f} | {t['epoch_s']:.1f}{refresh} | {ratio:.2f}x |")
    from _results import RESULTS

    text = RESULTS.read_text()
    marker = f"## {SECTION}\n"
    notes = ""
    if marker in text:  # keep the hand-written reading below the generated table
        body = text.split(marker, 1)[1].split("\n## ", 1)[0]
        if "\n### " in body:
            notes = "\n### " + body.split("\n### ", 1)[1].rstrip()
    replace_section(SECTION, "\n".join(lines) + ("\n" + notes if notes else ""))


if __name__ == "__main__":
    main()
