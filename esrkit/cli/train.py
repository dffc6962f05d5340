"""``esrkit train``, ``esrkit evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from esrkit.cli.main import show_progress_lines
from esrkit.cli.options import ranking_options
from esrkit.config import name_problem, resolve_recipe


def _resolve(
    recipe: str | None,
    provider: str | None,
    sets: tuple[str, ...],
    name: str | None,
    output_dir: str | None,
    workdir: str | None,
):
    overrides = list(sets)
    if provider:
        overrides.insert(0, f"embedding.provider={provider}")
    return resolve_recipe(recipe, overrides, top={"name": name, "output_dir": output_dir, "workdir": workdir})


def folder_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A name that becomes a folder under --output-dir must stay inside it."""
    if value is not None and (problem := name_problem(value)):
        raise click.BadParameter(problem)
    return value


def parse_seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"--seeds must be comma-separated integers, not {text!r}") from None


@click.command()
@click.option("--recipe", "-r", help="Recipe name (recipes/*.toml) or path to a recipe TOML.")
@click.option(
    "--provider", "-p", help="Embedding provider (providers/*.toml); same as --set embedding.provider=P."
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. model.alpha=0.5."
)
@click.option("--seeds", help="Comma-separated seeds, e.g. 42,43,44 (default: train.seed).")
@click.option("--name", callback=folder_name, help="Run name (default: the recipe name).")
@click.option("--output-dir", help="Where run directories go (default: runs).")
@click.option("--workdir", help="Cache folder for prepared data, embeddings and indexes (default: .esrkit).")
@click.option("--resume", is_flag=True, help="Continue unfinished seeds and skip finished ones.")
@click.option(
    "--baseline",
    type=click.Path(exists=True, file_okay=False),
    help="A run folder (<output>/<name>) to t-test against, seed by seed.",
)
@click.option(
    "--quiet",
    "-q",
    count=True,
    help="-q: no progress bars, still one line per epoch on stderr; -qq: nothing on stderr but "
    "warnings and errors. Either way every epoch's line goes to the run folder's train.log.",
)
def train(recipe, provider, sets, seeds, name, output_dir, workdir, resume, baseline, quiet) -> None:
    """Train (and test) a model from a recipe; one run directory per seed.

    Progress: a bar per epoch, and one line per epoch (loss, validation metric, time) on stderr and in
    <output-dir>/<name>/seed-<seed>/train.log (follow it with tail -f)."""
    from esrkit.reporting.console import results_table  # lazy: the CLI starts fast (esrkit/cli/__init__.py)
    from esrkit.runs.train import train as run_train
    from esrkit.training.distributed import runtime
    from esrkit.utils.runtime import exit_rank_now, shutdown

    show_progress_lines(quiet < 2)
    cfg = _resolve(recipe, provider, sets, name, output_dir, workdir)
    rt = runtime()  # under torchrun: joins the process group (docs/SCALING.md); otherwise a single process
    try:
        summary = run_train(cfg, parse_seeds(seeds), resume=resume, progress=not quiet)
    except BaseException:
        shutdown(wait=False)
        raise
    shutdown()
    if not rt.is_main:  # rank 0 reports
        if rt.distributed:
            exit_rank_now()
        return
    folder = Path(cfg.output_dir) / cfg.name
    for protocol in summary["test"]:
        click.echo(results_table([(f"{cfg.name}", summary["test"][protocol])], protocol))
        click.echo("")
    if baseline:
        _compare(summary, Path(baseline))
    click.echo(f"runs: {folder}/seed-*  (summary.json holds mean and std over seeds)")
    if rt.distributed:
        exit_rank_now()


def _compare(summary: dict, baseline: Path) -> None:
    from esrkit.evaluation.significance import seed_ttest  # lazy: the CLI starts fast

    other = json.loads((baseline / "summary.json").read_text())
    for protocol, groups in summary["test"].items():
        if protocol not in other["test"]:
            continue
        for metric in ("hr@10", "ndcg@10"):
            a = groups["overall"][metric]
            b = other["test"][protocol]["overall"][metric]
            p = seed_ttest(a["values"], b["values"])
            rel = (a["mean"] - b["mean"]) / b["mean"] * 100 if b["mean"] else float("nan")
            click.echo(
                f"[{protocol}] {metric}: {a['mean']:.4f} vs {b['mean']:.4f} ({rel:+.1f}%), "
                f"two-sided t-test over seeds p = {p:.3g}"
            )


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["test", "valid"]), default="test")
@click.option(
    "--protocol",
    "protocols",
    multiple=True,
    type=click.Choice(["sampled", "full"]),
    help="Protocols to compute (default: both).",
)
@click.option("--device", default="auto")
@ranking_options("rank")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(run_dir, split, protocols, device, ranking, as_json) -> None:
    """Re-evaluate a run's best checkpoint (both protocols, every group)."""
    from esrkit.reporting.console import results_table  # lazy: the CLI starts fast
    from esrkit.runs.load import load_run, run_evaluator

    run = load_run(run_dir, device, add_cold=split == "test", ranking=ranking)
    result = run_evaluator(run, split).evaluate(run.model, protocols or ("sampled", "full"))
    if as_json:
        click.echo(json.dumps(result.metrics, indent=2))
        return
    for protocol, groups in result.metrics.items():
        click.echo(results_table([(Path(run_dir).name, groups)], protocol))
        click.echo("")
