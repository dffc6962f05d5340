"""Helpers that write small fixture files in the real raw formats (plain or gzip by extension)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    return write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    return write_lines(path, (json.dumps(r) for r in records))


def write_literals(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Amazon-2014 style metadata: one Python dict literal (single quotes) per line."""
    return write_lines(path, (repr(r) for r in records))


@pytest.fixture
def files(tmp_path: Path):
    """Namespace of the writers bound to a fresh directory."""

    class Files:
        root = tmp_path

        @staticmethod
        def lines(name: str, lines: Iterable[str]) -> Path:
            return write_lines(tmp_path / name, lines)

        @staticmethod
        def jsonl(name: str, records: Iterable[dict[str, Any]]) -> Path:
            return write_jsonl(tmp_path / name, records)

        @staticmethod
        def literals(name: str, records: Iterable[dict[str, Any]]) -> Path:
            return write_literals(tmp_path / name, records)

        @staticmethod
        def raw(name: str, data: bytes) -> Path:
            return write_bytes(tmp_path / name, data)

    return Files
