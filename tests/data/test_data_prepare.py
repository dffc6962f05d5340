"""The official preprocessing semantics, one crafted example per rule, plus options, provenance and saving."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from esrkit.config import ConfigError, DataConfig
from esrkit.data.prepare import (
    PRESETS,
    PrepareOptions,
    build_options,
    prepare,
    prepare_from_config,
    prepare_source,
)
from esrkit.data.readers import ReaderOutput, ReadReport
from esrkit.data.sequences import SequenceData


def source_of(rows, timestamps: bool = True) -> ReaderOutput:
    """An in-memory reader output: ``rows`` are (user, item[, timestamp]) in file order."""
    triples = [(str(r[0]), str(r[1]), (r[2] if timestamps else None)) for r in rows]
    return ReaderOutput(
        format="test", interactions=iter(triples), report=ReadReport(), files=[], has_timestamps=timestamps
    )


def raw_seqs(data: SequenceData) -> list[list[str]]:
    return [[data.item_ids[i - 1] for i in s] for s in data.sequences()]


def options(**kw) -> PrepareOptions:
    return PrepareOptions(**{"user_min": 0, "item_min": 0, **kw})


# u4's rare item E goes in the single pass; only the iterative k-core then drops u4 and, with it, D.
KCORE_ROWS = [
    ("u1", "A", 1),
    ("u1", "B", 2),
    ("u1", "C", 3),
    ("u1", "D", 4),
    ("u2", "A", 1),
    ("u2", "B", 2),
    ("u2", "C", 3),
    ("u2", "D", 4),
    ("u3", "A", 1),
    ("u3", "B", 2),
    ("u3", "C", 3),
    ("u4", "A", 1),
    ("u4", "D", 2),
    ("u4", "E", 3),
]


def test_single_pass_filter_differs_from_kcore():
    single = prepare(source_of(KCORE_ROWS), options(user_min=3, item_min=3))
    assert raw_seqs(single) == [["A", "B", "C", "D"], ["A", "B", "C", "D"], ["A", "B", "C"]]
    assert single.meta["counts"]["count_filter_rounds"] == 1
    assert single.meta["counts"]["interactions_dropped_count_filter"] == 1  # only (u4, E)
    assert single.meta["counts"]["users_dropped_min_length"] == 1  # u4 is left with A, D

    kcore = prepare(source_of(KCORE_ROWS), options(user_min=3, item_min=3, kcore=True))
    assert raw_seqs(kcore) == [["A", "B", "C"], ["A", "B", "C"], ["A", "B", "C"]]
    assert kcore.meta["counts"]["count_filter_rounds"] == 4  # E; then u4; then D; then stable
    assert kcore.meta["counts"]["users_dropped_count_filter"] == 1


def test_counts_are_over_the_raw_list_with_duplicates():
    """An item seen three times by one user passes item_min=3 (the official counts rows, not users)."""
    rows = [("u1", "A", 1), ("u1", "A", 2), ("u1", "A", 3), ("u1", "B", 4)]
    data = prepare(source_of(rows), options(item_min=3))
    assert raw_seqs(data) == [["A", "A", "A"]]


def test_stable_sort_keeps_file_order_for_equal_timestamps():
    rng = random.Random(0)
    rows = [("u", f"i{k}", rng.choice([5, 7, 9])) for k in range(300)]
    data = prepare(source_of(rows), options())
    expected = [item for _, item, _ in sorted(rows, key=lambda r: r[2])]  # Python's sort is stable
    assert raw_seqs(data) == [expected]
    assert data.timestamps.tolist() == sorted(r[2] for r in rows)


def test_sources_without_timestamps_keep_file_order():
    rows = [("u", "c", 0), ("u", "a", 0), ("u", "b", 0)]
    data = prepare(source_of(rows, timestamps=False), options())
    assert raw_seqs(data) == [["c", "a", "b"]] and data.timestamps is None


def test_repeats_kept_by_default_and_dedupe_keeps_the_first():
    rows = [("u", "A", 1), ("u", "B", 2), ("u", "A", 3), ("u", "C", 4), ("u", "C", 0)]
    assert raw_seqs(prepare(source_of(rows), options())) == [["C", "A", "B", "A", "C"]]
    deduped = prepare(source_of(rows), options(dedupe=True))
    assert raw_seqs(deduped) == [["C", "A", "B"]]
    assert deduped.meta["counts"]["duplicates_removed"] == 2


GAP_ROWS = [
    ("u1", "A", 1),
    ("u1", "B", 2),
    ("u1", "C", 3),
    ("u2", "X", 1),
    ("u2", "Y", 2),  # too short: dropped AFTER ids are assigned (official)
    ("u3", "A", 1),
    ("u3", "Z", 2),
    ("u3", "C", 3),
]


def test_official_ids_have_gaps_compact_ids_do_not():
    official = prepare(source_of(GAP_ROWS), options())
    assert [s.tolist() for s in official.sequences()] == [[1, 2, 3], [1, 6, 3]]
    assert official.n_items == 6 and official.item_ids == ["A", "B", "C", "X", "Y", "Z"]
    assert official.meta["counts"]["orphan_item_ids"] == 2
    assert official.item_popularity()[4:6].tolist() == [0, 0]

    compact = prepare(source_of(GAP_ROWS), options(id_assignment="compact"))
    assert [s.tolist() for s in compact.sequences()] == [[1, 2, 3], [1, 4, 3]]
    assert compact.n_items == 4 and compact.item_ids == ["A", "B", "C", "Z"]
    assert compact.meta["counts"]["orphan_item_ids"] == 0


def test_n_items_is_the_largest_id_left_like_the_official_trainer():
    """Ids assigned only to a dropped LAST user are cut: the trainer's item_num = max id in inter.txt."""
    rows = GAP_ROWS[:5]
    data = prepare(source_of(rows), options())
    assert data.n_items == 3


