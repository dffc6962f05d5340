"""Serving speed at synthetic Beauty scale on the CPU: every user's top 100, one history's latency, new items.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/serving.py        # 52,204 users x 57,289 items
    python benchmarks/serving.py --users 5000 --items 6000 --no-write     # a quick look

The model is LLM-ESR on SASRec (hidden 64 per view, so 128-d item vectors; max_len 200) over a 384-d semantic
table (the width of the offline provider and of MiniLM, which the project's real studies use), with the same
synthetic Beauty-scale sequences as benchmarks/train_speed.py. Its weights are untrained: serving cost does
not depend on them. The recorded provider is ``offline``, so ``add_items`` embeds new items' text for real.

1. **Export** the model (``ServedModel.save``) and time it.
2. **All users**: ``esrkit recommend DIR --all-users -k 100 -o recs.csv`` in a child process (loading and hash
   checks included), wall and CPU time and the child's own peak RSS (``os.wait4``).
3. **Latency**: ``esrkit.load(DIR)``, then ``recommend(history=..., k=10)`` for histories drawn from the users
   (one warm-up call first, which computes the item vectors once), median and tail.
4. **New items**: the provider's own rate (``provider.embed`` on the rendered prompts) against ``add_items``
   (prompts, provider, centring, the family's contract, growing the tables) for the same number of items, and
   the first recommendation after it (the item vectors are recomputed once).

Results go to the "Serving speed" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np
import torch

import esrkit
from esrkit.config import resolve_recipe
from esrkit.data.synthetic import SyntheticOptions, generate
from esrkit.embedding.pca import pca_fit
from esrkit.models import ModelAssets, build_model
from esrkit.prompts import load_templates, render_item
from esrkit.providers import load_provider
from esrkit.serving import ServedModel, UserHistories

GIB = float(1 << 30)


def served_model(
    n_users: int, n_items: int, dim: int, overrides: tuple[str, ...] = ("model.hidden=64",)
) -> tuple[ServedModel, object]:
    """An untrained model of the demo recipe with ``overrides`` (default: LLM-ESR, hidden 64 per view) over
    random unit item vectors, PCA-reduced to its hidden size, with every user's history."""
    from train_speed import beauty_scale

    data = beauty_scale(n_users, n_items)
    rng = np.random.default_rng(0)
    llm = rng.standard_normal((n_items, dim)).astype(np.float32)
    llm /= np.linalg.norm(llm, axis=1, keepdims=True)  # unit rows, like the offline provider's
    cfg = resolve_recipe("demo", [*overrides, "data.max_len=200"])
    table, projection = pca_fit(llm, cfg.model.hidden)
    torch.manual_seed(0)
    model = build_model(cfg.model, n_items, cfg.data.max_len, ModelAssets(llm, table, projection))
    provider = load_provider("offline")
    served = ServedModel(
        model,
        cfg,
        data.item_ids,
        [f"Item {i}" for i in data.item_ids],
        assets=ModelAssets(pca_projection=projection),
        llm_dim=dim,
        provider=provider.describe(),
        templates=load_templates("generic"),
        users=UserHistories.from_data(data),
    )
    return served, data


