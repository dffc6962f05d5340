"""Raw interactions -> ``SequenceData``, with the official LLM-ESR preprocessing as the default.

The official ``data/data_process.py`` (described in shared/reference/official-code-behaviour.md §1.2), step by
step:

1. read (user, item, timestamp) triples in file order (readers drop ratings <= ``min_rating`` and, for Yelp,
   dates outside the window);
2. ``filter_common``: ONE pass: an interaction is dropped when its user's or its item's raw count (over the
   raw list, duplicates counted) is below ``user_min``/``item_min``. ``kcore=True`` repeats this until nothing
   changes;
3. users in order of their first kept interaction in the file; each user's interactions stably sorted by
   timestamp (same-timestamp ties keep file order); repeated (user, item) pairs kept (``dedupe=True`` keeps
   the first only);
4. ids: items numbered 1.. by first appearance while walking the users' sorted sequences;
5. ``filter_minmum``: users with fewer than ``min_length`` interactions dropped, AFTER step 4, so item ids can
   have gaps ("orphans") and ``n_items`` is the largest id left (what the official trainer uses). ``compact``
   numbers items after step 5 instead; ``given`` keeps the integer ids of an already-indexed source.

Everything dropped or skipped is counted in ``SequenceData.meta["counts"]``, with the inputs' sha256 and the
options.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import esrkit
from esrkit.config import ConfigError, build_dataclass, parse_override
from esrkit.data.readers import READERS, DataError, ReaderInputs, ReaderOutput, ReadOptions, read_item_table
from esrkit.data.sequences import MIN_SEQUENCE_LENGTH, SequenceData
from esrkit.utils.errors import quote
from esrkit.utils.io import sha256_file

logger = logging.getLogger("esrkit.data")

ID_ASSIGNMENTS = ("official", "compact", "given")
SHORT_SEQUENCE_POLICIES = ("drop", "error")


@dataclass
class PrepareOptions:
    """Every preprocessing choice; the defaults are the official ``data_process.py`` ones (3/3, one pass)."""

    user_min: int = 3  # drop an interaction whose user has fewer raw interactions
    item_min: int = 3  # ... or whose item has fewer raw interactions
    # False: the official single pass; True: repeat until every count holds (iterative k-core)
    kcore: bool = False
    # keep only the first (earliest) of repeated (user, item) pairs; official keeps repeats
    dedupe: bool = False
    min_length: int = 3  # drop users with fewer interactions after filtering (leave-one-out needs 3)
    id_assignment: str = "official"  # official (ids before the min-length drop: gaps) | compact | given
    # drop (counted) | error (for already-final files, where a short one is a bug)
    short_sequences: str = "drop"
    # official rating_score: drop ratings <= this (Amazon overall, Yelp stars, RecBole)
    min_rating: float = 0.0
    date_min: str = "2000-01-01 00:00:00"  # official Yelp window, string comparison
    date_max: str = "2019-12-31 00:00:00"
    skip_malformed: bool = False  # skip (and count) malformed lines instead of failing on the first
    items_key: str = ""  # id column of an --items table; "" = item_id, id, asin, business_id (first present)
    # columns of a csv/tsv interaction table; "" = found by name (user/user_id/..., item/item_id/...,
    # time/...)
    user_column: str = ""
    item_column: str = ""
    time_column: str = ""

    def __post_init__(self) -> None:
        if self.id_assignment not in ID_ASSIGNMENTS:
            raise ConfigError(
                f"id_assignment must be one of {', '.join(ID_ASSIGNMENTS)}, not {quote(self.id_assignment)}"
            )
        if self.short_sequences not in SHORT_SEQUENCE_POLICIES:
            raise ConfigError(f"short_sequences must be drop or error, not {quote(self.short_sequences)}")
        if self.min_length < MIN_SEQUENCE_LENGTH:
            raise ConfigError(f"min_length must be >= {MIN_SEQUENCE_LENGTH} (leave-one-out needs it)")
        if self.user_min < 0 or self.item_min < 0:
            raise ConfigError("user_min and item_min must be >= 0")

    def read_options(self) -> ReadOptions:
        return ReadOptions(
            skip_malformed=self.skip_malformed,
            min_rating=self.min_rating,
            date_min=self.date_min,
            date_max=self.date_max,
            items_key=self.items_key,
            user_column=self.user_column,
            item_column=self.item_column,
            time_column=self.time_column,
        )


@dataclass(frozen=True)
class Preset:
    format: str
    options: dict[str, Any]
    description: str


# The thresholds that reproduce the paper's Table 3 (official-code-behaviour.md §1.1): the script says 3/3 for
# Beauty, but only 5/5 reproduces 52,204 users / 57,289 items (issue #3).
PRESETS: dict[str, Preset] = {
    "beauty": Preset(
        "amazon2014", {"user_min": 5, "item_min": 5}, "Amazon 2014 Beauty, single-pass 5/5 (paper)"
    ),
    "yelp": Preset(
        "yelp", {"user_min": 3, "item_min": 3}, "Yelp (RecSys 2013), single-pass 3/3, 2000-2019 window"
    ),
    "fashion": Preset(
        "amazon2018", {"user_min": 3, "item_min": 3}, "Amazon 2018 AMAZON_FASHION, single-pass 3/3"
    ),
}


# ---------------------------------------------------------------------------------------------- options
def build_options(
    fmt: str | None = None,
    preset: str | None = None,
    values: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> PrepareOptions:
    """Official defaults <- format defaults <- preset <- ``values`` (a config table) <- ``key=value``.

    ``values`` may hold ``preset``, so ``DataConfig.prepare = {preset = "beauty", kcore = true}`` works.
    """
    tree: dict[str, Any] = dict(values or {})
    preset = tree.pop("preset", None) or preset
    layered: dict[str, Any] = {}
    if fmt:
        layered.update(READERS.meta(fmt).get("defaults", {}))
    if preset:
        layered.update(get_preset(preset).options)
    layered.update(tree)
    for text in overrides:
        key, value = parse_override(text)
        layered[".".join(key)] = value
    for key in ("date_min", "date_max"):
        if key in layered:
            layered[key] = date_option_text(layered[key])
    return build_dataclass(PrepareOptions, layered, "prepare")


def date_option_text(value: Any) -> Any:
    """``--set date_min=2005-01-01`` parses as a TOML date; the filter compares strings, so turn it back."""
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, datetime.date):
        return value.strftime("%Y-%m-%d")
    return value


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {quote(name)}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------- collection
@dataclass
class RawInteractions:
    """The read interactions as codes (first appearance in the file) plus the raw id of each code."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None
    user_raw: list[str]
    item_raw: list[str]


