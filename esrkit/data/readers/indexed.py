"""Already-indexed sequence files, whose integer item ids are kept exactly as given.

* ``inter``: the official LLM-ESR ``handled/inter.txt``: "user item" per line, users contiguous,
  chronological.
* ``s3rec`` (alias ``sasrec``): "user item item ..." per line (SASRec / S3-Rec / P5 ``Beauty.txt``).
* ``unisrec``: UniSRec's ``<name>.{train,valid,test}.inter`` + ``item2index`` + ``user2index`` + ``text``.
* ``lcrec``: LC-Rec / LETTER / CollisionGenRec ``<name>.inter.json`` + ``<name>.item.json``.

Keeping the ids matters: precomputed artefacts (item embeddings, PCA tables, similar-user tables) are indexed
by them. 0-based sources (UniSRec, LC-Rec) are shifted by one, since id 0 is padding.
"""

from __future__ import annotations

import json
import re
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
    open_binary,
    require_file,
)
from esrkit.utils.errors import quote


def parse_item_id(
    token: str, path: Path, lineno: int, report: ReadReport, field_name: str = "item"
) -> int | None:
    """A 1-based integer item id (0 is padding), or None after reporting."""
    try:
        value = int(token)
    except ValueError:
        report.problem(path, lineno, field_name, f"expected an integer item id, got {quote(token)}")
        return None
    if value < 1:
        report.problem(path, lineno, field_name, f"item ids must be >= 1 (0 is padding), got {value}")
        return None
    return value


def parse_user_token(token: str, path: Path, lineno: int, report: ReadReport) -> str | None:
    """User ids of indexed files must be integers too (they are row numbers in the official code)."""
    try:
        int(token)
    except ValueError:
        report.problem(path, lineno, "user", f"expected an integer user id, got {quote(token)}")
        return None
    return token


# ---------------------------------------------------------------------------------------------- inter.txt
def inter_txt_interactions(path: Path, report: ReadReport, user_lines: dict[str, tuple[str, int]]):
    last_user: str | None = None
    for lineno, text in iter_lines(path, report):
        parts = text.split()
        if len(parts) != 2:
            report.problem(path, lineno, "<columns>", f"expected 'user item', got {len(parts)} columns")
            continue
        user = parse_user_token(parts[0], path, lineno, report)
        item = parse_item_id(parts[1], path, lineno, report)
        if user is None or item is None:
            continue
        if user != last_user:
            if user in user_lines:
                report.count("non_contiguous_user_lines")
            user_lines.setdefault(user, (str(path), lineno))
            last_user = user
        report.count("interactions_read")
        yield user, str(item), None


def read_inter(inputs: ReaderInputs, options: ReadOptions) -> ReaderOutput:
    """Official LLM-ESR ``inter.txt``."""
    path = require_file(_single_input(inputs, "inter"), "input", "inter")
    report = ReadReport(skip_malformed=options.skip_malformed)
    user_lines: dict[str, tuple[str, int]] = {}
    return ReaderOutput(
        format="inter",
        interactions=inter_txt_interactions(path, report, user_lines),
        report=report,
        files=[("input", path)],
        has_timestamps=False,
        user_lines=user_lines,
    )


# ---------------------------------------------------------------------------------------------- S3-Rec
# sequences
def sequence_line_interactions(path: Path, report: ReadReport, user_lines: dict[str, tuple[str, int]]):
    for lineno, text in iter_lines(path, report):
        parts = text.split()
        user = parse_user_token(parts[0], path, lineno, report)
        if user is None:
            continue
        if len(parts) < 2:
            report.problem(path, lineno, "items", f"user {user} has an empty sequence")
            continue
        if user in user_lines:
            report.problem(
                path, lineno, "user", f"duplicate user {user} (first on line {user_lines[user][1]})"
            )
            continue
        items = [parse_item_id(tok, path, lineno, report) for tok in parts[1:]]
        if any(i is None for i in items):
            continue
        user_lines[user] = (str(path), lineno)
        report.count("interactions_read", len(items))
        for item in items:
            yield user, str(item), None


def read_s3rec(inputs: ReaderInputs, options: ReadOptions) -> ReaderOutput:
    """SASRec / S3-Rec sequence file: "user item item ..." per line."""
    path = require_file(_single_input(inputs, "s3rec"), "input", "s3rec")
    report = ReadReport(skip_malformed=options.skip_malformed)
    user_lines: dict[str, tuple[str, int]] = {}
    return ReaderOutput(
        format="s3rec",
        interactions=sequence_line_interactions(path, report, user_lines),
        report=report,
        files=[("input", path)],
        has_timestamps=False,
        user_lines=user_lines,
    )


