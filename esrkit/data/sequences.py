"""The processed dataset: every user's chronological item sequence, id maps and the item attribute table.

Conventions follow the official LLM-ESR code so numbers stay comparable:

* users are rows ``0..n_users-1`` in file order (the official trainer's dataset index, which its similar-user
  table uses); their raw ids are kept in ``user_ids``;
* items are ``1..n_items``; ``0`` is padding and ``n_items + 1`` the [MASK] token; ``item_ids[i - 1]`` is the
  raw id of item ``i``. ``n_items`` may exceed the number of items that occur (the official preprocessing
  leaves such "orphan" ids, and they are still drawn as negatives);
* leave-one-out: train = ``seq[:-2]``, validation target = ``seq[-2]``, test target = ``seq[-1]``.

On disk (a directory, written atomically): ``dataset.json`` (counts, provenance, fingerprint), ``offsets.npy``
and ``items.npy`` (CSR: user u's items are ``items[offsets[u]:offsets[u+1]]``), optional ``timestamps.npy``,
``user_ids.json``, ``item_ids.json`` and ``items.jsonl`` (one attribute object per item, in id order). No
pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from esrkit.utils.errors import error_text, quote
from esrkit.utils.io import (
    atomic_directory,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_text,
    fingerprint_array,
    load_npy,
    read_json,
    sha256_text,
)

FORMAT_NAME = "esrkit-dataset"
FORMAT_VERSION = 1
MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs at least one training item


class DatasetFormatError(ValueError):
    """A processed dataset directory is missing, corrupt or inconsistent."""


@dataclass
class SequenceData:
    offsets: np.ndarray
    items: np.ndarray
    n_items: int
    user_ids: list[str]
    item_ids: list[str]
    item_attrs: list[dict[str, Any]] | None = None
    timestamps: np.ndarray | None = None
    name: str = "dataset"
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int32)
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.int64)
        self.n_items = int(self.n_items)
        self.validate()

    @classmethod
    def from_sequences(
        cls,
        sequences: Sequence[Sequence[int]],
        n_items: int | None = None,
        user_ids: Sequence[str] | None = None,
        item_ids: Sequence[str] | None = None,
        item_attrs: list[dict[str, Any]] | None = None,
        timestamps: Sequence[Sequence[int]] | None = None,
        name: str = "dataset",
        meta: dict[str, Any] | None = None,
    ) -> SequenceData:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(offsets[-1]))
        if n_items is None:
            n_items = int(items.max()) if items.size else 0
        ts = None
        if timestamps is not None:
            ts = np.fromiter((t for s in timestamps for t in s), dtype=np.int64, count=int(offsets[-1]))
        return cls(
            offsets=offsets,
            items=items,
            n_items=n_items,
            user_ids=list(user_ids) if user_ids is not None else [str(u + 1) for u in range(len(sequences))],
            item_ids=list(item_ids) if item_ids is not None else [str(i) for i in range(1, n_items + 1)],
            item_attrs=item_attrs,
            timestamps=ts,
            name=name,
            meta=dict(meta or {}),
        )

    # ------------------------------------------------------------------ basic views
    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_interactions(self) -> int:
        return int(self.offsets[-1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def sequences(self) -> list[np.ndarray]:
        return [self.sequence(u) for u in range(self.n_users)]

    def item_popularity(self) -> np.ndarray:
        """Distinct users per item over all data (train+valid+test), indexed by item id (row 0 unused).

        This is exactly the official ``get_item_pop``: numpy fancy-index ``+= 1`` per user counts an item
        repeated inside one sequence once.
        """
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), self.lengths())
        keys = np.unique(users * (self.n_items + 2) + self.items.astype(np.int64))
        items = (keys % (self.n_items + 2)).astype(np.int64)
        return np.bincount(items, minlength=self.n_items + 1).astype(np.int64)[: self.n_items + 1]

    def interaction_counts(self) -> np.ndarray:
        """Raw interaction count per item id (repeats counted), row 0 unused."""
        return np.bincount(self.items, minlength=self.n_items + 1).astype(np.int64)

    # ------------------------------------------------------------------ leave-one-out split
    def split_lengths(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(input prefix length, target index) per user for ``split`` in train/valid/test.

        ``train``: the training sequence is ``seq[:-2]`` (its own input/target pairs are made by the
        objective); ``valid``: input ``seq[:-2]``, target ``seq[-2]``; ``test``: input ``seq[:-1]``, target
        ``seq[-1]``. For ``train`` the target index is -1 (none).
        """
        lens = self.lengths()
        if split == "train":
            return lens - 2, np.full_like(lens, -1)
        if split == "valid":
            return lens - 2, lens - 2
        if split == "test":
            return lens - 1, lens - 1
        raise ValueError(f"split must be train, valid or test, not {split!r}")

    def targets(self, split: str) -> np.ndarray:
        """Target item id per user for valid/test."""
        _, tidx = self.split_lengths(split)
        return self.items[self.offsets[:-1] + tidx].astype(np.int64)

    # ------------------------------------------------------------------ integrity
    def validate(self) -> None:
        o, it = self.offsets, self.items
        if o.ndim != 1 or len(o) < 1 or o[0] != 0:
            raise DatasetFormatError("offsets must be a 1-D array starting at 0")
        if np.any(np.diff(o) < 0):
            raise DatasetFormatError("offsets must be non-decreasing")
        if int(o[-1]) != len(it):
            raise DatasetFormatError(f"offsets end at {int(o[-1])} but there are {len(it)} items")
        if it.size and (int(it.min()) < 1 or int(it.max()) > self.n_items):
            raise DatasetFormatError(
                f"item ids must lie in 1..{self.n_items}; found {int(it.min())}..{int(it.max())}"
            )
        if len(self.user_ids) != self.n_users:
            raise DatasetFormatError(f"{len(self.user_ids)} user ids for {self.n_users} users")
        if len(set(self.user_ids)) != len(self.user_ids):
            raise DatasetFormatError("duplicate raw user ids")
        if len(self.item_ids) != self.n_items:
            raise DatasetFormatError(f"{len(self.item_ids)} item ids for {self.n_items} items")
        if self.item_attrs is not None and len(self.item_attrs) != self.n_items:
            raise DatasetFormatError(f"{len(self.item_attrs)} item attribute rows for {self.n_items} items")
        if self.timestamps is not None and len(self.timestamps) != len(it):
            raise DatasetFormatError("timestamps must align with items")
        short = np.flatnonzero(self.lengths() < MIN_SEQUENCE_LENGTH)
        if short.size:
            u = int(short[0])
            raise DatasetFormatError(
                f"{short.size} users have fewer than {MIN_SEQUENCE_LENGTH} interactions (first: row {u}, "
                f"raw id {quote(self.user_ids[u])}, length {int(self.lengths()[u])}); leave-one-out needs 3"
            )

    def fingerprint(self) -> str:
        """Identity of the interactions (not of names or attributes): equal sequences, equal fingerprint."""
        return sha256_text(
            f"{FORMAT_NAME}|{self.n_items}|{fingerprint_array(self.offsets)}|{fingerprint_array(self.items)}"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        path = Path(path)
        with atomic_directory(path, overwrite=overwrite) as tmp:
            atomic_save_npy(tmp / "offsets.npy", self.offsets)
            atomic_save_npy(tmp / "items.npy", self.items)
            if self.timestamps is not None:
                atomic_save_npy(tmp / "timestamps.npy", self.timestamps)
            atomic_write_json(tmp / "user_ids.json", self.user_ids, indent=None)
            atomic_write_json(tmp / "item_ids.json", self.item_ids, indent=None)
            if self.item_attrs is not None:
                lines = "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in self.item_attrs)
                atomic_write_text(tmp / "items.jsonl", lines)
            atomic_write_json(tmp / "dataset.json", self.header())
        return path

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": self.n_interactions,
            "has_timestamps": self.timestamps is not None,
            "has_item_attributes": self.item_attrs is not None,
            "fingerprint": self.fingerprint(),
            "meta": self.meta,
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> SequenceData:
        path = Path(path)
        head_path = path / "dataset.json"
        if not head_path.is_file():
            raise DatasetFormatError(
                f"{path} is not a processed esrkit dataset (no dataset.json); run `esrkit data prepare` first"
            )
        head = read_json(head_path)
        if head.get("format") != FORMAT_NAME:
            raise DatasetFormatError(
                f"{head_path}: format is {quote(head.get('format'))}, expected {FORMAT_NAME!r}"
            )
        if int(head.get("version", 0)) > FORMAT_VERSION:
            raise DatasetFormatError(f"{head_path}: version {head['version']} is newer than this esrkit")
        attrs = None
        if (path / "items.jsonl").is_file():
            attrs = []
            with open(path / "items.jsonl", encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    try:
                        attrs.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DatasetFormatError(f"{path / 'items.jsonl'}:{lineno}: {exc.msg}") from None
        ts = load_npy(path / "timestamps.npy") if (path / "timestamps.npy").is_file() else None
        try:
            data = cls(
                offsets=load_npy(path / "offsets.npy"),
                items=load_npy(path / "items.npy"),
                n_items=int(head["n_items"]),
                user_ids=read_json(path / "user_ids.json"),
                item_ids=read_json(path / "item_ids.json"),
                item_attrs=attrs,
                timestamps=ts,
                name=head.get("name", path.name),
                meta=head.get("meta", {}),
            )
        except (DatasetFormatError, KeyError, TypeError) as exc:  # damaged or hand-edited files
            raise DatasetFormatError(
                f"{path}: not a valid processed dataset ({error_text(exc)}); prepare it "
                "again with `esrkit data prepare`"
            ) from None
        if data.fingerprint() != head.get("fingerprint"):
            raise DatasetFormatError(
                f"{path}: interaction arrays do not match the fingerprint in dataset.json"
            )
        return data

    # ------------------------------------------------------------------ interop
    def to_inter_txt(self) -> str:
        """The official ``inter.txt``: "user item" per line, 1-based user ids in row order, chronological."""
        users = np.repeat(np.arange(1, self.n_users + 1), self.lengths())
        return "".join(f"{u} {i}\n" for u, i in zip(users.tolist(), self.items.tolist()))
