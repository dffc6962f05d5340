"""``esrkit data prepare`` and ``esrkit data stats``: raw files -> processed dataset, and its statistics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from esrkit.config import ConfigError
from esrkit.data.prepare import PRESETS, PrepareOptions, prepare_source
from esrkit.data.readers import READERS, DataError, ReaderInputs
from esrkit.data.sequences import DatasetFormatError, SequenceData
from esrkit.data.stats import dataset_stats, format_stats
from esrkit.utils.errors import error_text

USER_ERRORS = (
    DataError,
    ConfigError,
    DatasetFormatError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    ValueError,
)


def _formats_epilog() -> str:
    lines = ["\b", "Formats:"]
    for name in READERS.names():
        lines.append(f"  {name:<11} {READERS.meta(name)['description']}")
    lines += ["\b", "Presets (official thresholds of the paper's datasets):"]
    for name, preset in sorted(PRESETS.items()):
        lines.append(f"  {name:<11} --format {preset.format}: {preset.description}")
    lines += ["\b", "Options for --set (defaults = the official data_process.py):"]
    defaults = PrepareOptions()
    for field in PrepareOptions.__dataclass_fields__:
        lines.append(f"  {field} = {getattr(defaults, field)!r}")
    lines += ["", "Full reference: docs/DATA.md."]
    return "\n".join(lines)


@click.group("data")
def data() -> None:
    """Prepare raw datasets (Amazon, Yelp, inter.txt, S3-Rec, UniSRec, LC-Rec, RecBole, CSV); show
    statistics."""


@data.command("prepare", epilog=_formats_epilog())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(READERS.names(), case_sensitive=False),
    help="Input format (implied by --preset).",
)
@click.option(
    "--reviews",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Review/rating file (amazon2014, amazon2018, yelp).",
)
@click.option(
    "--meta",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Item metadata: Amazon meta_*.json, Yelp business file, RecBole .item, LC-Rec .item.json.",
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Input file or directory (inter, s3rec, unisrec, lcrec, recbole, csv). Repeatable.",
)
@click.option(
    "--items",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Item attribute table (JSONL or CSV/TSV: an id column + attributes) to attach.",
)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Official thresholds of a paper dataset.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Preprocessing option, e.g. --set kcore=true --set user_min=5. Repeatable.",
)
@click.option("--skip-malformed", is_flag=True, help="Skip and count malformed lines instead of failing.")
@click.option("--name", default="", help="Dataset name (default: the preset, else the output folder name).")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (written atomically).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def prepare_command(
    fmt, reviews, meta, inputs, items, preset, overrides, skip_malformed, name, output, overwrite
):
    """Read raw interactions, apply the official LLM-ESR preprocessing and write a processed dataset.

    \b
    Examples:
      esrkit data prepare --preset beauty --reviews reviews_Beauty.json.gz \\
          --meta meta_Beauty.json.gz -o beauty
      esrkit data prepare --format s3rec --input Beauty.txt --items items.jsonl.gz -o beauty5
      esrkit data prepare --format inter --input yelp/inter.txt -o yelp
    """
    if output.exists() and not overwrite:
        raise click.ClickException(f"{output} already exists (pass --overwrite to replace it)")
    if fmt is None and preset is None:
        raise click.UsageError("give --format (or --preset, which implies one)")
    if preset and fmt and fmt.lower() != PRESETS[preset].format:
        raise click.UsageError(f"--preset {preset} is for --format {PRESETS[preset].format}, not {fmt}")
    sources = ReaderInputs(reviews=reviews, meta=meta, inputs=list(inputs), items=items)
    all_overrides = list(overrides) + (["skip_malformed=true"] if skip_malformed else [])
    started = time.perf_counter()
    try:
        result = prepare_source(
            fmt, sources, None, preset=preset, overrides=all_overrides, name=name or preset or output.name
        )
        result.save(output, overwrite=overwrite)
    except USER_ERRORS as exc:
        raise click.ClickException(error_text(exc)) from None
    elapsed = time.perf_counter() - started
    counts = result.meta.get("counts", {})
    click.echo(
        f"wrote {output}: {result.n_users:,} users, {result.n_items:,} items, "
        f"{result.n_interactions:,} interactions ({elapsed:.1f} s)"
    )
    dropped = counts.get("users_dropped_min_length", 0)
    if dropped:
        click.echo(
            f"dropped {dropped:,} users with < {result.meta['options']['min_length']} interactions", err=True
        )
    skipped = result.meta.get("skipped_malformed", {})
    if skipped:
        total = sum(skipped.values())
        click.echo(f"skipped {total:,} malformed line(s):", err=True)
        for key, count in skipped.items():
            click.echo(f"  {key}: {count:,}", err=True)
        for sample in result.meta.get("skipped_samples", []):
            click.echo(f"  e.g. {sample}", err=True)


@data.command("stats")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--ts-user", type=int, default=None, help="Tail-user threshold (default: official for the dataset)."
)
@click.option(
    "--ts-item", type=int, default=None, help="Tail-item threshold (default: official for the dataset)."
)
@click.option("--max-len", type=int, default=200, show_default=True, help="Input window for user groups.")
@click.option(
    "--group-rule",
    type=click.Choice(["official", "pareto"]),
    default="official",
    show_default=True,
    help="The long-tail rule to check (data.group_rule): a warning says when it "
    "leaves a group empty or tiny, and which rule to use.",
)
def stats_command(directory, as_json, ts_user, ts_item, max_len, group_rule):
    """Statistics of a processed dataset: Table 3 columns, long-tail shares, coverage, what was dropped."""
    try:
        dataset = SequenceData.load(directory)
    except DatasetFormatError as exc:
        raise click.ClickException(str(exc)) from None
    stats = dataset_stats(dataset, ts_user=ts_user, ts_item=ts_item, max_len=max_len, group_rule=group_rule)
    click.echo(json.dumps(stats, indent=2) if as_json else format_stats(stats))