def collect(source: ReaderOutput) -> RawInteractions:
    """Consume the reader's stream into compact arrays (a few bytes per interaction, not Python tuples)."""
    user_codes: dict[str, int] = {}
    item_codes: dict[str, int] = {}
    users, items = array("q"), array("q")
    # integer timestamps (every built-in reader) go to a typed array: 8 bytes each instead of a Python int;
    # a reader that yields floats switches the column to a list once
    times: array | list = array("q")
    keep_time = source.has_timestamps
    for user, item, timestamp in source.interactions:
        u = user_codes.get(user)
        if u is None:
            u = user_codes[user] = len(user_codes)
        i = item_codes.get(item)
        if i is None:
            i = item_codes[item] = len(item_codes)
        users.append(u)
        items.append(i)
        if keep_time:
            value = 0 if timestamp is None else timestamp
            try:
                times.append(value)
            except TypeError:
                times = list(times)
                times.append(value)
    ts = None
    if keep_time:
        ts = np.frombuffer(times, dtype=np.int64) if isinstance(times, array) and times else np.asarray(times)
    if ts is not None and ts.dtype.kind not in "if":
        raise ValueError(f"{source.format}: timestamps must be numbers")
    return RawInteractions(  # views over the arrays' buffers: no copy
        users=np.frombuffer(users, dtype=np.int64) if users else np.zeros(0, np.int64),
        items=np.frombuffer(items, dtype=np.int64) if items else np.zeros(0, np.int64),
        timestamps=ts,
        user_raw=list(user_codes),
        item_raw=list(item_codes),
    )