def all_users(export: Path, out: Path, k: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "esrkit",
        "recommend",
        str(export),
        "--all-users",
        "-k",
        str(k),
        "-o",
        str(out),
        "-q",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    output = proc.stdout.read() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"esrkit recommend failed:\n{output[-3000:]}")
    return {
        "seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_gib": usage.ru_maxrss * 1024 / GIB,
        "bytes": out.stat().st_size,
        "output": output.strip(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def latency(export: Path, data, calls: int) -> dict:
    start = time.perf_counter()
    served = esrkit.load(export)
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(1)
    users = rng.integers(0, data.n_users, calls + 1)
    histories = [[data.item_ids[i - 1] for i in data.sequence(u)] for u in users]
    start = time.perf_counter()
    served.recommend(histories[0], k=10)  # computes the item vectors once
    first_s = time.perf_counter() - start
    times = []
    for history in histories[1:]:
        start = time.perf_counter()
        served.recommend(history, k=10)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    lengths = np.array([len(h) for h in histories[1:]])
    return {
        "load_s": load_s,
        "first_s": first_s,
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "calls": calls,
        "mean_length": float(lengths.mean()),
        "max_length": int(lengths.max()),
        "served": served,
    }


def new_items(served: ServedModel, n_new: int) -> dict:
    catalogue = generate(SyntheticOptions(n_users=200, n_items=n_new, seed=11))
    records = [{**a, "id": f"NEW{i:06d}"} for i, a in enumerate(catalogue.item_attrs)]
    provider = load_provider("offline")
    provider.load()
    prompts = [render_item(r, served.templates.item) for r in records]
    start = time.perf_counter()
    provider.embed(prompts)
    provider_s = time.perf_counter() - start
    served.provider(provider)  # checked once, as add_items does
    start = time.perf_counter()
    served.add_items(records, provider=provider)
    add_s = time.perf_counter() - start
    start = time.perf_counter()
    served.add_items([{"id": "ONE-MORE", "title": "A single new serum"}], provider=provider)
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    served.recommend(["NEW000001", "NEW000002"], k=10)
    after_s = time.perf_counter() - start
    return {
        "n": n_new,
        "provider_s": provider_s,
        "add_s": add_s,
        "one_s": one_s,
        "after_s": after_s,
        "tokens": sum(provider.count_tokens(prompts)),
    }


def report(args, export_s: float, size: int, everyone: dict, lat: dict, new: dict) -> str:
    from _results import machine

    rate_p, rate_a = new["n"] / new["provider_s"], new["n"] / new["add_s"]
    everyone_row = (
        f"| `esrkit recommend DIR --all-users -k {args.k} -o recs.csv` (child process: load, hash checks, "
        f"encode, rank, write {everyone['bytes'] / 2**20:,.0f} MiB) | **{everyone['seconds']:.1f} s** wall, "
        f"{everyone['cpu_seconds']:.1f} s CPU, peak RSS {everyone['peak_rss_gib']:.2f} GiB "
        "| under 2 minutes |"
    )
    latency_row = (
        f"| `recommend(history=..., k=10)`, model loaded, {lat['calls']} histories of the users (mean "
        f"length {lat['mean_length']:.1f}, longest {lat['max_length']}) "
        f"| median **{lat['median_ms']:.2f} ms**, p90 {lat['p90_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms "
        "| median under 20 ms |"
    )
    items_row = (
        f"| `add_items` of {new['n']:,} items (offline provider) | **{rate_a:,.0f} items/s** "
        f"({new['add_s']:.2f} s) vs the provider's own {rate_p:,.0f} texts/s ({new['provider_s']:.2f} s) "
        "| the provider's rate plus a small constant |"
    )
    lines = [
        (
            f"Machine: {machine()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
            f"torch threads {torch.get_num_threads()}, run under `nice -n 10`."
        ),
        "",
        (
            f"Command: `nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/serving.py` "
            f"({time.strftime('%Y-%m-%d')}): synthetic Beauty-scale sequences ({args.users:,} users, "
            f"{args.items:,} items, as benchmarks/train_speed.py), LLM-ESR on SASRec (64 + 64-d item "
            "vectors, "
            f"max_len 200) over a {args.dim}-d semantic table, untrained weights; the export folder is "
            f"{size / 2**20:,.0f} MiB (written in {export_s:.1f} s, hashes included)."
        ),
        "",
        "| what | result | target |",
        "| --- | ---: | --- |",
        everyone_row,
        latency_row,
        items_row,
        "",
        (
            f"- `esrkit.load` of the folder: {lat['load_s']:.1f} s (sha256 of every file, the model "
            "rebuilt and "
            f"checked against its exported item vectors); the first recommendation then computes every item "
            f"vector once ({lat['first_s'] * 1e3:.0f} ms)."
        ),
        (
            f"- `add_items` costs the provider's time plus {new['add_s'] - new['provider_s']:.2f} s for "
            f"{new['n']:,} items; one more item alone takes {new['one_s'] * 1e3:.0f} ms (rendering, the "
            f"provider, and growing the {args.items:,}-row tables, a copy per call), and the next "
            f"recommendation recomputes the item vectors ({new['after_s'] * 1e3:.0f} ms). Add items in "
            "batches."
        ),
        (
            f"- 1-min load average before/after the all-users run: {everyone['load_before']:.1f}/"
            f"{everyone['load_after']:.1f} on {os.cpu_count()} cores (above the core count, other jobs "
            "shared "
            "them and wall times are inflated)."
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=52_204)
    parser.add_argument("--items", type=int, default=57_289)
    parser.add_argument("--dim", type=int, default=384, help="semantic table width (the offline provider's)")
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--calls", type=int, default=300, help="single-history calls timed")
    parser.add_argument("--new-items", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    folder = Path(tempfile.mkdtemp(prefix="esrkit-serving-"))
    try:
        print(f"building the model ({args.users:,} users, {args.items:,} items)", flush=True)
        served, data = served_model(args.users, args.items, args.dim)
        start = time.perf_counter()
        served.save(folder / "export")
        export_s = time.perf_counter() - start
        size = sum(f.stat().st_size for f in (folder / "export").iterdir())
        del served
        print(f"exported in {export_s:.1f} s; --all-users -k {args.k} ...", flush=True)
        everyone = all_users(folder / "export", folder / "recs.csv", args.k)
        print(f"  {everyone['seconds']:.1f} s: {everyone['output']}", flush=True)
        lat = latency(folder / "export", data, args.calls)
        print(f"latency: median {lat['median_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms", flush=True)
        new = new_items(lat.pop("served"), args.new_items)
        print(f"add_items: {new['add_s']:.2f} s, provider {new['provider_s']:.2f} s", flush=True)
        body = report(args, export_s, size, everyone, lat, new)
        print(body)
        if not args.no_write:
            from _results import replace_section

            replace_section("Serving speed (Beauty scale, CPU)", body)
            print("updated benchmarks/RESULTS.md")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
