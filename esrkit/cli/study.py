"""``esrkit study providers``: the provider-swap study."""

from __future__ import annotations

import dataclasses
import shlex

import click

from esrkit.cli.train import folder_name, parse_seeds
from esrkit.config import ConfigError
from esrkit.utils.errors import did_you_mean


@click.group()
def study() -> None:
    """Studies that run several trainings and report them together."""


@study.command("providers")
@click.option("--recipe", "-r", required=True, help="The recipe every run starts from.")
@click.option(
    "--providers", "-p", required=True, help="Comma-separated provider names, e.g. offline,minilm,smollm2."
)
@click.option(
    "--models", default="llmesr,llminit", show_default=True, help="Model families trained per provider."
)
@click.option("--seeds", default="42", show_default=True, help="Comma-separated seeds.")
@click.option(
    "--controls/--no-controls",
    default=True,
    show_default=True,
    help="Also run the backbone without LLM embeddings and the random-embedding control.",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Overrides applied to every run.")
@click.option(
    "--baseline-hidden", default=128, show_default=True, help="Hidden size of single-view baselines."
)
@click.option(
    "--user-provider",
    default="",
    help="Embed user prompts (similar-user retrieval) with this provider "
    "for every run, so only the item-side semantic table changes (default: each run's own provider).",
)
@click.option(
    "--random-dim",
    type=click.IntRange(min=1),
    default=None,
    help="Width of the random control (default 1536, ada-002's); pass the studied providers' width "
    "(e.g. 384 for MiniLM) to compare at the same dimension.",
)
@click.option("--output-dir", default="runs", show_default=True)
@click.option("--name", callback=folder_name, help="Study folder name (default: study-<recipe>).")
@click.option(
    "--report-only",
    is_flag=True,
    help="Train nothing: rewrite the report from the finished runs in the study folder (e.g. while other "
    "processes still train some of them).",
)
@click.option(
    "--record",
    "records",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A study.json published elsewhere (e.g. docs/results, or one a GPU machine sent back): its seeds "
    "join the report, so it can be rebuilt or extended without the run folders. Repeatable.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Train nothing: print each run's `esrkit train` command (the study's exact config), e.g. to "
    "train some runs on another machine.",
)
@click.option("--quiet", "-q", is_flag=True)
def providers(
    recipe,
    providers,
    models,
    seeds,
    controls,
    sets,
    baseline_hidden,
    user_provider,
    random_dim,
    output_dir,
    name,
    report_only,
    records,
    dry_run,
    quiet,
) -> None:
    """Embed with each provider (cached), train LLM-ESR and LLMInit with each, and write one table (both
    protocols, every group), LLM-ESR's gains with t-tests, a figure and the wall time of every stage."""
    from esrkit.runs.study import StudyPlan, run_study  # lazy: the CLI starts fast (esrkit/cli/__init__.py)

    plan = StudyPlan(
        recipe=recipe,
        providers=[p for p in providers.split(",") if p],
        models=[m for m in models.split(",") if m],
        controls=controls,
        seeds=parse_seeds(seeds) or [],
        overrides=list(sets),
        baseline_hidden=baseline_hidden,
        user_provider=user_provider,
        random_dim=random_dim,
        output_dir=output_dir,
        name=name or "",
    )
    for run_name, _, extra in plan.runs():
        plan.config(run_name, extra)  # every run's options (providers, models, --set) checked before work
    if dry_run:
        for run_name, _, extra in plan.runs():
            click.echo(shlex.join(plan.train_command(run_name, extra)))
        return
    try:
        report = run_study(
            plan,
            progress=not quiet,
            log=lambda m: click.echo(m, err=True),
            train_runs=not report_only,
            record_files=records,
        )
    except (ValueError, FileNotFoundError) as exc:  # a bad or conflicting record: say which, train nothing
        raise click.ClickException(str(exc)) from exc
    click.echo((plan.folder / "study.md").read_text())
    if report["failures"]:
        raise click.ClickException(f"{len(report['failures'])} run(s) failed: see {plan.folder / 'study.md'}")


@study.command("compare")
@click.argument("plan")
@click.option("--seeds", default=None, help="Comma-separated seeds (default: the plan's).")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Overrides applied to every run, after the plan's own.",
)
@click.option(
    "--only", default=None, help="Comma-separated run names: train only these (the report has all)."
)
@click.option("--output-dir", default="runs", show_default=True)
@click.option("--name", help="Study folder name (default: the plan's name, else study-<plan file stem>).")
@click.option("--report-only", is_flag=True, help="Train nothing: rewrite the report from finished runs.")
@click.option(
    "--record",
    "records",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A published study.json whose seeds join the report. Repeatable.",
)
@click.option("--dry-run", is_flag=True, help="Train nothing: print each run's `esrkit train` command.")
@click.option("--quiet", "-q", is_flag=True)
def compare(plan, seeds, sets, only, output_dir, name, report_only, records, dry_run, quiet) -> None:
    """Train the named runs of a PLAN (a TOML file or a recipes/studies name) and report them side by side:
    both protocols, every group, gains over the plan's references with seed t-tests, every seed's best and
    last epoch."""
    from esrkit.runs.compare import load_plan  # lazy: the CLI starts fast
    from esrkit.runs.study import run_study

    try:
        study_plan = load_plan(plan, output_dir=output_dir, name=name or "")
    except (ConfigError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    if seeds:
        study_plan.seeds = [int(s) for s in seeds.split(",") if s]
    study_plan.overrides += list(sets)
    if only:
        wanted = [n for n in only.split(",") if n]
        names = [r.name for r in study_plan.runs_]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise click.ClickException(
                f"--only: {unknown} are not runs of {study_plan.source}{did_you_mean(unknown, names)}; "
                f"its runs: {', '.join(names)}"
            )
        training = dataclasses.replace(study_plan, runs_=[r for r in study_plan.runs_ if r.name in wanted])
    else:
        training = study_plan
    if dry_run:
        for run_name, _, extra in training.runs():
            click.echo(shlex.join(training.train_command(run_name, extra)))
        return
    try:
        report = run_study(
            training,
            progress=not quiet,
            log=lambda m: click.echo(m, err=True),
            train_runs=not report_only,
            record_files=records,
        )
        if training is not study_plan:  # the report covers every run of the plan, not only those trained now
            report = run_study(
                study_plan, progress=False, log=lambda m: None, train_runs=False, record_files=records
            )
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo((study_plan.folder / "study.md").read_text())
    if report["failures"]:
        raise click.ClickException(
            f"{len(report['failures'])} run(s) failed: see {study_plan.folder / 'study.md'}"
        )