# ---------------------------------------------------------------------------------------------- steps
def time_order(raw: RawInteractions, rows: np.ndarray, user_rank: np.ndarray) -> np.ndarray:
    """``rows`` ordered by user rank, then timestamp, ties in file order (two stable sorts)."""
    if raw.timestamps is not None:
        rows = rows[np.argsort(raw.timestamps[rows], kind="stable")]
    return rows[np.argsort(user_rank[raw.users[rows]], kind="stable")]


def first_occurrence_mask(raw: RawInteractions, keep: np.ndarray) -> np.ndarray:
    """Keep only the earliest (time, then file order) of each repeated (user, item) pair."""
    rows = np.flatnonzero(keep)
    ordered = time_order(raw, rows, np.arange(len(raw.user_raw)))
    pair = raw.users[ordered] * max(len(raw.item_raw), 1) + raw.items[ordered]
    _, first = np.unique(pair, return_index=True)
    out = np.zeros_like(keep)
    out[ordered[first]] = True
    return out


def count_filter(raw: RawInteractions, keep: np.ndarray, user_min: int, item_min: int, kcore: bool):
    """The official ``filter_common`` (one pass over raw counts), or iterated to a fixed point for k-core."""
    rounds = 0
    while True:
        rows = np.flatnonzero(keep)
        user_count = np.bincount(raw.users[rows], minlength=len(raw.user_raw))
        item_count = np.bincount(raw.items[rows], minlength=len(raw.item_raw))
        new_keep = keep & (user_count[raw.users] >= user_min) & (item_count[raw.items] >= item_min)
        rounds += 1
        if not kcore or int(new_keep.sum()) == len(rows):
            return new_keep, rounds
        keep = new_keep


def users_by_first_kept(raw: RawInteractions, keep: np.ndarray) -> np.ndarray:
    """Rank of each user code by the file position of its first kept interaction (-1: nothing kept).

    This is the official dict insertion order of ``filter_common``'s ``User``: a user whose first raw
    interaction was filtered out is placed where its first surviving one is.
    """
    rows = np.flatnonzero(keep)
    codes, first = np.unique(raw.users[rows], return_index=True)
    rank = np.full(len(raw.user_raw), -1, dtype=np.int64)
    rank[codes[np.argsort(first, kind="stable")]] = np.arange(len(codes))
    return rank


def first_appearance_ids(item_codes: np.ndarray, n_codes: int) -> np.ndarray:
    """``new_id[code]`` = 1.. in order of first appearance in ``item_codes`` (0 = does not appear)."""
    codes, first = np.unique(item_codes, return_index=True)
    new_id = np.zeros(n_codes, dtype=np.int64)
    new_id[codes[np.argsort(first)]] = np.arange(1, len(codes) + 1)
    return new_id


def given_ids(raw: RawInteractions) -> np.ndarray:
    """``id[code]`` = the source's own integer id (1-based); anything else is an error."""
    out = np.zeros(len(raw.item_raw), dtype=np.int64)
    for code, name in enumerate(raw.item_raw):
        try:
            out[code] = int(name)
        except ValueError:
            raise ConfigError(
                f"id_assignment='given' needs integer item ids, but the source has {quote(name)}; "
                "use id_assignment=official or compact"
            ) from None
        if out[code] < 1:
            raise ConfigError(f"id_assignment='given' needs item ids >= 1 (0 is padding), got {quote(name)}")
    return out


def report_short_users(
    source: ReaderOutput, short_users: list[str], lengths: list[int], options: PrepareOptions
):
    """``short_sequences="error"``: a too-short sequence in an already-final file names its file and line."""
    if options.short_sequences != "error" or not short_users:
        return
    for user, length in zip(short_users, lengths):
        path, line = (source.user_lines or {}).get(user, (source.files[0][1] if source.files else "?", None))
        source.report.problem(
            path,
            line,
            "sequence",
            f"user {quote(user)} has {length} interaction(s); at least min_length={options.min_length} "
            "are needed",
        )


# ---------------------------------------------------------------------------------------------- prepare
@dataclass
class OrderedSequences:
    """Kept interactions in final order (user rank, then time): the state between the preparation steps."""

    rows: np.ndarray  # indices into RawInteractions, in sequence order
    user_rank: np.ndarray  # per user code: row in the output (-1: dropped)
    seq_users: np.ndarray  # user rank of each row
    seq_items: np.ndarray  # item code of each row


