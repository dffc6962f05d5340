"""``esrkit demo``: the whole pipeline end to end on the embedded synthetic catalogue, no network, no key."""

from __future__ import annotations

import os
import time

import click

from esrkit.config import resolve_recipe
from esrkit.utils.io import stable_json_hash


@click.command()
@click.option(
    "--epochs", default=20, show_default=True, help="Maximum epochs per model (early stopping applies)."
)
@click.option("--patience", default=5, show_default=True)
@click.option(
    "--users", default=1500, show_default=True, help="Synthetic users (items = max(users / 2, 300))."
)
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    help="Smaller than the paper's 128 so the small catalogue converges within a few epochs.",
)
@click.option("--seed", default=42, show_default=True)
@click.option("--output-dir", default="runs/demo", show_default=True)
@click.option("--workdir", default=".esrkit", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=None,
    help="CPU threads for torch; 0 = torch's default. Default: 1, unless OMP_NUM_THREADS is set.",
)
def demo(epochs, patience, users, batch_size, seed, output_dir, workdir, quiet, threads) -> None:
    """Generate the synthetic catalogue, embed it offline, build the similar-user index, train SASRec, LLMInit
    and LLM-ESR, and print their test results under both protocols."""
    from esrkit.index.exact import torch_threads  # lazy: the CLI starts fast (esrkit/cli/__init__.py)
    from esrkit.reporting.console import results_table
    from esrkit.runs.train import train

    common = [
        f"train.epochs={epochs}",
        f"train.patience={patience}",
        f"train.seed={seed}",
        f"train.batch_size={batch_size}",
        f"data.synthetic={{n_users = {users}, n_items = {max(users // 2, 300)}}}",
        f'output_dir="{output_dir}"',
        f'workdir="{workdir}"',
    ]
    models = [
        ("SASRec", ["model.name=id", "model.hidden=128"]),
        ("LLMInit", ["model.name=llminit", "model.hidden=128"]),
        ("LLM-ESR", ["model.name=llmesr", "model.hidden=64"]),
    ]
    rows = []
    start = time.perf_counter()
    with torch_threads(demo_threads(threads, os.environ)):
        for label, extra in models:
            cfg = resolve_recipe("demo", common + extra)
            # a hash of the settings in the name: a rerun resumes/skips, changed settings start fresh runs
            cfg.name = f"demo-{label.lower()}-{stable_json_hash(cfg.to_dict())[:8]}"
            click.echo(f"== {label}: training on {users} synthetic users ...", err=True)
            t0 = time.perf_counter()
            summary = train(cfg, resume=True, progress=not quiet)
            click.echo(f"   done in {time.perf_counter() - t0:.0f} s", err=True)
            rows.append((label, summary["test"]))
    for protocol in ("sampled", "full"):
        click.echo(results_table([(label, test[protocol]) for label, test in rows], protocol))
        click.echo("")
    click.echo(f"total {time.perf_counter() - start:.0f} s; run directories under {output_dir}/")


def demo_threads(option: int | None, environ) -> int | None:
    """Threads for the demo's torch work, None = leave torch's choice. The demo's models are small, and small
    steps pay a thread wake-up per parallel region under esrkit's passive OpenMP policy, so one thread is the
    fastest default (benchmarks/RESULTS.md, "CPU threads"); a user's OMP_NUM_THREADS or --threads wins."""
    if option is not None:
        return option or None
    return None if environ.get("OMP_NUM_THREADS") else 1
