"""``esrkit recipe new``: a recipe and a prompt template for your own processed dataset."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("recipe")
def recipe() -> None:
    """Write recipes (``esrkit recipes`` lists the defined ones)."""


@recipe.command("new")
@click.argument("name")
@click.option(
    "--dataset",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A processed dataset folder (from esrkit data prepare).",
)
@click.option(
    "--provider",
    "-p",
    default="minilm",
    show_default=True,
    help="Embedding provider (esrkit providers); offline needs no download.",
)
@click.option(
    "--backbone", default="sasrec", show_default=True, help="sasrec, bert4rec, gru4rec or a registered one."
)
@click.option(
    "--out",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Writes OUT/recipes/NAME.toml and OUT/recipes/prompts/NAME.toml (esrkit finds recipes in "
    "the current folder's recipes/).",
)
@click.option(
    "--preset",
    type=click.Choice(["llmesr", "best"]),
    default="llmesr",
    show_default=True,
    help="llmesr: the paper's model with the official settings, beside its baselines; best: esrkit's "
    "recommended configuration for deploying (LLMInit-CE with text neighbours, docs/FULL_RANKING.md).",
)
@click.option("--force", is_flag=True, help="Replace files this command wrote before.")
def new(name, dataset, provider, backbone, preset, out, force) -> None:
    """Write a commented recipe and a prompt template for DATASET, from its own item fields.

    The recipe trains LLM-ESR with the official settings (--preset best: esrkit's recommended full-ranking
    configuration); its comments give the commands that train the SASRec and LLMInit baselines and compare
    them, and with --preset best the ones that choose its ranking bonus and ship it. The template names the
    fields it found and joins list fields (e.g. RecBole token_seq titles) as text. Long-tail groups: the
    official rule unless it leaves a group empty or tiny on this data, then the paper's 20% rule (the reason
    is a comment in the recipe).

    \b
    Example:
      esrkit data prepare --format recbole --input ml.inter --meta ml.item -o data/ml
      esrkit recipe new ml --dataset data/ml --provider minilm
      esrkit train -r ml
    """
    from esrkit.runs.scaffold import (  # lazy: the CLI starts fast (cli/__init__.py)
        check_written,
        scaffold,
        write,
    )

    try:
        s = scaffold(name, dataset, provider, backbone, out, force, preset=preset)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    write(s)
    check_written(s)
    click.echo(f"wrote {s.recipe_path} and {s.templates_path}")
    click.echo(f"groups: {s.group_note}")
    click.echo(f"an item prompt:\n  {s.sample_item.strip()!r}")
    click.echo(f"a user prompt:\n  {s.sample_user.strip()[:300]!r}")
    where = "" if Path(out).resolve() == Path.cwd().resolve() else f" (from {out})"
    click.echo(f"next: edit them if you like, then esrkit train -r {name}{where}")