def filter_interactions(raw: RawInteractions, options: PrepareOptions, counts: dict[str, Any]) -> np.ndarray:
    """Steps 2-3: optional dedupe, then the count filter (single pass or k-core); returns the keep mask."""
    keep = np.ones(len(raw.users), dtype=bool)
    if options.dedupe:
        keep = first_occurrence_mask(raw, keep)
        counts["duplicates_removed"] = int(len(keep) - keep.sum())
    before = int(keep.sum())
    keep, rounds = count_filter(raw, keep, options.user_min, options.item_min, options.kcore)
    counts["count_filter_rounds"] = rounds
    counts["interactions_dropped_count_filter"] = before - int(keep.sum())
    return keep


def count_filter_emptied(options: PrepareOptions, counts: dict[str, Any]) -> str:
    """Why nothing is left, naming the options that removed it (not the later min_length)."""
    how = "repeated until every count holds (kcore=true)" if options.kcore else "one pass (kcore=false)"
    dedupe = f", after dedupe removed {counts['duplicates_removed']:,}" if options.dedupe else ""
    return (
        f"no user has >= {options.min_length} interactions left: the count filter (user_min="
        f"{options.user_min}, item_min={options.item_min}, {how}) removed all "
        f"{counts['interactions_read']:,} interactions{dedupe}; lower user_min/item_min"
        f"{' or set kcore=false' if options.kcore else ''} (--set user_min=N)"
    )


def order_sequences(raw: RawInteractions, keep: np.ndarray, counts: dict[str, Any]) -> OrderedSequences:
    """Users by first kept interaction; each user's interactions stably by time."""
    user_rank = users_by_first_kept(raw, keep)
    counts["users_dropped_count_filter"] = int((user_rank < 0).sum())
    rows = time_order(raw, np.flatnonzero(keep), user_rank)
    return OrderedSequences(rows, user_rank, user_rank[raw.users[rows]], raw.items[rows])


def drop_short_users(
    source: ReaderOutput,
    raw: RawInteractions,
    seqs: OrderedSequences,
    options: PrepareOptions,
    counts: dict[str, Any],
) -> OrderedSequences:
    """Step 5 (``filter_minmum``): users below ``min_length`` go; survivors are renumbered 0.. in order."""
    n_ranked = int(seqs.user_rank.max()) + 1 if seqs.rows.size else 0
    lengths = np.bincount(seqs.seq_users, minlength=n_ranked)
    short = np.flatnonzero(lengths < options.min_length)
    rank_to_code = np.full(n_ranked, -1, dtype=np.int64)
    ranked = np.flatnonzero(seqs.user_rank >= 0)
    rank_to_code[seqs.user_rank[ranked]] = ranked
    report_short_users(
        source, [raw.user_raw[rank_to_code[r]] for r in short], lengths[short].tolist(), options
    )
    counts["users_dropped_min_length"] = int(short.size)
    counts["interactions_dropped_min_length"] = int(lengths[short].sum())
    survivors = np.flatnonzero(lengths >= options.min_length)
    if survivors.size == 0:
        where = source.files[0][1] if source.files else "?"
        raise DataError(
            where,
            None,
            None,
            f"no user has >= min_length={options.min_length} interactions after the count filter "
            f"(user_min={options.user_min}, item_min={options.item_min}, "
            f"kcore={str(options.kcore).lower()}); lower those options with --set (counts: {counts})",
        )
    new_rank = np.full(n_ranked, -1, dtype=np.int64)
    new_rank[survivors] = np.arange(len(survivors))
    user_rank = np.where(seqs.user_rank >= 0, new_rank[np.maximum(seqs.user_rank, 0)], -1)
    kept = new_rank[seqs.seq_users] >= 0
    return OrderedSequences(seqs.rows[kept], user_rank, new_rank[seqs.seq_users[kept]], seqs.seq_items[kept])


