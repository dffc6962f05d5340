"""What every reader shares: the error type, the skip report, line streaming and the reader contract.

A reader turns raw files into a ``ReaderOutput``: a generator of ``(user_raw, item_raw, timestamp | None)`` in
file order plus a lazy item-metadata loader. Readers never hold more than one line of a file in memory on
their own; ``prepare`` decides what to keep. Every problem found in a file names the file, the line and the
field, so a user can open the file at that line and see what is wrong.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esrkit.utils.errors import quote

logger = logging.getLogger("esrkit.data")

Timestamp = int | float | None
Interaction = tuple[str, str, Timestamp]
MetaLoader = Callable[[set[str] | None], dict[str, dict[str, Any]]]

MAX_SAMPLES = 10  # skipped lines quoted in the report; the counts are always complete


class DataError(ValueError):
    """A raw input file is unusable at a given place: the message names the file, the line and the field."""

    def __init__(
        self, path: str | os.PathLike, line: int | None, field_name: str | None, reason: str
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field_name
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        what = f", field {quote(field_name)}" if field_name else ""
        super().__init__(f"{where}{what}: {reason}")


@dataclass
class ReadReport:
    """Counts of everything a reader filtered or skipped, and whether malformed lines raise or are skipped.

    Filtered lines (a rating or date outside the official window) are expected and always counted; malformed
    lines raise ``DataError`` unless ``skip_malformed``, in which case they are counted and the first few are
    quoted.
    """

    skip_malformed: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def problem(self, path: str | os.PathLike, line: int | None, field_name: str | None, reason: str) -> None:
        """Raise, or (with skip_malformed) count the bad line and carry on."""
        error = DataError(path, line, field_name, reason)
        if not self.skip_malformed:
            raise error
        key = f"{Path(path).name}: {field_name or 'line'}"
        self.skipped[key] = self.skipped.get(key, 0) + 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(str(error))

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "skipped_malformed": dict(self.skipped),
            "skipped_malformed_total": self.n_skipped,
            "skipped_samples": list(self.samples),
            **({"notes": dict(self.notes)} if self.notes else {}),
        }


@dataclass
class ReadOptions:
    """The reader-level part of ``PrepareOptions`` (filters that need fields a reader drops)."""

    skip_malformed: bool = False
    min_rating: float = 0.0  # official ``rating_score``: drop interactions whose rating is <= this
    date_min: str = "2000-01-01 00:00:00"  # official Yelp window, compared as strings
    date_max: str = "2019-12-31 00:00:00"
    # id column of a generic item table; "" = item_id, id, asin, business_id (first present)
    items_key: str = ""
    # columns of a CSV/TSV interaction table ("" = found by name, see esrkit/data/readers/table.py)
    user_column: str = ""
    item_column: str = ""
    time_column: str = ""


@dataclass
class ReaderInputs:
    """Named input files: ``reviews``/``meta`` for raw dumps, ``inputs`` for everything else.

    ``items`` attaches an item attribute table to any source.
    """

    reviews: Path | None = None
    meta: Path | None = None
    inputs: list[Path] = field(default_factory=list)
    items: Path | None = None

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> ReaderInputs:
        """From a config table such as ``{reviews = "...", meta = "..."}`` (``input``: a string or a list)."""
        known = {"reviews", "meta", "input", "inputs", "items"}
        unknown = set(mapping) - known
        if unknown:
            raise ValueError(f"unknown reader input(s) {sorted(unknown)}; allowed: {sorted(known)}")
        raw_inputs = mapping.get("input", mapping.get("inputs", []))
        if isinstance(raw_inputs, (str, os.PathLike)):
            raw_inputs = [raw_inputs]
        return cls(
            reviews=_opt_path(mapping.get("reviews")),
            meta=_opt_path(mapping.get("meta")),
            inputs=[Path(p) for p in raw_inputs],
            items=_opt_path(mapping.get("items")),
        )

    def files(self) -> list[tuple[str, Path]]:
        out: list[tuple[str, Path]] = []
        if self.reviews:
            out.append(("reviews", self.reviews))
        if self.meta:
            out.append(("meta", self.meta))
        out.extend(("input", p) for p in self.inputs)
        if self.items:
            out.append(("items", self.items))
        return out


def _opt_path(value: Any) -> Path | None:
    return Path(value) if value else None


@dataclass
class ReaderOutput:
    """A stream of interactions plus everything ``prepare`` needs to know about where they came from.

    An already indexed source (S3-Rec, inter.txt, UniSRec, LC-Rec) gives 1-based integer ids as ``item_raw``,
    the catalogue size they imply as ``n_items`` and, where it has them, the original raw ids (ASINs) of those
    ids as ``item_names``.
    """

    format: str
    interactions: Iterable[Interaction]
    report: ReadReport
    files: list[tuple[str, Path]]
    load_item_meta: MetaLoader | None = None
    has_timestamps: bool = True
    n_items: int | None = None
    item_names: dict[str, str] | None = None
    # where each user starts, for errors about whole users
    user_lines: dict[str, tuple[str, int]] | None = None


# ---------------------------------------------------------------------------------------------- file access
def open_binary(path: Path):
    """gzip by extension, plain otherwise."""
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def require_file(path: Path | None, role: str, fmt: str) -> Path:
    if path is None:
        raise ValueError(f"format {quote(fmt)} needs a {role} file (--{role})")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{role} file not found: {path}")
    return path


def iter_lines(path: Path, report: ReadReport, keep_newline: bool = False) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for every non-blank line, decoded as UTF-8 one line at a time.

    Decoding per line (not per buffer) is what lets an encoding error name its exact line. A file with no
    non-blank line is an error even with skip_malformed: there is nothing to skip to.
    """
    seen_any = False
    with open_binary(path) as fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    report.problem(
                        path, lineno, "<encoding>", f"not valid UTF-8 (byte {exc.start}: {exc.reason})"
                    )
                    continue
                if lineno == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                if not text.strip():
                    continue
                seen_any = True
                yield lineno, (text if keep_newline else text.rstrip("\r\n"))
        except (OSError, EOFError) as exc:  # truncated or corrupt gzip
            raise DataError(path, None, None, f"cannot read file: {exc}") from None
    if not seen_any:
        raise DataError(path, 1, None, "file is empty (no non-blank line)")


