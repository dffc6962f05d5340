"""The real datasets in ../shared: documented counts, S3-Rec id alignment, and the official long-tail groups.

Skipped with a reason when ../shared is absent (see tests/conftest.py::shared_path).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from esrkit.data.groups import OFFICIAL_THRESHOLDS, compute_groups
from esrkit.data.prepare import prepare_source
from esrkit.data.stats import dataset_stats
from tests.conftest import shared_path

pytestmark = pytest.mark.shared

BEAUTY = ("datasets", "amazon-beauty-2014-5core")
PAPER = ("datasets", "llm-esr-paper-interactions")
SCIENTIFIC = ("datasets", "amazon-scientific-2018")


@pytest.fixture(scope="module")
def beauty():
    root = shared_path(*BEAUTY)
    return prepare_source(
        "s3rec",
        {"input": root / "raw" / "s3rec_Beauty.txt.gz", "items": root / "items.jsonl.gz"},
        name="beauty5",
    )


@pytest.fixture(scope="module")
def fashion():
    return prepare_source("inter", {"input": shared_path(*PAPER, "fashion_inter.txt.gz")}, name="fashion")


@pytest.fixture(scope="module")
def yelp():
    return prepare_source("inter", {"input": shared_path(*PAPER, "yelp_inter.txt.gz")}, name="yelp")


def read_sequence_lines(path) -> list[list[int]]:
    """S3-Rec "user item item ..." read with a plain loop, independently of the readers."""
    with gzip.open(path, "rt") as fh:
        return [[int(t) for t in line.split()[1:]] for line in fh if line.strip()]


def read_inter_txt(path) -> dict[int, list[int]]:
    """The official generator's loop: User[u].append(i) per "u i" line."""
    users: dict[int, list[int]] = {}
    with gzip.open(path, "rt") as fh:
        for line in fh:
            u, i = line.split()
            users.setdefault(int(u), []).append(int(i))
    return users


# ---------------------------------------------------------------------------------------------- Beauty 5-core
def test_beauty_5core_counts_and_s3rec_ids(beauty):
    assert (beauty.n_users, beauty.n_items, beauty.n_interactions) == (22_363, 12_101, 198_502)
    raw = read_sequence_lines(shared_path(*BEAUTY, "raw", "s3rec_Beauty.txt.gz"))
    assert [s.tolist() for s in beauty.sequences()] == raw
    assert beauty.user_ids[:3] == ["1", "2", "3"]
    # same ids as the official-run inter.txt that item_emb_minilm.npy is indexed by (row i-1 = item i)
    official = read_inter_txt(shared_path("reference", "official-run-beauty5", "inter.txt.gz"))
    assert [official[u] for u in sorted(official)] == raw
    embedding = np.load(
        shared_path("reference", "official-run-beauty5", "item_emb_minilm.npy"), mmap_mode="r"
    )
    assert embedding.shape[0] == beauty.n_items


def test_beauty_item_table_is_aligned(beauty):
    with gzip.open(shared_path(*BEAUTY, "items.jsonl.gz"), "rt") as fh:
        table = [json.loads(line) for line in fh]
    for record in table[:50] + table[-50:]:
        assert beauty.item_attrs[record["item_id"] - 1]["asin"] == record["asin"]
        assert beauty.item_attrs[record["item_id"] - 1]["title"] == record["title"]
    stats = dataset_stats(beauty)
    assert stats["top20_items_interaction_share"] == pytest.approx(0.581, abs=5e-4)  # SOURCE.md: 58.1%
    assert (stats["item_interactions_min"], stats["item_interactions_median"]) == (5, 9)  # SOURCE.md
    assert stats["avg_length"] == pytest.approx(8.876, abs=5e-4)
    coverage = stats["attribute_coverage"]
    assert coverage["categories"]["items"] == 12_101
    # SOURCE.md counts non-null values (title 100%, brand 7,492); 7 titles and 18 brands are blank strings
    assert coverage["title"]["items"] == 12_094 and coverage["brand"]["items"] == 7_474


# ---------------------------------------------------------------------------------------------- paper
# inter.txt
def test_fashion_and_yelp_paper_counts(fashion, yelp):
    assert (fashion.n_users, fashion.n_items, fashion.n_interactions) == (9_094, 4_722, 34_759)
    assert (yelp.n_users, yelp.n_items, yelp.n_interactions) == (15_720, 11_383, 192_214)
    f, y = dataset_stats(fashion), dataset_stats(yelp)
    # SOURCE.md: min / median / max length and repeats
    assert (f["min_length"], f["median_length"], f["max_length"], f["repeats"]) == (3, 3, 26, 4_460)
    assert (y["min_length"], y["median_length"], y["max_length"], y["repeats"]) == (3, 5, 588, 1)
    # paper Table 3: sparsity and average length
    assert round(100 * y["sparsity"], 2) == 99.89 and round(y["avg_length"], 2) == 12.23
    assert round(100 * f["sparsity"], 2) == 99.92 and round(f["avg_length"], 2) == 3.82
    assert fashion.meta["counts"]["orphan_item_ids"] == 0