def item_id_table(
    source: ReaderOutput, code_to_id: np.ndarray, final_items: np.ndarray, given: bool
) -> tuple[int, np.ndarray]:
    """``n_items`` and ``id_to_code`` (-1 where an id has no read item, e.g. unused ids of an indexed source).

    official/compact: the largest id left (the official trainer's ``item_num``); given: the largest of the ids
    read and the catalogue size the source declares.
    """
    n_items = int(final_items.max())
    if given:
        n_items = max(n_items, int(code_to_id.max()), int(source.n_items or 0))
    id_to_code = np.full(n_items + 1, -1, dtype=np.int64)
    assigned = np.flatnonzero((code_to_id > 0) & (code_to_id <= n_items))
    id_to_code[code_to_id[assigned]] = assigned
    return n_items, id_to_code


def prepare(
    source: ReaderOutput,
    options: PrepareOptions | None = None,
    item_table: Mapping[str, dict[str, Any]] | None = None,
    name: str = "dataset",
) -> SequenceData:
    """Build the processed dataset from a reader's output (the module docstring gives the exact steps)."""
    options = options or build_options(source.format)
    raw = collect(source)
    counts: dict[str, Any] = {"interactions_read": len(raw.users)}
    if len(raw.users) == 0:
        where = source.files[0][1] if source.files else "?"
        raise DataError(
            where, None, None, "no interactions left after reading (all lines filtered or skipped)"
        )

    keep = filter_interactions(raw, options, counts)
    if not keep.any():
        where = source.files[0][1] if source.files else "?"
        raise DataError(where, None, None, count_filter_emptied(options, counts))
    seqs = order_sequences(raw, keep, counts)
    if options.id_assignment == "official":  # numbered BEFORE the min-length drop, as data_process.py does
        code_to_id = first_appearance_ids(seqs.seq_items, len(raw.item_raw))
    elif options.id_assignment == "given":
        code_to_id = given_ids(raw)
    seqs = drop_short_users(source, raw, seqs, options, counts)
    if options.id_assignment == "compact":
        code_to_id = first_appearance_ids(seqs.seq_items, len(raw.item_raw))
    final_items = code_to_id[seqs.seq_items]
    n_items, id_to_code = item_id_table(source, code_to_id, final_items, options.id_assignment == "given")

    n_users = int(seqs.seq_users.max()) + 1
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(seqs.seq_users, minlength=n_users), out=offsets[1:])
    row_to_code = np.full(n_users, -1, dtype=np.int64)
    kept_codes = np.flatnonzero(seqs.user_rank >= 0)
    row_to_code[seqs.user_rank[kept_codes]] = kept_codes

    occurring = np.zeros(n_items + 1, dtype=bool)
    occurring[final_items] = True
    counts["orphan_item_ids"] = int(n_items - occurring[1:].sum())
    attrs = item_attributes(source, raw, id_to_code, item_table, counts, occurring)
    timestamps = final_timestamps(raw, seqs.rows, counts)
    counts.update(source.report.counts)
    counts.update(
        users=n_users,
        items=n_items,
        items_occurring=int(occurring[1:].sum()),
        interactions=len(final_items),
        skipped_malformed=source.report.n_skipped,
    )
    if source.report.n_skipped:
        logger.warning("skipped %d malformed line(s): %s", source.report.n_skipped, source.report.skipped)
    return SequenceData(
        offsets=offsets,
        items=final_items.astype(np.int32),
        n_items=n_items,
        user_ids=[raw.user_raw[c] for c in row_to_code],
        item_ids=item_id_names(raw, id_to_code, source),
        item_attrs=attrs,
        timestamps=timestamps,
        name=name,
        meta=provenance(source, options, counts),
    )


def item_id_names(raw: RawInteractions, id_to_code: np.ndarray, source: ReaderOutput) -> list[str]:
    """Raw id of every item id 1..n_items (the source's own names, e.g. ASINs, for indexed sources)."""
    names = source.item_names or {}
    out = []
    for item_id in range(1, len(id_to_code)):
        code = int(id_to_code[item_id])
        key = raw.item_raw[code] if code >= 0 else str(item_id)
        out.append(names.get(key, key))
    return out


