"""RecBole atomic files: ``<name>.inter`` (required) and ``<name>.item`` (``--meta``, optional).

Both are tab-separated with a typed header (``user_id:token  item_id:token  rating:float  timestamp:float``).
Types: ``token`` (a string), ``token_seq`` (space-separated strings -> list), ``float``, ``float_seq``.
Raw ids are tokens, so the official id assignment applies; ``timestamp`` (when present) orders each user's
interactions, and ``rating`` (when present) is filtered like the official ``rating_score``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esrkit.data.readers.base import (
    DataError,
    Interaction,
    ReaderInputs,
    ReaderOutput,
    ReadOptions,
    ReadReport,
    iter_lines,
    require_file,
)
from esrkit.utils.errors import quote

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def parse_header(text: str, path: Path, lineno: int) -> list[tuple[str, str]]:
    """``[(name, type)]``; every column must be typed (that is what makes a RecBole file)."""
    columns = []
    for col in text.split("\t"):
        name, sep, kind = col.strip().partition(":")
        if not sep or kind not in FIELD_TYPES:
            raise DataError(
                path,
                lineno,
                col.strip() or "<header>",
                f"RecBole header columns look like name:type with type in {', '.join(FIELD_TYPES)}",
            )
        columns.append((name, kind))
    return columns


def pick_field(columns: list[tuple[str, str]], preferred: str, hint: str) -> str | None:
    names = [n for n, _ in columns]
    if preferred in names:
        return preferred
    return next((n for n in names if hint in n.lower()), None)


def convert_value(
    raw: str, kind: str, name: str, path: Path, lineno: int, report: ReadReport
) -> tuple[bool, Any]:
    """(ok, value) for one typed cell; empty cells become None (or [] for sequences)."""
    raw = raw.strip()
    if kind == "token":
        return True, raw if raw else None
    if kind == "token_seq":
        return True, raw.split()
    try:
        values = [float(v) for v in raw.split()]
    except ValueError:
        report.problem(path, lineno, name, f"expected {kind}, got {quote(raw)}")
        return False, None
    if not all(map(math.isfinite, values)):  # 'nan' and 'inf' parse as floats but order and filter nothing
        report.problem(path, lineno, name, f"expected finite numbers ({kind}), got {quote(raw)}")
        return False, None
    if kind == "float":
        if len(values) > 1:
            report.problem(path, lineno, name, f"expected one number (float), got {quote(raw)}")
            return False, None
        return True, values[0] if values else None
    return True, values


def typed_rows(path: Path, report: ReadReport) -> Iterator[tuple[int, list[tuple[str, str]], dict[str, Any]]]:
    """``(line, header, {field: value})`` for every data row."""
    columns: list[tuple[str, str]] | None = None
    for lineno, text in iter_lines(path, report):
        if columns is None:
            columns = parse_header(text, path, lineno)
            continue
        cells = text.split("\t")
        if len(cells) != len(columns):
            report.problem(
                path, lineno, "<columns>", f"expected {len(columns)} tab-separated columns, got {len(cells)}"
            )
            continue
        row: dict[str, Any] = {}
        for (name, kind), cell in zip(columns, cells):
            ok, value = convert_value(cell, kind, name, path, lineno, report)
            if not ok:
                break
            row[name] = value
        else:
            yield lineno, columns, row


def inter_interactions(path: Path, report: ReadReport, options: ReadOptions) -> Iterator[Interaction]:
    fields: tuple[str, str, str | None, str | None] | None = None
    for lineno, columns, row in typed_rows(path, report):
        if fields is None:
            user_field = pick_field(columns, "user_id", "user")
            item_field = pick_field(columns, "item_id", "item")
            if user_field is None or item_field is None:
                raise DataError(
                    path, 1, "user_id" if user_field is None else "item_id", "no user/item field in header"
                )
            fields = (
                user_field,
                item_field,
                pick_field(columns, "timestamp", "timestamp"),
                pick_field(columns, "rating", "rating"),
            )
        user_field, item_field, time_field, rating_field = fields
        user, item = row.get(user_field), row.get(item_field)
        if not user or not item:
            report.problem(
                path, lineno, user_field if not user else item_field, "required field is missing or empty"
            )
            continue
        timestamp: int | float | None = None
        if time_field is not None:
            value = row.get(time_field)
            if value is None:
                report.problem(path, lineno, time_field, "required field is missing or empty")
                continue
            timestamp = int(value) if float(value).is_integer() else value
        if (
            rating_field is not None
            and row.get(rating_field) is not None
            and row[rating_field] <= options.min_rating
        ):
            report.count("filtered_rating")
            continue
        report.count("interactions_read")
        yield str(user), str(item), timestamp


def read_recbole(inputs: ReaderInputs, options: ReadOptions) -> ReaderOutput:
    """RecBole ``.inter`` (``--input``) with an optional ``.item`` (``--meta``)."""
    inter = require_file(inputs.inputs[0] if inputs.inputs else inputs.reviews, "input", "recbole")
    report = ReadReport(skip_malformed=options.skip_malformed)
    files = [("input", inter)]
    loader = None
    if inputs.meta is not None:
        item_path = require_file(inputs.meta, "meta", "recbole")
        files.append(("meta", item_path))

        def loader(wanted: set[str] | None) -> dict[str, dict[str, Any]]:
            return read_item_file(item_path, report, wanted)

    return ReaderOutput(
        format="recbole",
        interactions=inter_interactions(inter, report, options),
        report=report,
        files=files,
        load_item_meta=loader,
        has_timestamps=_peek_has_timestamp(inter),
    )


def _peek_has_timestamp(path: Path) -> bool:
    """Whether the header has a timestamp column (read before streaming, so prepare knows how to sort)."""
    probe = ReadReport()
    for _, text in iter_lines(path, probe):
        return any("timestamp" in col.split(":", 1)[0].strip().lower() for col in text.split("\t"))
    return False


def read_item_file(path: Path, report: ReadReport, wanted: set[str] | None) -> dict[str, dict[str, Any]]:
    """``.item``: ``{item id: {field: typed value}}``; a duplicate id is an error."""
    out: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    key: str | None = None
    for lineno, columns, row in typed_rows(path, report):
        if key is None:
            key = pick_field(columns, "item_id", "item")
            if key is None:
                raise DataError(path, 1, "item_id", "no item id field in the .item header")
        item = row.get(key)
        if not item:
            report.problem(path, lineno, key, "item id is missing or empty")
            continue
        if item in out:
            report.problem(
                path, lineno, key, f"duplicate item id {quote(item)} (first on line {first_line[item]})"
            )
            continue
        first_line[item] = lineno
        if wanted is None or item in wanted:
            out[item] = {k: v for k, v in row.items() if k != key}
        else:
            out[item] = {}
    return {k: v for k, v in out.items() if wanted is None or k in wanted}
