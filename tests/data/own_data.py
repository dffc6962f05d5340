"""Small raw datasets in the shapes a new user brings: RecBole atomic files, a CSV of interactions with an
item CSV, the same CSV with a JSONL item file. One generated catalogue behind all three (movies with word
titles, genre lists and a year), with a sequential signal (users walk through neighbouring items) so models
learn a bit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

WORDS = (
    "English",
    "Patient,",
    "The",
    "Toy",
    "Story",
    "Heat",
    "Fargo",
    "Casino",
    "Babe",
    "Clueless",
    "Seven",
    "Dead",
    "Man",
    "Walking",
    "Sense",
    "Sensibility",
    "Apollo",
    "Rob",
    "Roy",
    "Braveheart",
    "Crimson",
    "Tide",
)
GENRES = ("Action", "Comedy", "Drama", "Romance", "Thriller", "War", "Animation", "Crime")
# enough items for LLMInit's 128-d PCA table and the sampled protocol's 100 negatives, after the 3/3 filter
N_USERS, N_ITEMS = 60, 150


def catalogue(n_items: int = N_ITEMS, seed: int = 0) -> list[dict]:
    """Items 1..n with a multi-word title, one to three genres and a release year."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(1, n_items + 1):
        title = [WORDS[j] for j in rng.choice(len(WORDS), size=1 + i % 3, replace=False)]
        genres = [GENRES[j] for j in rng.choice(len(GENRES), size=1 + i % 3, replace=False)]
        items.append({"item_id": f"m{i}", "title": title, "genres": genres, "year": str(1990 + i % 10)})
    return items


def interactions(
    n_users: int = N_USERS, n_items: int = N_ITEMS, min_length: int = 12, max_length: int = 20, seed: int = 0
) -> list[tuple[str, str, int]]:
    """(user, item, unix time) rows in a shuffled file order; each user walks along neighbouring items."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        length = int(rng.integers(min_length, max_length + 1))
        start = int(rng.integers(0, n_items))
        steps = rng.integers(1, 3, size=length)
        items = (start + np.cumsum(steps)) % n_items + 1
        t0 = 1_600_000_000 + int(rng.integers(0, 10_000))
        rows += [(f"u{u}", f"m{int(i)}", t0 + 3600 * k) for k, i in enumerate(items)]
    order = rng.permutation(len(rows))
    return [rows[k] for k in order]


def write_recbole(
    folder: Path, name: str = "mine", title_field: str = "movie_title", genre_field: str = "class", **kwargs
) -> tuple[Path, Path]:
    """``<name>.inter`` and ``<name>.item``, as RecBole's ml-100k: titles and genres are ``token_seq``
    columns."""
    folder.mkdir(parents=True, exist_ok=True)
    inter, item = folder / f"{name}.inter", folder / f"{name}.item"
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t4\t{t}" for u, i, t in interactions(**kwargs)]
    inter.write_text("\n".join(lines) + "\n")
    lines = [f"item_id:token\t{title_field}:token_seq\trelease_year:token\t{genre_field}:token_seq"]
    lines += [
        f"{it['item_id']}\t{' '.join(it['title'])}\t{it['year']}\t{' '.join(it['genres'])}"
        for it in catalogue(kwargs.get("n_items", N_ITEMS))
    ]
    item.write_text("\n".join(lines) + "\n")
    return inter, item


def write_csv(folder: Path, **kwargs) -> tuple[Path, Path]:
    """``interactions.csv`` (user,item,time; ISO dates) and ``items.csv`` (item_id,title,genres,year)."""
    folder.mkdir(parents=True, exist_ok=True)
    inter, items = folder / "interactions.csv", folder / "items.csv"
    with open(inter, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user", "item", "time"])
        for u, i, t in interactions(**kwargs):
            w.writerow([u, i, np.datetime_as_string(np.datetime64(t, "s"))])
    with open(items, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "title", "genres", "year"])
        for it in catalogue(kwargs.get("n_items", N_ITEMS)):
            w.writerow([it["item_id"], " ".join(it["title"]), ", ".join(it["genres"]), it["year"]])
    return inter, items


def write_jsonl_items(folder: Path, n_items: int = N_ITEMS) -> Path:
    """``items.jsonl``: one JSON object per item, the genres as a JSON list."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "items.jsonl"
    path.write_text(
        "".join(json.dumps({**it, "title": " ".join(it["title"])}) + "\n" for it in catalogue(n_items))
    )
    return path
