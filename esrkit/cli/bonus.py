"""``esrkit tune-bonus``: choose the ranking-time text terms of trained runs on validation."""

from __future__ import annotations

import json
from collections.abc import Callable

import click
from click.core import ParameterSource


def number_list(kind: type, low: float, empty: bool = False) -> Callable:
    """A click callback: a comma-separated list of numbers of ``kind``, each at least ``low`` (``empty``: no
    number is a valid answer)."""

    def parse(ctx: click.Context, param: click.Parameter, text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            values = None
        if values is None or (not values and not empty) or any(v < low for v in values):
            what = "integers" if kind is int else "numbers"
            raise click.BadParameter(f"comma-separated {what} >= {low:g}, not {text!r}")
        return values

    return parse


@click.command("tune-bonus")
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--betas", default="0,0.25,0.5,1", callback=number_list(float, 0), help="Values of β.")
@click.option(
    "--items", default="1,3", callback=number_list(int, 1), help="M: the neighbours of the last M items."
)
@click.option(
    "--tails", default="0,1,2", callback=number_list(float, 0), help="s: rarer neighbours get more of β."
)
@click.option(
    "--text-boosts",
    default="0,0.5,1",
    callback=number_list(float, 0),
    help="Values of γ, the dense text term (model.text_boost; 0 alone: not tuned).",
)
@click.option("--text-items", default="3", callback=number_list(int, 1), help="m: the last m items' text.")
@click.option(
    "--text-tails",
    default="0,1",
    callback=number_list(float, 0),
    help="t: items rarer than average get up to 1 + t |z| times γ.",
)
@click.option(
    "--tilts",
    default="0",
    callback=number_list(float, 0),
    help="Values of α, the popularity tilt (model.popularity_tilt; 0 alone: not tuned).",
)
@click.option("--tilt-items", default="1", callback=number_list(int, 1), help="M: h_u from the last M items.")
@click.option(
    "--tail-first",
    default="",
    callback=number_list(float, 0, empty=True),
    metavar="TOL[,TOL...]",
    help="Also choose by the tail-first rule: the best validation tail-item N@10 among the settings within "
    "TOL (relative) of the best validation N@10, e.g. 0.02.",
)
@click.option(
    "--new-items",
    is_flag=True,
    help="Validate with the held-out items of runs trained with data.cold_items > 0 added, as at test: for "
    "a catalogue that adds items between retrains (prints their N@10 too).",
)
@click.option("--with-test", is_flag=True, help="Also report the test split (never used to choose).")
@click.option(
    "--records",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Instead of RUN_DIRS: choose from records that --json wrote for some runs each (e.g. one process "
    "per seed at once), as one invocation over all of them would; the grid is the records'. Repeat per file.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write every run's numbers here.")
@click.option("--device", default="cpu")
def tune_bonus(
    run_dirs,
    betas,
    items,
    tails,
    text_boosts,
    text_items,
    text_tails,
    tilts,
    tilt_items,
    tail_first,
    new_items,
    with_test,
    records,
    json_path,
    device,
) -> None:
    """Choose model.neighbour_boost, model.text_boost, model.popularity_tilt and their refinements on
    validation for RUN_DIRS (the seeds of one trained configuration with model.text_neighbours;
    docs/FULL_RANKING.md). Nothing is trained again: they change how a run ranks, not what it learnt. Prints
    every setting's mean over the runs and the options that ship the choice with `esrkit export`."""
    from esrkit.runs import bonus  # lazy: the CLI starts fast
    from esrkit.utils.io import atomic_write_text

    if bool(run_dirs) == bool(records):
        raise click.UsageError("give run folders to evaluate or --records to combine, not both or neither")
    if records:
        given = _options_given(*EVALUATION_OPTIONS)
        if given:
            raise click.UsageError(f"--records holds the runs' evaluation already; drop {', '.join(given)}")
        record = bonus.combine_records(records, tail_first)
    else:
        grid = bonus.bonus_grid(betas, items, tails, text_boosts, text_items, text_tails, tilts, tilt_items)
        record = bonus.tune_bonus(list(run_dirs), grid, tail_first, with_test, device, click.echo, new_items)
    runs = [run["run"] for run in record["runs"]]
    click.echo(bonus_table(record["mean"]))
    chosen = bonus.Setting.from_record(record["chosen"])
    click.echo(f"\nchosen on validation (best mean N@10 of {len(runs)} run(s)): {chosen.label()}")
    click.echo(f"  esrkit export {runs[0]} -o EXPORT {chosen.options()}")
    for pick in record.get("tail_first", []):
        setting = bonus.Setting.from_record(pick)
        click.echo(f"tail-first within {pick['tolerance']:g}: {setting.label()} ({setting.options()})")
    if json_path:
        atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


# what evaluating a run takes, and a record of the evaluation holds
EVALUATION_OPTIONS = (
    "betas",
    "items",
    "tails",
    "text_boosts",
    "text_items",
    "text_tails",
    "tilts",
    "tilt_items",
    "new_items",
    "with_test",
)


def _options_given(*names: str) -> list[str]:
    """The options among ``names`` that the command line set (not left at their defaults)."""
    ctx = click.get_current_context()
    given = [n for n in names if ctx.get_parameter_source(n) != ParameterSource.DEFAULT]
    return [f"--{n.replace('_', '-')}" for n in given]


TABLE_COLUMNS = (  # record field, heading, digits; a column only where every row has it (test: --with-test)
    ("valid", "validation N@10", 5),
    ("valid_tail_item", "validation tail-item N@10", 5),
    ("valid_cold_item", "validation new-item N@10", 5),
    ("overall", "test N@10", 4),
    ("tail_item", "test tail-item N@10", 4),
    ("cold_item", "test new-item N@10", 4),
)


def bonus_table(mean: list[dict]) -> str:
    """One row per setting: its mean validation (and, where measured, test) N@10, overall, on tail items and,
    where the split holds items added after training, on those."""
    from esrkit.runs.bonus import Setting  # lazy: the CLI starts fast

    columns = [c for c in TABLE_COLUMNS if all(c[0] in row for row in mean)]
    lines = ["| setting | " + " | ".join(c[1] for c in columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for row in mean:
        cells = [f"{row[field]:.{digits}f}" for field, _, digits in columns]
        lines.append(f"| {Setting.from_record(row).label()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
