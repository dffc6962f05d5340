"""Interaction tables: CSV or TSV with a header row, one interaction per line (``user,item,time``).

The most common shape of "my own data". Columns are found by name (case-insensitive): the user column is the
first of ``USER_COLUMNS`` present, the item column the first of ``ITEM_COLUMNS``, the time column (optional)
the first of ``TIME_COLUMNS``; ``--set user_column=... item_column=... time_column=...`` names them instead. A
``rating`` column (optional) is filtered like the official ``rating_score``. Times are numbers (integers, or
floats that ``prepare`` floors and counts) or ISO dates (``2021-03-04`` / ``2021-03-04T10:00:00``, read as UTC
seconds). Without a time column the file order is the chronological order. Item text comes from ``--items``.
"""

from __future__ import annotations

import csv
import datetime
from collections.abc import Iterator
from pathlib import Path

from esrkit.data.readers.base import (
    DataError,
    Interaction,
    ReaderInputs,
    ReaderOutput,
    ReadOptions,
    ReadReport,
    Timestamp,
    iter_lines,
    require_file,
)

USER_COLUMNS = ("user", "user_id", "userid", "uid", "reviewerid", "customer_id", "visitor_id")
ITEM_COLUMNS = (
    "item",
    "item_id",
    "itemid",
    "iid",
    "product_id",
    "movie_id",
    "asin",
    "business_id",
    "article_id",
)
TIME_COLUMNS = ("time", "timestamp", "ts", "date", "datetime", "unixreviewtime")
RATING_COLUMNS = ("rating", "score", "stars", "overall")


def delimiter_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".tsv", ".tab")):
        return "\t"
    if name.endswith((".csv", ".txt")):
        return ","
    raise ValueError(f"{path}: interaction tables must be .csv or .tsv (optionally .gz)")


def csv_records(path: Path, report: ReadReport) -> Iterator[tuple[int, list[str] | None, list[str]]]:
    """``(line, header, cells)`` per data row (the header comes first, as ``(line, None, header)``)."""
    lines = iter_lines(path, report, keep_newline=True)
    numbers: list[int] = []

    def texts() -> Iterator[str]:
        for lineno, text in lines:
            numbers.append(lineno)
            yield text

    reader = csv.reader(texts(), delimiter=delimiter_of(path))
    header = next(reader, None)
    if not header:
        raise DataError(path, 1, None, "file is empty")
    header = [h.strip() for h in header]
    yield numbers[-1], None, header
    for row in reader:
        yield numbers[-1], header, row


def find_column(
    header: list[str], chosen: str, candidates: tuple[str, ...], what: str, path: Path, required: bool = True
) -> int | None:
    """Index of the named column, or of the first candidate present (case-insensitive)."""
    lowered = [h.lower() for h in header]
    if chosen:
        if chosen.lower() not in lowered:
            raise DataError(
                path, 1, chosen, f"{what} column {chosen!r} not in the header ({', '.join(header)})"
            )
        return lowered.index(chosen.lower())
    for name in candidates:
        if name in lowered:
            return lowered.index(name)
    if required:
        raise DataError(
            path,
            1,
            f"<{what} column>",
            f"no {what} column: name one of {', '.join(candidates)} in the header, or pass "
            f"--set {what}_column=NAME (header: {', '.join(header)})",
        )
    return None


def parse_time(text: str, name: str, path: Path, lineno: int, report: ReadReport) -> Timestamp | bool:
    """A number (int when integral) or an ISO date as UTC seconds; False after reporting a bad value."""
    text = text.strip()
    try:
        value = float(text)
        return int(value) if value.is_integer() else value
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        report.problem(path, lineno, name, f"expected a number or an ISO date, got {text!r}")
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


def table_interactions(path: Path, report: ReadReport, options: ReadOptions) -> Iterator[Interaction]:
    columns: dict[str, int | None] = {}
    header: list[str] = []
    for lineno, known, cells in csv_records(path, report):
        if known is None:
            header = cells
            columns = {
                "user": find_column(header, options.user_column, USER_COLUMNS, "user", path),
                "item": find_column(header, options.item_column, ITEM_COLUMNS, "item", path),
                "time": find_column(header, options.time_column, TIME_COLUMNS, "time", path, required=False),
                "rating": find_column(header, "", RATING_COLUMNS, "rating", path, required=False),
            }
            continue
        if len(cells) != len(header):
            report.problem(path, lineno, "<columns>", f"expected {len(header)} columns, got {len(cells)}")
            continue
        user, item = cells[columns["user"]].strip(), cells[columns["item"]].strip()
        if not user or not item:
            name = header[columns["user"]] if not user else header[columns["item"]]
            report.problem(path, lineno, name, "required field is missing or empty")
            continue
        timestamp: Timestamp = None
        if columns["time"] is not None:
            parsed = parse_time(cells[columns["time"]], header[columns["time"]], path, lineno, report)
            if parsed is False:
                continue
            timestamp = parsed
        if columns["rating"] is not None and cells[columns["rating"]].strip():
            try:
                rating = float(cells[columns["rating"]])
            except ValueError:
                report.problem(
                    path,
                    lineno,
                    header[columns["rating"]],
                    f"expected a number, got {cells[columns['rating']]!r}",
                )
                continue
            if rating <= options.min_rating:
                report.count("filtered_rating")
                continue
        report.count("interactions_read")
        yield user, item, timestamp


def read_table(inputs: ReaderInputs, options: ReadOptions) -> ReaderOutput:
    """CSV/TSV interactions (``--input``); item attributes through ``--items``."""
    path = require_file(inputs.inputs[0] if inputs.inputs else inputs.reviews, "input", "csv")
    delimiter_of(path)  # an unsupported extension is an error before anything is read
    report = ReadReport(skip_malformed=options.skip_malformed)
    return ReaderOutput(
        format="csv",
        interactions=table_interactions(path, report, options),
        report=report,
        files=[("input", path)],
        has_timestamps=_has_time_column(path, options),
    )


def _has_time_column(path: Path, options: ReadOptions) -> bool:
    """Whether the header names a time column (read before streaming, so prepare knows how to sort)."""
    for _, _, header in csv_records(path, ReadReport()):
        found = find_column(header, options.time_column, TIME_COLUMNS, "time", path, required=False)
        return found is not None
    return False
