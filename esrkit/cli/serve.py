"""``esrkit recommend``, ``esrkit export``, ``esrkit items add``: serving a trained model."""

from __future__ import annotations

import time
from pathlib import Path

import click

from esrkit.cli.options import ranking_options
from esrkit.config import NEW_ITEM_NORMS, parse_override
from esrkit.utils.errors import error_text, quote


def _open(path: str, device: str):
    """A ServedModel from an export folder (manifest.json) or a run folder (config.json)."""
    from esrkit.serving import ServedModel, load  # lazy: the CLI starts fast (esrkit/cli/__init__.py)

    folder = Path(path)
    if (folder / "manifest.json").exists():
        return load(folder, device)
    if (folder / "config.json").exists():
        from esrkit.runs.load import load_run  # lazy: the CLI starts fast

        return ServedModel.from_run(load_run(folder, device))
    raise click.BadParameter(
        f"{folder} is neither an export folder (manifest.json) nor a run folder (config.json)"
    )


def _ids(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _print(model, recs, header: str, k: int) -> None:
    fewer = f" (only {len(recs)} items can be recommended)" if len(recs) < k else ""
    click.echo(f"{header}; top {len(recs)}{fewer}:")
    for rank, rec in enumerate(recs, 1):
        item = int(model.item_index([rec.item])[0])
        click.echo(f"{rank:>3}. item {item:<7} {rec.item:<14} score {rec.score:8.3f}  {rec.title}")


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--user", "user", help="A user the model was trained on: raw user id, or #ROW for a row index.")
@click.option("--history", help="Comma-separated raw item ids, oldest first: any user, seen or not.")
@click.option("--all-users", is_flag=True, help="Every user the model was trained on, into -o (CSV, JSONL).")
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=1), help="How many items.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="--all-users: the file (.csv, .jsonl).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Output format (default: -o's).")
@click.option("--exclude", help="--history: comma-separated item ids never to recommend.")
@click.option("--include-history", is_flag=True, help="Allow items the user already interacted with.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def recommend(
    path, user, history, all_users, k, output, fmt, exclude, include_history, device, quiet
) -> None:
    """Top-k next items from an export folder or a run folder (no LLM call).

    \b
    Examples:
      esrkit recommend exports/beauty --history B000052YQ0,B0009RF9DW -k 10
      esrkit recommend runs/beauty5-sasrec/seed-42 --user A1YJEY40YUW4SE
      esrkit recommend exports/beauty --all-users -k 100 -o recs.csv
    """
    if sum(bool(x) for x in (user, history, all_users)) != 1:
        raise click.UsageError("give exactly one of --user, --history and --all-users")
    if all_users and not output:
        raise click.UsageError("--all-users writes a file: add -o recs.csv (or .jsonl)")
    if all_users:
        from esrkit.serving.files import output_format  # lazy: the CLI starts fast

        try:
            fmt = output_format(output, fmt)  # before loading anything
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="-o") from None
    model = _open(path, device)
    if all_users:
        _all_users(model, output, k, fmt, include_history, quiet)
    elif history:
        recs = model.recommend(_ids(history), k, exclude=_ids(exclude), exclude_history=not include_history)
        _print(model, recs, f"history of {len(_ids(history))} items", k)
    else:
        users = model.require_users()
        if user.startswith("#") and user not in users.user_ids:
            if not user[1:].isdigit():
                raise click.BadParameter(
                    f"#ROW needs a row number, e.g. #0, got {quote(user)}", param_hint="--user"
                )
            row = int(user[1:])
            if not 0 <= row < len(users):
                raise click.BadParameter(f"row {row} is outside 0..{len(users) - 1}", param_hint="--user")
            user = users.user_ids[row]
        try:
            row = users.row_of(user)
        except KeyError as exc:
            raise click.BadParameter(error_text(exc), param_hint="--user") from None
        recs = model.recommend_known(user, k, exclude_history=not include_history)
        _print(model, recs, f"user {user} (row {row}), {len(users.history(row))} interactions", k)


def _all_users(model, output: str, k: int, fmt: str, include_history: bool, quiet: bool) -> None:
    from tqdm.auto import tqdm  # lazy, as the serving stack below

    from esrkit.serving.files import write_all_users  # lazy: the CLI starts fast

    start = time.perf_counter()
    with tqdm(total=len(model.require_users()), unit="user", disable=quiet, dynamic_ncols=True) as bar:
        counts = write_all_users(
            model, output, k, fmt, exclude_history=not include_history, progress=bar.update
        )
    click.echo(
        f"wrote {counts['rows']:,} recommendations for {counts['users']:,} users to {output} "
        f"({time.perf_counter() - start:.1f} s)"
    )


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="The export folder.")
@click.option(
    "--without-users",
    is_flag=True,
    help="Leave the training users' histories out (then "
    "--all-users and --user are unavailable; --history still works).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing export folder.")
@ranking_options("serve")
@click.option("--device", default="cpu", show_default=True)
def export(run_dir, output, without_users, overwrite, ranking, device) -> None:
    """A self-contained folder of a trained run: loads with no dataset, no cache and no LLM call (checked by
    sha256 hashes), with `esrkit.load(DIR)` or `esrkit recommend DIR`."""
    from esrkit.serving import export_run, load  # lazy: the CLI starts fast

    path = export_run(
        run_dir,
        output,
        users=not without_users,
        overwrite=overwrite,
        device=device,
        ranking=ranking,
    )
    model = load(path)
    size = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
    users = "no users" if model.users is None else f"{len(model.users):,} users"
    new_items = "from their text (esrkit items add)" if model.new_item_support == "text" else "not supported"
    click.echo(
        f"exported {run_dir} -> {path}: {model.cfg.model.name} on {model.cfg.model.backbone}, "
        f"{model.n_items:,} items, {users}, {size / 2**20:.1f} MiB; new items: {new_items}"
    )


@click.group()
def items() -> None:
    """Change an export folder's item catalogue."""


@items.command("add")
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--items",
    "items_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSONL, one item per line: its id (id, item_id, asin or business_id) and text fields.",
)
@click.option(
    "--id-field", help="The records' id field (default: the first of id, item_id, asin, business_id)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    help="Write the extended export here (default: replace EXPORT_DIR, atomically).",
)
@click.option(
    "--provider",
    help="Embed with this provider (default: the one the model was trained with; "
    "it must have the same identity).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="A provider option, e.g. provider.device=cuda or provider.batch_size=64.",
)
@click.option(
    "--new-item-norm",
    type=click.Choice(NEW_ITEM_NORMS),
    help="LLMInit: the new rows' length, the bare PCA projection's or the trained rows' mean (default: the "
    "training config's model.new_item_norm).",
)
@click.option("--device", default="cpu", show_default=True)
def add(export_dir, items_file, id_field, output, provider, sets, new_item_norm, device) -> None:
    """Add items never seen in training, from their text alone (prompt template -> provider -> the model's
    new-item contract), so they are recommended like any other item."""
    from esrkit.serving import load  # lazy: the CLI starts fast
    from esrkit.serving.files import read_item_records

    options = {}
    for text in sets:
        key, value = parse_override(text)
        options[".".join(key)] = value
    records = read_item_records(items_file)
    model = load(export_dir, device)
    ids = model.add_items(
        records, provider=provider, id_field=id_field, new_item_norm=new_item_norm, **options
    )
    target = model.save(output or export_dir, overwrite=output is None)
    click.echo(
        f"added {len(ids):,} items ({ids[0]}{', ...' if len(ids) > 1 else ''}) -> {target}: "
        f"{model.n_items:,} items"
    )
