"""Raw-format readers, looked up by name: ``READERS.get("amazon2014")(inputs, options) -> ReaderOutput``.

Each registry entry carries ``description``, ``inputs`` (which of --reviews/--meta/--input it reads) and
``defaults``: preprocessing options that differ from the official ones for that format (already-indexed files
keep their ids and are not re-filtered). See docs/DATA.md for every format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from esrkit.data.readers.amazon import read_amazon2014, read_amazon2018
from esrkit.data.readers.base import (
    DataError,
    Interaction,
    ReaderInputs,
    ReaderOutput,
    ReadOptions,
    ReadReport,
)
from esrkit.data.readers.indexed import read_inter, read_lcrec, read_s3rec, read_unisrec
from esrkit.data.readers.items import read_item_table
from esrkit.data.readers.recbole import read_recbole
from esrkit.data.readers.table import read_table
from esrkit.data.readers.yelp import read_yelp
from esrkit.registry import Registry

ReaderFn = Callable[[ReaderInputs, ReadOptions], ReaderOutput]
READERS: Registry[ReaderFn] = Registry("reader")

# Already-indexed sources: keep the ids, do not re-filter, and treat a too-short sequence as bad input.
INDEXED_DEFAULTS: dict[str, Any] = {
    "user_min": 0,
    "item_min": 0,
    "id_assignment": "given",
    "short_sequences": "error",
}

READERS.register(
    "amazon2014",
    description="Amazon 2014: reviews_<Cat>.json(.gz) or ratings_<Cat>.csv + meta_<Cat>.json(.gz) (literals)",
    inputs="--reviews (required), --meta",
    defaults={},
)(read_amazon2014)
READERS.register(
    "amazon2018",
    description="Amazon 2018: <Cat>.json(.gz) reviews + meta_<Cat>.json(.gz) (JSON lines)",
    inputs="--reviews (required), --meta",
    defaults={},
)(read_amazon2018)
READERS.register(
    "yelp",
    description="Yelp reviews + business file; RecSys-2013 or current Open Dataset schema (auto-detected)",
    inputs="--reviews (required), --meta (business file)",
    defaults={},
)(read_yelp)
READERS.register(
    "inter",
    description="official LLM-ESR inter.txt: 'user item' per line, chronological; ids kept",
    inputs="--input (one file)",
    defaults=INDEXED_DEFAULTS,
)(read_inter)
READERS.register(
    "s3rec",
    description="SASRec/S3-Rec sequences: 'user item item ...' per line; ids kept",
    inputs="--input (one file), --items to attach attributes",
    defaults=INDEXED_DEFAULTS,
)(read_s3rec)
READERS.register(
    "sasrec",
    description="alias of s3rec",
    inputs="--input (one file), --items to attach attributes",
    defaults=INDEXED_DEFAULTS,
)(read_s3rec)
READERS.register(
    "unisrec",
    description="UniSRec: <name>.{train,valid,test}.inter + item2index + user2index + text; ids = index + 1",
    inputs="--input (the directory or any file of the set)",
    defaults=INDEXED_DEFAULTS,
)(read_unisrec)
READERS.register(
    "lcrec",
    description="LC-Rec/LETTER/CollisionGenRec: <name>.inter.json + <name>.item.json; ids = index + 1",
    inputs="--input (the directory or the .inter.json), --meta (the .item.json; found beside it otherwise)",
    defaults=INDEXED_DEFAULTS,
)(read_lcrec)
READERS.register(
    "recbole",
    description="RecBole atomic files: <name>.inter with typed header (+ <name>.item as --meta)",
    inputs="--input (.inter), --meta (.item)",
    defaults={},
)(read_recbole)
READERS.register(
    "csv",
    description="CSV/TSV interactions with a header: user, item[, time][, rating] (+ --items for text)",
    inputs="--input (.csv/.tsv), --items to attach attributes",
    defaults={},
)(read_table)


def read_source(fmt: str, inputs: ReaderInputs, options: ReadOptions | None = None) -> ReaderOutput:
    """Open ``inputs`` with the reader registered as ``fmt``; nothing is read until the stream is consumed."""
    return READERS.get(fmt)(inputs, options or ReadOptions())


__all__ = [
    "READERS",
    "DataError",
    "Interaction",
    "ReadOptions",
    "ReadReport",
    "ReaderInputs",
    "ReaderOutput",
    "read_item_table",
    "read_source",
]
