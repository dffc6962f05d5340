"""``esrkit index``: build the similar-user table from user embeddings, and look users up in it."""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

from esrkit.utils.errors import error_text
from esrkit.utils.io import load_npy, read_json


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def index() -> None:
    """Similar-user retrieval: which users teach each user in retrieval-augmented self-distillation.

    \b
      esrkit index build --embeddings users.npy --ids user_ids.json -k 100 -o sim_users
      esrkit index query sim_users --user A1B2C3 -k 10
    """


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _load_ids(path: Path | None, n: int) -> list[str] | None:
    if path is None:
        return None
    ids = read_json(path)
    if not isinstance(ids, list) or len(ids) != n:
        raise click.BadParameter(
            f"{path} must be a JSON list of {n} user ids (one per embedding row)", param_hint="--ids"
        )
    return [str(u) for u in ids]


def _describe(meta: dict[str, Any]) -> list[str]:
    lines = [
        f"method: {meta.get('method')}  users: {meta.get('n_users')}  k: {meta.get('k')}  dim: "
        f"{meta.get('dim')}"
    ]
    if meta.get("hnsw"):
        h = meta["hnsw"]
        lines.append(f"hnsw: M={h['M']} ef_construction={h['ef_construction']} ef={h['ef']} seed={h['seed']}")
    if meta.get("n_shards"):
        lines.append(f"shards: {meta['n_shards']} of up to {meta['shard_size']} users")
    recall = meta.get("recall")
    if recall:
        lines.append(
            f"recall@{recall['k']} vs exact on {recall['sample']} sampled users: {recall['recall_at_k']:.4f}"
        )
    return lines


def _clear_previous_indexes(out_dir: Path) -> None:
    """--overwrite rebuilds from scratch: stale index files of another method must not linger beside the
    table."""
    for name in ("hnsw.bin", "hnsw.json"):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "shards", ignore_errors=True)


@index.command("build")
@click.option(
    "--embeddings",
    "embeddings_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="(n_users, d) float .npy; row r is user row r.",
)
@click.option(
    "--ids",
    "ids_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON list of raw user ids, one per row (e.g. a dataset's user_ids.json). Default: 1..n.",
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=100,
    help="Neighbours stored per user (the official table keeps 100).",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "exact", "hnsw"]),
    default="auto",
    help="auto = exact below --exact-below users, hnsw above.",
)
@click.option(
    "--exact-below",
    type=click.IntRange(min=0),
    default=200_000,
    help="User count where auto switches to hnsw.",
)
@click.option("--M", "m", type=click.IntRange(min=2), default=32, help="hnsw graph degree.")
@click.option("--ef-construction", type=click.IntRange(min=1), default=200, help="hnsw build breadth.")
@click.option(
    "--ef", type=click.IntRange(min=1), default=200, help="hnsw query breadth (stored with the index)."
)
@click.option(
    "--seed", type=int, default=100, help="hnsw level seed (builds are deterministic with --threads 1)."
)
@click.option(
    "--threads", type=click.IntRange(min=0), default=0, help="Threads for torch and hnswlib (0 = all cores)."
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=0),
    default=0,
    help="Users per shard (0 = unsharded). Shard indexes are built one at a time into DIR/shards.",
)
@click.option(
    "--recall-sample",
    type=click.IntRange(min=0),
    default=1000,
    help="With hnsw: measure recall@k against exact search on this many random users (0 = skip).",
)
@click.option(
    "--mmap/--no-mmap", default=True, help="Memory-map the embeddings instead of reading them whole."
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (the neighbour table, plus the index files).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing table in DIR.")
def build(
    embeddings_path: Path,
    ids_path: Path | None,
    k: int,
    method: str,
    exact_below: int,
    m: int,
    ef_construction: int,
    ef: int,
    seed: int,
    threads: int,
    shard_size: int,
    recall_sample: int,
    mmap: bool,
    out_dir: Path,
    overwrite: bool,
) -> None:
    """Build the top-k similar-user table of every user and save it to DIR."""
    from esrkit.index.exact import check_embeddings  # lazy: the CLI starts fast (esrkit/cli/__init__.py)
    from esrkit.index.neighbours import build_neighbours, resolve_method
    from esrkit.index.sharded import build_sharded_neighbours

    if (out_dir / "table.json").exists() and not overwrite:
        raise click.ClickException(
            f"{out_dir} already holds a neighbour table (pass --overwrite to replace it)"
        )
    if overwrite:
        _clear_previous_indexes(out_dir)
    emb = check_embeddings(load_npy(embeddings_path, mmap=mmap), str(embeddings_path))
    ids = _load_ids(ids_path, len(emb))
    hnsw = {"hnsw_m": m, "hnsw_ef_construction": ef_construction, "hnsw_ef": ef, "seed": seed}
    t0 = time.perf_counter()
    if shard_size:
        chosen = resolve_method(method, len(emb), exact_below)
        table = build_sharded_neighbours(
            emb,
            k,
            shard_size,
            method=chosen,
            out_dir=out_dir / "shards",
            user_ids=ids,
            num_threads=threads or None,
            measure_recall=recall_sample,
            **hnsw,
        )
    else:
        table = build_neighbours(
            emb,
            k,
            method=method,
            exact_below=exact_below,
            user_ids=ids,
            num_threads=threads or None,
            measure_recall=recall_sample,
            index_path=out_dir / "hnsw.bin",
            **hnsw,
        )
    seconds = time.perf_counter() - t0
    table.meta["wall_s"] = seconds
    table.meta["peak_rss_mib"] = _peak_rss_mib()
    table.save(out_dir, overwrite=overwrite)
    for line in _describe(table.meta):
        click.echo(line)
    click.echo(f"time: {seconds:.1f}s  peak memory (RSS): {table.meta['peak_rss_mib']:.0f} MiB")
    click.echo(f"wrote {out_dir}")


@index.command("query")
@click.argument("table_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--user", "user_id", required=True, help="Raw user id.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, help="How many similar users to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def query(table_dir: Path, user_id: str, k: int, as_json: bool) -> None:
    """Show a user's k most similar users from a built table."""
    from esrkit.index.neighbours import NeighbourTable  # lazy: the CLI starts fast

    table = NeighbourTable.load(table_dir, mmap=True, verify=False)
    try:
        hits = table.lookup_scored(user_id, min(k, table.k))
    except KeyError as exc:
        raise click.ClickException(error_text(exc)) from None
    if k > table.k:
        click.echo(f"note: the table holds {table.k} neighbours per user; showing {table.k}", err=True)
    if as_json:
        click.echo(json.dumps({"user": user_id, "neighbours": [{"user": u, "score": s} for u, s in hits]}))
        return
    click.echo(f"most similar users to {user_id} ({table.meta.get('method', '?')}):")
    for rank, (other, score) in enumerate(hits, 1):
        shown = "" if score is None else f"{score:.4f}"
        click.echo(f"{rank:>4}  {other:<24} {shown}")
