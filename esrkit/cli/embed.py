"""``esrkit embed``: item/user prompts of a processed dataset -> cached provider vectors -> items.npy /
users.npy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from esrkit.config import ConfigError, parse_override
from esrkit.data.sequences import DatasetFormatError, SequenceData
from esrkit.utils.errors import error_text

EPILOG = """\b
Examples:
  esrkit embed --dataset beauty                                  # offline default, no key
  esrkit embed --provider openai --dataset beauty --dry-run      # tokens and cost of what is not cached
  OPENAI_API_KEY=... esrkit embed --provider openai --dataset beauty
  esrkit embed --provider llama --set provider.model=/models/Llama-2-7b-hf --dataset beauty
  esrkit embed --provider openai --set provider.base_url=http://localhost:8000/v1 \\
               --set provider.model=BAAI/bge-m3 --set provider.api_key_env= --dataset beauty

List providers with `esrkit providers`; see docs/PROVIDERS.md.
"""


def parse_provider_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """``provider.key=value`` (or ``key=value``) -> {key: value}; values use TOML syntax, bare words are
    strings."""
    out: dict[str, Any] = {}
    for text in items:
        path, value = parse_override(text)
        if path[0] == "provider" and len(path) > 1:
            path = path[1:]
        if len(path) != 1:
            raise ConfigError(f"--set {text!r}: expected provider.KEY=VALUE")
        out[path[0]] = "" if value is None else value
    return out


def resolve_dataset(path: str, workdir: Path) -> Path:
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        return candidate
    under_workdir = workdir / "datasets" / path
    if under_workdir.is_dir():
        return under_workdir
    raise click.BadParameter(
        f"{path} is not a dataset directory (nor {under_workdir})", param_hint="--dataset"
    )


@click.command("embed", epilog=EPILOG)
@click.option(
    "--provider",
    "-p",
    "provider_name",
    default="offline",
    help="A providers/*.toml name or path (see `esrkit providers`).",
)
@click.option(
    "--dataset", "-d", required=True, help="Processed dataset directory (from `esrkit data prepare`)."
)
@click.option(
    "--templates", "-t", default="generic", help="Prompt templates: a recipes/prompts/*.toml name or path."
)
@click.option(
    "--what", type=click.Choice(["items", "users", "both"]), default="both", help="Which prompts to embed."
)
@click.option(
    "--workdir",
    "-w",
    default=".esrkit",
    type=click.Path(file_okay=False, path_type=Path),
    help="Holds the cache (cache/) and the matrices (embeddings/).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="provider.KEY=VALUE",
    help="Override a provider option, e.g. --set provider.dimensions=512. Repeatable.",
)
@click.option(
    "--dry-run", is_flag=True, help="Count texts not yet cached, their tokens and the cost; embed nothing."
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def embed(
    provider_name: str,
    dataset: str,
    templates: str,
    what: str,
    workdir: Path,
    overrides: tuple[str, ...],
    dry_run: bool,
    no_progress: bool,
) -> None:
    """Embed item and user prompts with a provider; vectors are cached per provider and text."""
    from esrkit.embedding.cache import CacheError  # lazy: the CLI starts fast (esrkit/cli/__init__.py)
    from esrkit.prompts.templates import load_templates
    from esrkit.providers.base import ProviderError, load_provider

    user_errors = (
        ConfigError,
        DatasetFormatError,
        ProviderError,
        CacheError,
        FileNotFoundError,
        KeyError,
        ValueError,
    )
    try:
        data = SequenceData.load(resolve_dataset(dataset, workdir))
        prompt_templates = load_templates(templates)
        provider = load_provider(provider_name, **parse_provider_overrides(overrides))
        if dry_run:
            if int(os.environ.get("RANK", "0")) == 0:  # under a launcher, one process reports
                _dry_run(data, provider, prompt_templates, what, workdir)
        else:
            _run(data, provider, prompt_templates, what, workdir, progress=not no_progress)
    except user_errors as exc:
        raise click.ClickException(error_text(exc)) from None


def _run(data: SequenceData, provider: Any, templates: Any, what: str, workdir: Path, progress: bool) -> None:
    from esrkit.embedding.pipeline import embed_dataset  # lazy: the CLI starts fast

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:  # accelerate launch / torchrun: shard the texts (docs/SCALING.md)
        from esrkit.embedding.distributed import embed_dataset_distributed  # lazy: only under a launcher
        from esrkit.utils.runtime import exit_rank_now, runtime, shutdown

        try:
            with provider:
                result = embed_dataset_distributed(
                    data, provider, templates, what=what, workdir=workdir, progress=progress
                )
            main = runtime().is_main
        except BaseException:
            shutdown(wait=False)
            raise
        shutdown()
        if not main:  # rank 0 reports; the others end here, as `esrkit train`'s ranks do
            exit_rank_now()
    else:
        with provider:
            result = embed_dataset(data, provider, templates, what=what, workdir=workdir, progress=progress)
    meta = result.meta
    click.echo(
        f"{provider.name} [{meta['provider']['identity_hash'][:12]}] on {data.name}, templates "
        f"{templates.name}, {meta['dim']}-d"
    )
    for part in ("items", "users"):
        info = meta["parts"].get(part) if getattr(result, part) is not None else None
        if info:
            speed = ""
            if info["computed"]:
                speed = (
                    f" in {info['seconds']:.1f} s ({info['texts_per_s']:,.1f} texts/s, "
                    f"{info['tokens_per_s']:,.0f} tokens/s; loading took {info['load_seconds']:.1f} s)"
                )
            damaged = f" ({info['damaged']} damaged in the cache)" if info.get("damaged") else ""
            click.echo(
                f"  {part}: {info['shape'][0]} x {info['shape'][1]}; {info['n_unique']} distinct texts: "
                f"{info['cached']} cached, {info['computed']} computed{damaged}{speed}"
            )
    retries = meta.get("provider_stats", {}).get("retries")
    if retries:
        click.echo(f"  {retries} request(s) were retried (see the log with -v)")
    click.echo(f"-> {result.directory}")
    if distributed:
        exit_rank_now()  # skip torch's C++ teardown, which can abort a gloo rank at exit (see exit_rank_now)


def _dry_run(data: SequenceData, provider: Any, templates: Any, what: str, workdir: Path) -> None:
    from esrkit.embedding.pipeline import plan_dataset  # lazy: the CLI starts fast

    plan = plan_dataset(data, provider, templates, what=what, workdir=workdir)
    click.echo(f"dry run: {provider.name} ({provider.identity.model}); nothing is embedded or sent")
    for part, p in plan.parts.items():
        click.echo(
            f"  {part}: {p.n_texts} texts, {p.n_unique} distinct, {p.cached} cached, {p.to_embed} to embed, "
            f"{p.tokens:,} tokens"
        )
    counter = getattr(provider, "counter", None)
    how = counter.name if counter is not None else ("exact" if plan.tokens_exact else "estimate")
    line = f"  total to embed: {plan.tokens:,} tokens ({how})"
    if plan.usd_per_1m_tokens:
        line += f"; estimated cost ${plan.cost_usd:,.4f} at ${plan.usd_per_1m_tokens:g} per 1M tokens"
    click.echo(line)
    if not plan.tokens_exact and plan.tokens:
        typical = plan.typical_tokens
        line = f"  likely about {typical:,} tokens (4 characters a token)"
        if plan.usd_per_1m_tokens:
            line += f", about ${typical * plan.usd_per_1m_tokens / 1e6:,.4f}"
        click.echo(line)