def official_group_counts(
    sequences: list[list[int]], n_items: int, ts_user: int, ts_item: int, max_len: int = 200
):
    """An independent loop version of the official ``metric_len_report`` / ``metric_pop_report`` counting.

    seq_len = non-zero items in the left-padded 200-window of the test input (seq[:-1]); pop = the official
    ``get_item_pop``: ``pop[np.array(seq)] += 1`` per user (a repeated item counts once for that user).
    """
    pop = np.zeros(n_items + 1, dtype=np.int64)
    for seq in sequences:
        pop[np.array(seq)] += 1
    seq_len, target_pop = [], []
    for seq in sequences:
        test_input = seq[:-1]
        window = np.zeros(max_len, dtype=np.int64)
        kept = test_input[-max_len:]
        window[max_len - len(kept) :] = kept
        seq_len.append(int((window != 0).sum()))
        target_pop.append(int(pop[seq[-1]]))
    seq_len, target_pop = np.array(seq_len), np.array(target_pop)
    return {
        "tail_user": len(seq_len[seq_len < ts_user]),
        "head_user": len(seq_len[seq_len >= ts_user]),
        "tail_item": len(target_pop[target_pop < ts_item]),
        "head_item": len(target_pop[target_pop >= ts_item]),
    }


@pytest.mark.parametrize(
    "name,expected",
    [
        ("fashion", {"tail_user": 5_135, "head_user": 3_959, "tail_item": 2_591, "head_item": 6_503}),
        ("yelp", {"tail_user": 12_461, "head_user": 3_259, "tail_item": 3_576, "head_item": 12_144}),
    ],
)
def test_official_groups(name, expected, request):
    data = request.getfixturevalue(name)
    ts_user, ts_item = OFFICIAL_THRESHOLDS[name]
    assert (ts_user, ts_item) == {"fashion": (3, 4), "yelp": (12, 13)}[name]
    raw = read_inter_txt(shared_path(*PAPER, f"{name}_inter.txt.gz"))
    reference = official_group_counts(
        [raw[u] for u in raw], max(max(s) for s in raw.values()), ts_user, ts_item
    )
    groups = compute_groups(data, "test", ts_user=ts_user, ts_item=ts_item)
    ours = {
        "tail_user": int(groups.tail_user.sum()),
        "head_user": int((~groups.tail_user).sum()),
        "tail_item": int(groups.tail_item.sum()),
        "head_item": int((~groups.tail_item).sum()),
    }
    assert ours == reference
    assert ours == expected  # literal: a change in readers, preparation or groups shows up here


# ---------------------------------------------------------------------------------------------- Scientific
def test_scientific_unisrec(tmp_path):
    root = shared_path(*SCIENTIFIC, "unisrec")
    data = prepare_source("unisrec", {"input": root})
    # SOURCE.md: 8,442 / 4,385 / 59,384 from the test rows alone (histories cut at 50); the train rows restore
    # the 43 cut items of the 3 longest users, giving UniSRec's published 59,427.
    assert (data.n_users, data.n_items, data.n_interactions) == (8_442, 4_385, 59_427)
    assert data.meta["counts"]["users_rebuilt_from_train_rows"] == 3
    assert data.item_ids[0] == "B00TNNWMXI" and data.user_ids[:2] == ["ABW8NXS7SV55K", "A1SWWHE1L3XR3V"]
    assert dataset_stats(data)["attribute_coverage"]["text"]["items"] == 4_385
    test_only = tmp_path / "Scientific.test.inter.gz"
    test_only.write_bytes((root / "Scientific.test.inter.gz").read_bytes())
    cut = prepare_source("unisrec", {"input": test_only})
    assert (cut.n_users, cut.n_interactions) == (8_442, 59_384)
    assert dataset_stats(cut)["top20_items_interaction_share"] == pytest.approx(0.520, abs=5e-4)


def test_scientific_collisiongenrec():
    root = shared_path(*SCIENTIFIC, "collisiongenrec")
    data = prepare_source("lcrec", {"input": root})
    assert (data.n_users, data.n_items, data.n_interactions) == (8_317, 4_344, 58_492)
    stats = dataset_stats(data)
    assert stats["max_length"] == 78 and stats["top20_items_interaction_share"] == pytest.approx(
        0.518, abs=5e-4
    )
    coverage = {k: v["items"] for k, v in stats["attribute_coverage"].items()}
    assert coverage == {
        "title": 4_344,
        "brand": 4_332,
        "description": 4_221,
        "categories": 4_213,
    }  # SOURCE.md