def _single_input(inputs: ReaderInputs, fmt: str) -> Path | None:
    if len(inputs.inputs) > 1:
        raise ValueError(f"format {quote(fmt)} reads one --input file, got {len(inputs.inputs)}")
    return inputs.inputs[0] if inputs.inputs else inputs.reviews


# ---------------------------------------------------------------------------------------------- UniSRec
UNISREC_PARTS = ("train.inter", "valid.inter", "test.inter", "item2index", "user2index", "text")


def find_companion_files(
    inputs: list[Path], parts: tuple[str, ...], anchor: str, fmt: str
) -> dict[str, Path]:
    """``{part: path}`` for ``<stem>.<part>[.gz]``, from a directory or any one file of the set."""
    if not inputs:
        raise ValueError(f"format {quote(fmt)} needs --input (its directory or its {anchor} file)")
    found: dict[str, Path] = {}
    for given in inputs:
        given = Path(given)
        if given.is_dir():
            anchors = sorted(given.glob(f"*.{anchor}")) + sorted(given.glob(f"*.{anchor}.gz"))
            if len(anchors) != 1:
                raise FileNotFoundError(
                    f"{given}: expected exactly one *.{anchor}[.gz] file, found {len(anchors)}"
                )
            given = anchors[0]
        if not given.is_file():
            raise FileNotFoundError(f"input file not found: {given}")
        name = given.name.removesuffix(".gz")
        part = next((p for p in parts if name.endswith("." + p)), None)
        if part is None:
            raise ValueError(
                f"{given}: not a {fmt} file (expected a name ending in one of {', '.join(parts)})"
            )
        stem = name[: -len(part) - 1]
        found[part] = given
        for other in parts:
            for candidate in (given.parent / f"{stem}.{other}", given.parent / f"{stem}.{other}.gz"):
                if other not in found and candidate.is_file():
                    found[other] = candidate
    return found


def read_typed_header(header: str, path: Path, needed: tuple[str, ...]) -> dict[str, int]:
    """Column index by field name from a RecBole-style ``name:type`` header."""
    names = [col.split(":", 1)[0].strip() for col in header.split("\t")]
    missing = [n for n in needed if n not in names]
    if missing:
        raise DataError(path, 1, missing[0], f"header {quote(header)} lacks field {quote(missing[0])}")
    return {n: names.index(n) for n in names}


def read_tab_map(path: Path, report: ReadReport, value_is_int: bool) -> dict[str, Any]:
    """``key<TAB>value`` lines (UniSRec ``item2index`` / ``user2index``); duplicate keys are errors."""
    out: dict[str, Any] = {}
    for lineno, text in iter_lines(path, report):
        parts = text.split("\t")
        if len(parts) != 2:
            report.problem(path, lineno, "<columns>", f"expected 'key<TAB>index', got {len(parts)} columns")
            continue
        key, value = parts[0].strip(), parts[1].strip()
        if value_is_int:
            try:
                value = int(value)
            except ValueError:
                report.problem(path, lineno, "index", f"expected an integer index, got {quote(value)}")
                continue
        if key in out:
            report.problem(path, lineno, "key", f"duplicate key {quote(key)}")
            continue
        out[key] = value
    return out


def read_unisrec_rows(path: Path, report: ReadReport) -> Iterator[tuple[int, str, list[int], int]]:
    """``(line, user index, history, target)`` per row of a ``.inter`` file (0-based item indices)."""
    columns: dict[str, int] | None = None
    for lineno, text in iter_lines(path, report):
        if columns is None:
            columns = read_typed_header(text, path, ("user_id", "item_id_list", "item_id"))
            continue
        parts = text.split("\t")
        if len(parts) != len(columns):
            report.problem(path, lineno, "<columns>", f"expected {len(columns)} tab-separated columns")
            continue
        try:
            history = [int(t) for t in parts[columns["item_id_list"]].split()]
        except ValueError:
            report.problem(path, lineno, "item_id_list", "expected space-separated integer item indices")
            continue
        try:
            target = int(parts[columns["item_id"]])
        except ValueError:
            report.problem(
                path,
                lineno,
                "item_id",
                f"expected an integer item index, got {quote(parts[columns['item_id']])}",
            )
            continue
        if min(history + [target]) < 0:
            report.problem(path, lineno, "item_id", "item indices must be >= 0")
            continue
        yield lineno, parts[columns["user_id"]].strip(), history, target