def item_attributes(
    source: ReaderOutput,
    raw: RawInteractions,
    id_to_code: np.ndarray,
    item_table: Mapping[str, dict[str, Any]] | None,
    counts: dict[str, Any],
    occurring: np.ndarray,
) -> list[dict[str, Any]] | None:
    """One attribute dict per item id (``{}`` where nothing is known); None when the source has no metadata.

    Reader metadata first, then the ``--items`` table on top (its fields win). Keys are the source's raw item
    ids; for indexed sources an ``--items`` row may also be keyed by the original name (e.g. the ASIN).
    """
    if source.load_item_meta is None and item_table is None:
        return None
    keys = [raw.item_raw[int(c)] if c >= 0 else str(i) for i, c in enumerate(id_to_code) if i > 0]
    names = source.item_names or {}
    meta = source.load_item_meta(set(keys)) if source.load_item_meta is not None else {}
    table = item_table or {}
    out: list[dict[str, Any]] = []
    missing = missing_occurring = 0
    for item_id, key in enumerate(keys, 1):
        attrs = dict(meta.get(key, {}))
        row = table.get(key)
        if row is None and key in names:
            row = table.get(names[key])
        if row:
            attrs.update(row)
        if not attrs:
            missing += 1
            missing_occurring += int(occurring[item_id])
        out.append(attrs)
    counts["items_without_attributes"] = missing
    counts["occurring_items_without_attributes"] = missing_occurring
    return out


def final_timestamps(raw: RawInteractions, rows: np.ndarray, counts: dict[str, Any]) -> np.ndarray | None:
    """int64 timestamps in sequence order; fractional ones (RecBole floats) are floored and flagged."""
    if raw.timestamps is None:
        return None
    ts = raw.timestamps[rows]
    if ts.dtype.kind == "f":
        if not np.all(np.isfinite(ts)):
            raise ValueError("timestamps must be finite numbers")
        if np.any(ts != np.floor(ts)):
            counts["timestamps_floored"] = int((ts != np.floor(ts)).sum())
        ts = np.floor(ts)
    return ts.astype(np.int64)


def provenance(source: ReaderOutput, options: PrepareOptions, counts: dict[str, Any]) -> dict[str, Any]:
    report = source.report.to_dict()
    return {
        "prepared_by": "esrkit",
        "esrkit_version": esrkit.__version__,
        "format": source.format,
        "inputs": [file_record(role, path) for role, path in source.files],
        "options": asdict(options),
        "counts": counts,
        "skipped_malformed": report["skipped_malformed"],
        "skipped_samples": report["skipped_samples"],
        **({"reader_notes": report["notes"]} if "notes" in report else {}),
    }


def file_record(role: str, path: Path) -> dict[str, Any]:
    path = Path(path)
    return {"role": role, "name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


# ---------------------------------------------------------------------------------------------- one call
def prepare_source(
    fmt: str | None,
    inputs: ReaderInputs | Mapping[str, Any],
    options: PrepareOptions | Mapping[str, Any] | None = None,
    preset: str | None = None,
    overrides: Iterable[str] = (),
    name: str = "",
) -> SequenceData:
    """Read, attach ``inputs.items`` and prepare: what ``esrkit data prepare`` and on-the-fly configs call."""
    if fmt is None:
        if not preset:
            raise ConfigError("give a format (or a preset, which implies one)")
        fmt = get_preset(preset).format
    if fmt not in READERS:
        raise ConfigError(f"unknown format {quote(fmt)}; known: {', '.join(READERS.names())}")
    if not isinstance(inputs, ReaderInputs):
        inputs = ReaderInputs.from_mapping(dict(inputs))
    if not isinstance(options, PrepareOptions):
        options = build_options(fmt, preset, options, overrides)
    elif preset or list(overrides):
        options = build_options(fmt, preset, _changed_fields(options), overrides)
    source = READERS.get(fmt)(inputs, options.read_options())
    table = None
    if inputs.items is not None:
        table = read_item_table(inputs.items, source.report, options.items_key)
        source.files.append(("items", Path(inputs.items)))
    return prepare(source, options, table, name=name or fmt)


def _changed_fields(options: PrepareOptions) -> dict[str, Any]:
    base = PrepareOptions()
    return {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if getattr(options, f.name) != getattr(base, f.name)
    }


def prepare_from_config(data: Any) -> SequenceData:
    """From a ``DataConfig`` (``source`` = reader name, ``inputs``, ``prepare`` = options incl.
    ``preset``)."""
    return prepare_source(data.source or None, dict(data.inputs), dict(data.prepare), name=data.name or "")
