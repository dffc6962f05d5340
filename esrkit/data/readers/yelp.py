"""Yelp reviews and businesses, in both schemas the paper's code meets.

* RecSys-2013 (Kaggle "Yelp business rating prediction", what the paper used): reviews have ``date``
  "YYYY-MM-DD"; businesses have ``type``, ``open`` (bool), ``categories`` (a list), ``review_count``,
  ``city``, ``stars``, ``name``.
* Yelp Open Dataset (current): ``date`` "YYYY-MM-DD HH:MM:SS"; businesses have ``is_open`` (0/1) and
  ``categories`` as one comma-separated string or null, and no ``type``.

The schema is detected per record and businesses are normalised to the old field set, so the official Yelp
item prompt (name, categories, type, open, review_count, city, stars) always finds its fields.
Official filter: keep a review when ``date_min <= date <= date_max`` (string comparison) and ``stars >
min_rating``; its timestamp is the date's digits as an integer (20110126 or 20110126101332).
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
    iter_lines,
    parse_json_line,
    require_file,
    stream_meta_records,
)
from esrkit.utils.errors import quote

REVIEW_FIELDS = ("user_id", "business_id", "date", "stars")
SCHEMA_RECSYS2013 = "recsys2013"
SCHEMA_OPEN_DATASET = "open-dataset"


def date_to_timestamp(date: str) -> int | None:
    """The official ``int(date.replace('-','').replace(':','').replace(' ',''))``; None if not all digits."""
    digits = date.replace("-", "").replace(":", "").replace(" ", "")
    return int(digits) if digits.isdigit() else None


def review_schema(date: str) -> str:
    return SCHEMA_RECSYS2013 if len(date.strip()) == 10 else SCHEMA_OPEN_DATASET


def business_schema(record: dict[str, Any]) -> str:
    return (
        SCHEMA_OPEN_DATASET
        if "is_open" in record or isinstance(record.get("categories"), str)
        else SCHEMA_RECSYS2013
    )


def review_interactions(path: Path, report: ReadReport, options: ReadOptions) -> Iterator[Interaction]:
    schemas: set[str] = set()
    for lineno, text in iter_lines(path, report):
        record = parse_json_line(text, path, lineno, report)
        if record is None:
            continue
        values = []
        for name in REVIEW_FIELDS:
            value = record.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                report.problem(path, lineno, name, "required field is missing or empty")
                break
            values.append(value)
        else:
            user, business, date, raw_stars = values
            if not isinstance(date, str) or (timestamp := date_to_timestamp(date)) is None:
                report.problem(path, lineno, "date", f"expected 'YYYY-MM-DD[ HH:MM:SS]', got {quote(date)}")
                continue
            stars = as_float(raw_stars, "stars", path, lineno, report)
            if stars is None:
                continue
            schema = review_schema(date)
            if schema not in schemas:
                schemas.add(schema)
                report.notes["review_schema"] = "+".join(sorted(schemas))
            if date < options.date_min or date > options.date_max:
                report.count("filtered_date")
                continue
            if stars <= options.min_rating:
                report.count("filtered_rating")
                continue
            report.count("interactions_read")
            yield str(user), str(business), timestamp


def normalise_business(record: dict[str, Any]) -> dict[str, Any]:
    """Old-schema fields from either schema: ``open`` from ``is_open``, ``categories`` as a list, ``type``."""
    categories = record.get("categories")
    if isinstance(categories, str):
        categories = [c.strip() for c in categories.split(",") if c.strip()]
    elif categories is None:
        categories = []
    is_open = record["open"] if "open" in record else record.get("is_open")
    values = {
        "name": record.get("name"),
        "categories": list(categories),
        "type": record.get("type", "business"),
        "open": bool(is_open) if is_open is not None else None,
        "review_count": record.get("review_count"),
        "city": record.get("city"),
        "state": record.get("state"),
        "stars": record.get("stars"),
    }
    return {k: v for k, v in values.items() if v is not None or k in ("name", "city")}


def read_yelp(inputs: ReaderInputs, options: ReadOptions) -> ReaderOutput:
    """Yelp reviews (``--reviews``) and, optionally, businesses (``--meta``)."""
    reviews = require_file(inputs.reviews or (inputs.inputs[0] if inputs.inputs else None), "reviews", "yelp")
    report = ReadReport(skip_malformed=options.skip_malformed)
    files = [("reviews", reviews)]
    loader = None
    if inputs.meta is not None:
        business = require_file(inputs.meta, "meta", "yelp")
        files.append(("meta", business))

        def convert(record: dict[str, Any]) -> dict[str, Any]:
            schema = business_schema(record)
            seen = set(filter(None, report.notes.get("business_schema", "").split("+")))
            report.notes["business_schema"] = "+".join(sorted(seen | {schema}))
            return normalise_business(record)

        def loader(wanted: set[str] | None) -> dict[str, dict[str, Any]]:
            return stream_meta_records(business, report, "business_id", wanted, parse_json_line, convert)

    return ReaderOutput(
        format="yelp",
        interactions=review_interactions(reviews, report, options),
        report=report,
        files=files,
        load_item_meta=loader,
    )