def rebuild_sequence(test_history: list[int], test_target: int, rows: list[tuple[list[int], int]], cap: int):
    """The full sequence of a user whose test history may be cut to ``cap`` items, from the other rows.

    UniSRec writes one row per prefix, each history being the last ``cap`` items before its target. Starting
    from the longest uncut row, the row whose history equals the last ``cap`` items so far gives the next
    item. Returns None when the rows do not chain up to the test row.
    """
    uncut = [(h, t) for h, t in rows if len(h) < cap]
    if not uncut:
        return None
    history, target = max(uncut, key=lambda r: len(r[0]))
    sequence = history + [target]
    following: dict[tuple[int, ...], list[int]] = {}
    for h, t in rows:
        if len(h) == cap:
            following.setdefault(tuple(h), []).append(t)
    following.setdefault(tuple(test_history), []).append(test_target)
    while (key := tuple(sequence[-cap:])) in following and following[key]:
        sequence.append(following[key].pop(0))
    if sequence[-cap - 1 :] != test_history + [test_target]:
        return None
    return sequence


def unisrec_sequences(
    files: dict[str, Path], report: ReadReport
) -> tuple[list[tuple[str, int, list[int]]], int]:
    """``[(user token, line, full 0-based sequence)]`` in test-file order, and the history cap found."""
    test_rows = list(read_unisrec_rows(files["test.inter"], report))
    other_paths = [files[p] for p in ("train.inter", "valid.inter") if p in files]
    other_rows = [(path, row) for path in other_paths for row in read_unisrec_rows(path, report)]
    cap = max((len(r[2]) for r in test_rows), default=0)
    cap = max([cap] + [len(row[2]) for _, row in other_rows])
    capped = {user for _, user, history, _ in test_rows if len(history) >= cap}
    by_user: dict[str, list[tuple[list[int], int]]] = {u: [] for u in capped}
    for _, (_, user, history, target) in other_rows:
        if user in by_user:
            by_user[user].append((history, target))
    out: list[tuple[str, int, list[int]]] = []
    seen: dict[str, int] = {}
    for lineno, user, history, target in test_rows:
        if user in seen:
            report.problem(
                files["test.inter"], lineno, "user_id", f"duplicate user {user} (first on line {seen[user]})"
            )
            continue
        seen[user] = lineno
        sequence = history + [target]
        if user in capped:
            rebuilt = rebuild_sequence(history, target, by_user[user], cap) if other_rows else None
            if rebuilt is None:
                report.count("users_truncated_to_history_cap")
            elif len(rebuilt) > len(sequence):
                report.count("users_rebuilt_from_train_rows")
                sequence = rebuilt
        out.append((user, lineno, sequence))
    report.notes["history_cap"] = cap
    return out, cap


def read_unisrec(inputs: ReaderInputs, options: ReadOptions) -> ReaderOutput:
    """UniSRec format: full sequence = test history + target, uncut with the train/valid rows if present."""
    files = find_companion_files(
        inputs.inputs or ([inputs.reviews] if inputs.reviews else []), UNISREC_PARTS, "test.inter", "unisrec"
    )
    if "test.inter" not in files:
        raise FileNotFoundError(f"unisrec: no <name>.test.inter[.gz] beside {inputs.inputs[0]}")
    report = ReadReport(skip_malformed=options.skip_malformed)
    item2index = read_tab_map(files["item2index"], report, True) if "item2index" in files else {}
    user2index = read_tab_map(files["user2index"], report, True) if "user2index" in files else {}
    index2user = {str(v): k for k, v in user2index.items()}
    item_names = {str(v + 1): k for k, v in item2index.items()}
    user_lines: dict[str, tuple[str, int]] = {}
    test_path = str(files["test.inter"])

    def interactions() -> Iterator[Interaction]:
        sequences, _ = unisrec_sequences(files, report)
        for user, lineno, sequence in sequences:
            raw_user = index2user.get(user, user)
            user_lines[raw_user] = (test_path, lineno)
            report.count("interactions_read", len(sequence))
            for item in sequence:
                yield raw_user, str(item + 1), None

    loader = None
    if "text" in files:
        text_path = files["text"]

        def loader(wanted: set[str] | None) -> dict[str, dict[str, Any]]:
            texts = read_unisrec_text(text_path, report)
            if not item2index:
                report.notes["text_not_joined"] = "no item2index file: item text cannot be joined to indices"
                return {}
            out = {str(idx + 1): {"text": texts[asin]} for asin, idx in item2index.items() if asin in texts}
            return out if wanted is None else {k: v for k, v in out.items() if k in wanted}

    return ReaderOutput(
        format="unisrec",
        interactions=interactions(),
        report=report,
        files=[(part, path) for part, path in sorted(files.items())],
        load_item_meta=loader,
        has_timestamps=False,
        n_items=(max(item2index.values()) + 1) if item2index else None,
        item_names=item_names or None,
        user_lines=user_lines,
    )


