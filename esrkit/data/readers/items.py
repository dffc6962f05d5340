"""Generic item attribute tables (JSONL or CSV/TSV): an id column plus attribute columns.

``--items`` attaches such a table to any interaction source; ids are matched as strings against the source's
raw item ids (for indexed sources: the kept integer id, e.g. ``item_id`` 1..12101 of the Beauty
``items.jsonl``). A duplicate id is always an error (which row would be right is unknowable), unless
skip_malformed drops the later row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esrkit.data.readers.base import DataError, ReadReport, iter_lines, parse_json_line
from esrkit.utils.errors import quote

KEY_CANDIDATES = ("item_id", "id", "asin", "business_id", "parent_asin")


def table_kind(path: Path) -> str:
    name = path.name.lower()
    name = name.removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    raise ValueError(f"{path}: item tables must be .jsonl, .json (JSON lines), .csv or .tsv (optionally .gz)")


def choose_key(columns: list[str], key: str, path: Path, lineno: int) -> str:
    if key:
        if key not in columns:
            raise DataError(
                path, lineno, key, f"id column {quote(key)} not found (columns: {', '.join(columns)})"
            )
        return key
    for candidate in KEY_CANDIDATES:
        if candidate in columns:
            return candidate
    raise DataError(
        path,
        lineno,
        "<id column>",
        f"no id column: expected one of {', '.join(KEY_CANDIDATES)} (or set items_key=...)",
    )


def jsonl_rows(path: Path, report: ReadReport, key: str) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    chosen = ""
    for lineno, text in iter_lines(path, report):
        record = parse_json_line(text, path, lineno, report)
        if record is None:
            continue
        if not chosen:
            chosen = choose_key(list(record), key, path, lineno)
        value = record.get(chosen)
        if value is None or str(value).strip() == "":
            report.problem(path, lineno, chosen, "item id is missing or empty")
            continue
        yield lineno, chosen, str(value).strip(), {k: v for k, v in record.items() if k != chosen}


def csv_rows(
    path: Path, report: ReadReport, key: str, delimiter: str
) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    lines = iter_lines(path, report, keep_newline=True)
    line_numbers: list[int] = []

    def texts() -> Iterator[str]:
        for lineno, text in lines:
            line_numbers.append(lineno)
            yield text

    reader = csv.reader(texts(), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise DataError(path, 1, None, "file is empty")
    header = [h.strip() for h in header]
    chosen = choose_key(header, key, path, line_numbers[-1])
    index = header.index(chosen)
    for row in reader:
        lineno = line_numbers[-1]
        if len(row) != len(header):
            report.problem(path, lineno, "<columns>", f"expected {len(header)} columns, got {len(row)}")
            continue
        value = row[index].strip()
        if not value:
            report.problem(path, lineno, chosen, "item id is missing or empty")
            continue
        yield lineno, chosen, value, {h: v for h, v in zip(header, row) if h != chosen}


def read_item_table(path: str | Path, report: ReadReport, key: str = "") -> dict[str, dict[str, Any]]:
    """``{raw item id: attributes}`` from a JSONL or CSV/TSV item table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"items file not found: {path}")
    kind = table_kind(path)
    rows = (
        jsonl_rows(path, report, key)
        if kind == "jsonl"
        else csv_rows(path, report, key, "," if kind == "csv" else "\t")
    )
    out: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    for lineno, key_name, item_id, attrs in rows:
        if item_id in out:
            report.problem(
                path,
                lineno,
                key_name,
                f"duplicate item id {quote(item_id)} (first on line {first_line[item_id]})",
            )
            continue
        first_line[item_id] = lineno
        out[item_id] = attrs
    return out
