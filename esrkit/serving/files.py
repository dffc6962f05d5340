"""Files in and out of serving: every user's top-k as CSV or JSONL (streamed), new item records as JSONL.

CSV: ``user_id,rank,item_id,score``, one line per recommendation (rank 1 = best). JSONL: one object per user,
``{"user_id", "items", "scores"}``. Parquet would need pyarrow, which esrkit does not depend on; both formats
load into pandas or pyarrow directly. The file is written to a temporary sibling and renamed when complete.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from esrkit.serving.model import ServedModel, TopK
from esrkit.utils.io import atomic_path

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


def output_format(path: str | Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        raise ValueError(
            "Parquet needs pyarrow, which esrkit does not depend on; write .csv or .jsonl "
            "(pandas and pyarrow read both)"
        )
    if suffix not in FORMATS:
        raise ValueError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; use .csv or .jsonl, or --format"
        )
    return FORMATS[suffix]


def write_all_users(
    served: ServedModel,
    path: str | Path,
    k: int = 100,
    fmt: str | None = None,
    exclude_history: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, int]:
    """Every stored user's top ``k`` into ``path``; returns {"users", "rows"} written."""
    fmt = output_format(path, fmt)
    users = served.require_users()
    item_ids = np.asarray(served.item_ids, dtype=object)
    counts = {"users": 0, "rows": 0}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        write_block = _csv_block(fh) if fmt == "csv" else _jsonl_block(fh)
        for top in served.top_k_all_users(k, exclude_history, progress=progress):
            counts["rows"] += write_block(top, users.user_ids, item_ids)
            counts["users"] += len(top.rows)
    return counts


def _csv_block(fh: Any) -> Callable[[TopK, list[str], np.ndarray], int]:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(["user_id", "rank", "item_id", "score"])

    def write(top: TopK, user_ids: list[str], item_ids: np.ndarray) -> int:
        names = item_ids[top.items - 1]
        scores = np.round(top.scores.astype(np.float64), 6)
        n = 0
        for r, row in enumerate(top.rows.tolist()):
            keep = top.valid[r]
            got = int(keep.sum())
            user = user_ids[row]
            writer.writerows(zip([user] * got, range(1, got + 1), names[r][keep], scores[r][keep].tolist()))
            n += got
        return n

    return write


def _jsonl_block(fh: Any) -> Callable[[TopK, list[str], np.ndarray], int]:
    def write(top: TopK, user_ids: list[str], item_ids: np.ndarray) -> int:
        names = item_ids[top.items - 1]
        scores = np.round(top.scores.astype(np.float64), 6)
        lines, n = [], 0
        for r, row in enumerate(top.rows.tolist()):
            keep = top.valid[r]
            lines.append(
                json.dumps(
                    {
                        "user_id": user_ids[row],
                        "items": names[r][keep].tolist(),
                        "scores": scores[r][keep].tolist(),
                    },
                    ensure_ascii=False,
                )
            )
            n += int(keep.sum())
        fh.write("\n".join(lines) + "\n")
        return n

    return write


def read_item_records(path: str | Path) -> list[dict[str, Any]]:
    """New items, one JSON object per line (blank lines skipped); a bad line is named by file and number."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                message = f"{path}:{lineno}: expected a JSON object with the item's id and text fields"
                raise ValueError(message)  # noqa: TRY004 - a bad input line, not a caller's type error
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no items")
    return records