def read_unisrec_text(path: Path, report: ReadReport) -> dict[str, str]:
    """``item_id:token<TAB>text:token_seq`` with a header; duplicate ids are errors."""
    out: dict[str, str] = {}
    columns: dict[str, int] | None = None
    for lineno, text in iter_lines(path, report):
        if columns is None:
            columns = read_typed_header(text, path, ("item_id", "text"))
            continue
        parts = text.split("\t")
        if len(parts) != len(columns):
            report.problem(path, lineno, "<columns>", f"expected {len(columns)} tab-separated columns")
            continue
        key = parts[columns["item_id"]].strip()
        if key in out:
            report.problem(path, lineno, "item_id", f"duplicate item id {quote(key)}")
            continue
        out[key] = parts[columns["text"]].strip()
    return out


# ---------------------------------------------------------------------------------------------- LC-Rec
LCREC_PARTS = ("inter.json", "item.json")


def load_json_document(path: Path, report: ReadReport) -> tuple[dict[str, Any], str]:
    """A whole-file JSON object (LC-Rec files are one document), with duplicate keys reported by line."""
    with open_binary(path) as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            path, raw.count(b"\n", 0, exc.start) + 1, "<encoding>", f"not valid UTF-8 ({exc.reason})"
        ) from None
    if not text.strip():
        raise DataError(path, 1, None, "file is empty")
    duplicates: list[str] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """Keep the first value of a repeated key (and report it: json.loads would keep the last silently)."""
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                duplicates.append(key)
                continue
            out[key] = value
        return out

    try:
        document = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise DataError(
            path, exc.lineno, "<json>", f"malformed JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(document, dict):
        raise DataError(path, 1, "<json>", f"expected a JSON object, got {type(document).__name__}")
    for key in duplicates:
        report.problem(path, line_of_key(text, key, occurrence=2), key, f"duplicate key {quote(key)}")
    return document, text


KEY_PATTERN = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')


def first_lines_of_keys(text: str) -> dict[str, int]:
    """1-based line of each object key's first occurrence, in one pass (for error messages)."""
    out: dict[str, int] = {}
    line, last = 1, 0
    for match in KEY_PATTERN.finditer(text):
        line += text.count("\n", last, match.start())
        last = match.start()
        out.setdefault(match.group(1), line)
    return out


def line_of_key(text: str, key: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th ``"key":`` in a JSON text (for error messages only)."""
    matches = list(re.finditer(re.escape(json.dumps(key)) + r"\s*:", text))
    if len(matches) < occurrence:
        return 1
    return text.count("\n", 0, matches[occurrence - 1].start()) + 1


def read_lcrec(inputs: ReaderInputs, options: ReadOptions) -> ReaderOutput:
    """LC-Rec / LETTER / CollisionGenRec: ``{"user": [item, ...]}`` + ``{"item": {attributes}}``, 0-based."""
    given = inputs.inputs or ([inputs.reviews] if inputs.reviews else [])
    if inputs.meta is not None:
        given = list(given) + [inputs.meta]
    files = find_companion_files(given, LCREC_PARTS, "inter.json", "lcrec")
    if "inter.json" not in files:
        raise FileNotFoundError("lcrec: no <name>.inter.json[.gz] given or found")
    report = ReadReport(skip_malformed=options.skip_malformed)
    inter_path = files["inter.json"]
    user_lines: dict[str, tuple[str, int]] = {}
    item_doc: dict[str, Any] | None = None
    item_text = ""
    if "item.json" in files:
        item_doc, item_text = load_json_document(files["item.json"], report)

    def interactions() -> Iterator[Interaction]:
        document, text = load_json_document(inter_path, report)
        lines = first_lines_of_keys(text)
        for user, items in document.items():
            line = lines.get(user, 1)
            if not isinstance(items, list) or not items:
                report.problem(inter_path, line, user, "expected a non-empty list of item indices")
                continue
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
                report.problem(inter_path, line, user, "item indices must be integers >= 0")
                continue
            user_lines[user] = (str(inter_path), line)
            report.count("interactions_read", len(items))
            for item in items:
                yield user, str(item + 1), None

    def loader(wanted: set[str] | None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, attrs in (item_doc or {}).items():
            try:
                index = int(key)
                if index < 0:
                    raise ValueError
            except ValueError:
                report.problem(
                    files["item.json"], line_of_key(item_text, key), key, "item keys must be integers >= 0"
                )
                continue
            if not isinstance(attrs, dict):
                report.problem(
                    files["item.json"], line_of_key(item_text, key), key, "expected an attribute object"
                )
                continue
            if wanted is None or str(index + 1) in wanted:
                out[str(index + 1)] = dict(attrs)
        return out

    n_items = None
    if item_doc:
        indices = [int(k) for k in item_doc if k.isdigit()]
        n_items = max(indices) + 1 if indices else None
    return ReaderOutput(
        format="lcrec",
        interactions=interactions(),
        report=report,
        files=[(part, path) for part, path in sorted(files.items())],
        load_item_meta=loader if item_doc is not None else None,
        has_timestamps=False,
        n_items=n_items,
        user_lines=user_lines,
    )
