"""Amazon review dumps: the 2014 release (McAuley et al.) and the 2018 release (Ni et al.).

2014: ``reviews_<Cat>.json(.gz)`` (JSON lines) or ``ratings_<Cat>.csv`` (``user,item,rating,time``, no
header), and ``meta_<Cat>.json(.gz)`` whose lines are Python literals (single quotes), parsed with
``ast.literal_eval``. 2018: ``<Cat>.json(.gz)`` reviews and ``meta_<Cat>.json(.gz)``, both JSON lines
(``feature``/``description`` lists).

Every review is an implicit interaction (official ``rating_score = 0``: only ratings <= ``min_rating`` are
dropped); the timestamp is ``unixReviewTime`` (day resolution, so same-day ties are common and keep file
order).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esrkit.data.readers.base import (
    Interaction,
    ReaderInputs,
    ReaderOutput,
    ReadOptions,
    ReadReport,
    as_float,
    as_int,
    iter_lines,
    parse_record_line,
    require_file,
    select_fields,
    stream_meta_records,
)

META_FIELDS_2014 = ("title", "brand", "price", "categories", "description")
META_FIELDS_2018 = ("title", "brand", "price", "date", "feature", "description", "category", "main_cat")
REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")


def is_ratings_csv(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".csv") or name.endswith(".csv.gz")


def review_interactions(path: Path, report: ReadReport, options: ReadOptions) -> Iterator[Interaction]:
    """JSON-lines reviews (both releases): reviewerID, asin, unixReviewTime and, when present, overall."""
    for lineno, text in iter_lines(path, report):
        record = parse_record_line(text, path, lineno, report, prefer="json")
        if record is None:
            continue
        values = _required_values(record, REVIEW_FIELDS, path, lineno, report)
        if values is None:
            continue
        user, item, raw_time = values
        timestamp = as_int(raw_time, "unixReviewTime", path, lineno, report)
        if timestamp is None:
            continue
        if record.get("overall") is not None:
            rating = as_float(record["overall"], "overall", path, lineno, report)
            if rating is None:
                continue
            if rating <= options.min_rating:
                report.count("filtered_rating")
                continue
        report.count("interactions_read")
        yield str(user), str(item), timestamp


def ratings_csv_interactions(path: Path, report: ReadReport, options: ReadOptions) -> Iterator[Interaction]:
    """``ratings_<Cat>.csv``: ``user,item,rating,time`` per line, no header."""
    for lineno, text in iter_lines(path, report):
        parts = text.split(",")
        if len(parts) != 4:
            report.problem(path, lineno, "<columns>", f"expected 4 comma-separated columns, got {len(parts)}")
            continue
        user, item, raw_rating, raw_time = (p.strip() for p in parts)
        if not user or not item:
            report.problem(path, lineno, "user" if not user else "item", "required column is empty")
            continue
        rating = as_float(raw_rating, "rating", path, lineno, report)
        if rating is None:
            continue
        timestamp = as_int(raw_time, "time", path, lineno, report)
        if timestamp is None:
            continue
        if rating <= options.min_rating:
            report.count("filtered_rating")
            continue
        report.count("interactions_read")
        yield user, item, timestamp


def _required_values(
    record: dict[str, Any], names: tuple[str, ...], path: Path, lineno: int, report: ReadReport
):
    """The named fields in order, or None after reporting the first missing one (one report per bad line)."""
    values = []
    for name in names:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            report.problem(path, lineno, name, "required field is missing or empty")
            return None
        values.append(value)
    return values


def _amazon_output(
    fmt: str, inputs: ReaderInputs, options: ReadOptions, meta_fields: tuple[str, ...], prefer: str
):
    reviews = require_file(inputs.reviews or (inputs.inputs[0] if inputs.inputs else None), "reviews", fmt)
    report = ReadReport(skip_malformed=options.skip_malformed)
    if is_ratings_csv(reviews):
        interactions = ratings_csv_interactions(reviews, report, options)
    else:
        interactions = review_interactions(reviews, report, options)
    loader = None
    files = [("reviews", reviews)]
    if inputs.meta is not None:
        meta = require_file(inputs.meta, "meta", fmt)
        files.append(("meta", meta))

        def loader(wanted: set[str] | None) -> dict[str, dict[str, Any]]:
            return stream_meta_records(
                meta,
                report,
                "asin",
                wanted,
                lambda text, p, n, r: parse_record_line(text, p, n, r, prefer=prefer),
                lambda record: select_fields(record, meta_fields),
            )

    return ReaderOutput(
        format=fmt, interactions=interactions, report=report, files=files, load_item_meta=loader
    )


def read_amazon2014(inputs: ReaderInputs, options: ReadOptions) -> ReaderOutput:
    """Amazon 2014: reviews (JSON lines) or ratings CSV, plus Python-literal metadata."""
    return _amazon_output("amazon2014", inputs, options, META_FIELDS_2014, prefer="literal")


def read_amazon2018(inputs: ReaderInputs, options: ReadOptions) -> ReaderOutput:
    """Amazon 2018: JSON-lines reviews and metadata (``feature``/``description`` lists, ``date``)."""
    return _amazon_output("amazon2018", inputs, options, META_FIELDS_2018, prefer="json")
