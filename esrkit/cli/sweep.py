"""``esrkit sweep``: a hyper-parameter grid (the paper's Figure 3), sequential, resumable, shardable."""

from __future__ import annotations

import click

from esrkit.cli.train import folder_name, parse_seeds


@click.command()
@click.option("--recipe", "-r", required=True, help="Recipe name (recipes/*.toml) or path to a recipe TOML.")
@click.option(
    "--grid",
    "grids",
    multiple=True,
    required=True,
    metavar="KEY=V1,V2,...",
    help="A swept key and its values, e.g. model.alpha=1,0.5,0.1 (repeatable).",
)
@click.option(
    "--mode",
    type=click.Choice(["each", "product"]),
    default="each",
    help="each: one key at a time around the recipe (Figure 3); product: the full grid.",
)
@click.option("--seeds", help="Comma-separated seeds (default: the recipe's train.seed).")
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key for every run."
)
@click.option("--provider", "-p", help="Embedding provider; same as --set embedding.provider=P.")
@click.option(
    "--output-dir",
    help="Sweep folder: runs, sweep.json, sweep.md, figure3.png (default: <recipe output_dir>/sweep-<name>).",
)
@click.option("--name", "prefix", callback=folder_name, help="Run name prefix (default: the recipe name).")
@click.option("--workdir", help="Cache folder for prepared data, embeddings and indexes.")
@click.option("--select", default="ndcg@10", help="Validation metric that picks the best setting.")
@click.option("--shard", help="i/n: this process trains settings i, i+n, ... (0-based); run n processes.")
@click.option("--dry-run", is_flag=True, help="List the settings (and this shard's share); train nothing.")
@click.option(
    "--report-only", is_flag=True, help="Train nothing; rewrite sweep.json / sweep.md / figure3.png."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def sweep(
    recipe,
    grids,
    mode,
    seeds,
    sets,
    provider,
    output_dir,
    prefix,
    workdir,
    select,
    shard,
    dry_run,
    report_only,
    quiet,
) -> None:
    """Train every setting of a grid in turn (finished runs are skipped), pick the best on validation
    N@10 only and write sweep.json, sweep.md and figure3.png.

    \b
    Figure 3 (alpha and N, one at a time around the recipe):
      esrkit sweep -r beauty-sasrec --grid model.alpha=1,0.5,0.1,0.05,0.01 \\
                   --grid retrieval.n_similar=2,6,10,14,18 --seeds 42,43,44
    On 4 GPUs, one process each (then any of them, or --report-only, assembles the result):
      for i in 0 1 2 3; do CUDA_VISIBLE_DEVICES=$i esrkit sweep ... --shard $i/4 & done; wait
    """
    from esrkit.reporting.sweep import (  # lazy: the CLI starts fast (cli/__init__.py)
        sweep_markdown,
        write_sweep,
    )
    from esrkit.runs.sweep import make_plan, parse_grid, parse_shard, run_sweep
    from esrkit.runs.sweep import shard as split

    try:
        grid = parse_grid(grids)
        index, count = parse_shard(shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    overrides = ([f"embedding.provider={provider}"] if provider else []) + list(sets)
    plan = make_plan(recipe, grid, mode, parse_seeds(seeds), overrides, output_dir, prefix, workdir, select)
    settings = plan.settings
    mine = split(settings, index, count)
    click.echo(
        f"sweep {plan.prefix} ({mode}): {len(settings)} settings x {len(plan.seeds)} seed(s) "
        f"-> {plan.folder}" + (f"; shard {index}/{count}: {len(mine)}" if count > 1 else ""),
        err=True,
    )
    if dry_run:
        for s in settings:
            click.echo(("* " if s in mine else "  ") + plan.name(s))
        return
    failures: dict[str, str] = {}
    if not report_only:
        status = run_sweep(plan, index, count, progress=not quiet, echo=lambda m: click.echo(m, err=True))
        failures = {k: v for k, v in status.items() if v.startswith("failed")}
    result = write_sweep(plan, failures)
    click.echo(sweep_markdown(result))
    click.echo(f"wrote {plan.folder / 'sweep.json'}, sweep.md" + (", figure3.png" if result["best"] else ""))
    if not result["complete"]:
        click.echo(
            "some settings are pending (other shards) or failed: rerun with --report-only once all "
            "shards are done",
            err=True,
        )
    if failures:
        raise click.ClickException(f"{len(failures)} setting(s) failed: {', '.join(failures)}")