def test_users_ordered_by_first_kept_interaction():
    rows = [
        ("u1", "R", 1),
        ("u2", "A", 1),
        ("u2", "B", 2),
        ("u2", "C", 3),
        ("u1", "A", 2),
        ("u1", "B", 3),
        ("u1", "C", 4),
        ("u3", "A", 1),
        ("u3", "B", 1),
        ("u3", "C", 1),
    ]
    data = prepare(source_of(rows), options(item_min=2))
    assert data.user_ids == ["u2", "u1", "u3"]
    assert data.meta["counts"]["interactions_dropped_count_filter"] == 1


def test_given_ids_need_integer_sources():
    with pytest.raises(ConfigError, match="integer item ids"):
        prepare(source_of(GAP_ROWS), options(id_assignment="given"))


def test_no_interactions_left_is_a_clear_error():
    with pytest.raises(ValueError, match="no user has >= 3"):
        prepare(source_of(GAP_ROWS), options(user_min=50))


# ---------------------------------------------------------------------------------------------- options
def test_options_layering_and_validation():
    assert build_options() == PrepareOptions()
    assert PrepareOptions().user_min == 3 and PrepareOptions().kcore is False
    assert build_options("s3rec").id_assignment == "given"
    opts = build_options("amazon2014", preset="beauty", values={"kcore": True}, overrides=["min_length=4"])
    assert (opts.user_min, opts.item_min, opts.kcore, opts.min_length) == (5, 5, True, 4)
    assert build_options("yelp", values={"preset": "yelp"}).user_min == 3
    assert PRESETS["fashion"].format == "amazon2018"
    with pytest.raises(ConfigError, match="unknown key"):
        build_options(values={"usermin": 3})
    with pytest.raises(ConfigError, match="min_length"):
        PrepareOptions(min_length=2)
    with pytest.raises(ConfigError, match="id_assignment"):
        build_options(overrides=["id_assignment=sorted"])
    with pytest.raises(ConfigError, match="unknown preset"):
        build_options(preset="movielens")


def test_provenance_save_and_reload(files, tmp_path):
    path = files.lines("inter.txt", ["1 1", "1 2", "1 3", "2 2", "2 3", "2 1", "3 1"])
    data = prepare_source("inter", {"input": path}, name="toy", overrides=["short_sequences=drop"])
    meta = data.meta
    assert meta["format"] == "inter" and meta["esrkit_version"]
    assert meta["inputs"] == [
        {
            "role": "input",
            "name": "inter.txt",
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    ]
    assert meta["options"]["short_sequences"] == "drop"
    assert meta["counts"]["users_dropped_min_length"] == 1
    out = data.save(tmp_path / "toy")
    again = SequenceData.load(out)
    assert again.fingerprint() == data.fingerprint() and again.meta == data.meta
    with pytest.raises(FileExistsError):
        data.save(tmp_path / "toy")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".toy")) == []


def test_prepare_from_data_config(files):
    path = files.lines("ratings_X.csv", [f"u{u},i{(u + k) % 4},5,{k}" for u in range(6) for k in range(4)])
    config = DataConfig(
        source="amazon2014",
        inputs={"reviews": str(path)},
        prepare={"preset": "beauty", "user_min": 1},
        name="x",
    )
    data = prepare_from_config(config)
    assert data.name == "x" and data.n_users == 6
    assert data.meta["options"]["item_min"] == 5 and data.meta["options"]["user_min"] == 1
    assert np.all(data.lengths() == 4)