def parse_json_line(text: str, path: Path, lineno: int, report: ReadReport) -> dict[str, Any] | None:
    """A JSON object, or None after reporting (skip_malformed)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        report.problem(path, lineno, "<json>", f"malformed JSON ({exc.msg} at column {exc.colno})")
        return None
    if not isinstance(record, dict):
        report.problem(path, lineno, "<json>", f"expected a JSON object, got {type(record).__name__}")
        return None
    return record


def parse_literal_line(text: str, path: Path, lineno: int, report: ReadReport) -> dict[str, Any] | None:
    """A Python-literal dict (the 2014 Amazon metadata), parsed with ``ast.literal_eval``: never ``eval``.

    Falls back to JSON for lines that are JSON (``true``/``null`` are not Python literals).
    """
    try:
        record = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            report.problem(path, lineno, "<literal>", f"malformed Python literal ({type(exc).__name__})")
            return None
    if not isinstance(record, dict):
        report.problem(path, lineno, "<literal>", f"expected a dict, got {type(record).__name__}")
        return None
    return record


def parse_record_line(text: str, path: Path, lineno: int, report: ReadReport, prefer: str = "json"):
    """JSON first (literal first with ``prefer="literal"``), the other as fallback; both parsers are safe."""
    if prefer == "literal":
        return parse_literal_line(text, path, lineno, report)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        try:
            record = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            report.problem(path, lineno, "<json>", f"malformed JSON ({exc.msg} at column {exc.colno})")
            return None
    if not isinstance(record, dict):
        report.problem(path, lineno, "<json>", f"expected a JSON object, got {type(record).__name__}")
        return None
    return record


def required(record: dict[str, Any], name: str, path: Path, lineno: int, report: ReadReport) -> Any:
    """The field's value, or None after reporting a missing/null field."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        report.problem(path, lineno, name, "required field is missing or empty")
        return None
    return value


def as_int(value: Any, name: str, path: Path, lineno: int, report: ReadReport) -> int | None:
    """An integer from an int, an integral float or a numeric string; reports anything else."""
    if isinstance(value, bool):
        report.problem(path, lineno, name, f"expected an integer, got {quote(value)}")
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
    report.problem(path, lineno, name, f"expected an integer, got {quote(value)}")
    return None


def as_float(value: Any, name: str, path: Path, lineno: int, report: ReadReport) -> float | None:
    if isinstance(value, bool):
        report.problem(path, lineno, name, f"expected a number, got {quote(value)}")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        report.problem(path, lineno, name, f"expected a finite number, got {quote(value)}")
        return None
    return number


def select_fields(record: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The metadata fields prompts use, in a fixed order (raw dumps also carry big ``related`` lists)."""
    return {name: record[name] for name in names if name in record}


def stream_meta_records(
    path: Path,
    report: ReadReport,
    key: str,
    wanted: set[str] | None,
    parse: Callable[[str, Path, int, ReadReport], dict[str, Any] | None],
    convert: Callable[[dict[str, Any]], dict[str, Any]],
    duplicate_policy: str = "last",
) -> dict[str, dict[str, Any]]:
    """Metadata for the ``wanted`` raw item ids (all when None), one line at a time.

    ``duplicate_policy="last"``: a later record for the same id replaces the earlier one (the official
    ``datas[asin] = info``), counted as ``duplicate_meta_records``; ``"error"`` makes a duplicate id an error.
    """
    out: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    for lineno, text in iter_lines(path, report):
        record = parse(text, path, lineno, report)
        if record is None:
            continue
        raw_id = required(record, key, path, lineno, report)
        if raw_id is None:
            continue
        raw_id = str(raw_id)
        if wanted is not None and raw_id not in wanted:
            continue
        if raw_id in out:
            if duplicate_policy == "error":
                report.problem(
                    path,
                    lineno,
                    key,
                    f"duplicate item id {quote(raw_id)} (first on line {first_line[raw_id]})",
                )
                continue
            report.count("duplicate_meta_records")
        first_line.setdefault(raw_id, lineno)
        out[raw_id] = convert(record)
    return out
