"""``esrkit cache list|merge``: see what a workdir's embedding cache holds, and combine caches filled
elsewhere (embed on a GPU machine, copy its ``.esrkit/cache`` over, merge, train here)."""

from __future__ import annotations

from pathlib import Path

import click

WORKDIR = click.option(
    "--workdir",
    "-w",
    default=".esrkit",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The workdir whose cache/ to use.",
)


@click.group("cache")
def cache() -> None:
    """Inspect and merge embedding caches (one SQLite file per provider identity, keyed by text)."""


def _describe(s) -> str:
    ident = s.identity
    return (
        f"{s.identity_hash[:16]}  {ident.kind:<22} {ident.model:<36} {s.dim or '-':>5}-d  "
        f"{s.vectors:>9,} vectors"
    )


@cache.command("list")
@WORKDIR
def list_command(workdir: Path) -> None:
    """One line per provider identity: hash, kind, model, width, vectors."""
    from esrkit.embedding.cache import CacheError, list_caches  # lazy: the CLI starts fast (cli/__init__.py)

    try:
        summaries = list_caches(workdir)
    except CacheError as exc:
        raise click.ClickException(str(exc)) from None
    for s in summaries:
        click.echo(_describe(s))


@cache.command("merge")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@WORKDIR
def merge_command(source: Path, workdir: Path) -> None:
    """Copy into WORKDIR's cache every vector SOURCE has and it lacks.

    SOURCE: another workdir, its cache/ folder, or one identity folder. Identities never mix; rows already
    present are kept; rerun to finish an interrupted merge.
    """
    from esrkit.embedding.cache import CacheError, merge_caches  # lazy: the CLI starts fast

    try:
        summaries = merge_caches(source, workdir)
    except CacheError as exc:
        raise click.ClickException(str(exc)) from None
    for s in summaries:
        click.echo(f"{_describe(s)}  (+{s.added:,} from {source})")
