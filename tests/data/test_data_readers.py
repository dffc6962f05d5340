"""Every reader on small fixture files written in the real formats: exact sequences, ids, order and
metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esrkit.data.prepare import prepare_source
from esrkit.data.readers import READERS, ReaderInputs, ReadOptions, read_source


def seqs(data) -> list[list[int]]:
    return [s.tolist() for s in data.sequences()]


def user_timestamps(data) -> list[list[int]]:
    return [data.timestamps[data.offsets[u] : data.offsets[u + 1]].tolist() for u in range(data.n_users)]


# ---------------------------------------------------------------------------------------------- Amazon 2014
AMAZON_REVIEWS = [
    # reviewerID, asin, unixReviewTime, overall
    ("u1", "A", 100, 5.0),
    ("u2", "B", 50, 4.0),
    ("u1", "B", 50, 3.0),  # earlier than u1's first line: sorts first
    ("u1", "C", 100, 5.0),  # same day as (u1, A): keeps file order, A before C
    ("u2", "A", 60, 1.0),
    ("u2", "C", 70, 2.0),
    ("u3", "A", 10, 0.0),  # rating 0 <= min_rating: filtered like the official rating_score
    ("u3", "B", 20, 5.0),
    ("u3", "C", 30, 5.0),  # u3 keeps 2 interactions: dropped by min_length
    ("u1", "A", 200, 5.0),  # a repeat: kept
]


def amazon_review_records():
    return [
        {"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": r, "reviewText": "ok", "helpful": [0, 0]}
        for u, i, t, r in AMAZON_REVIEWS
    ]


AMAZON_META_2014 = [
    {
        "asin": "A",
        "title": "Alpha Lipstick",
        "brand": "Acme",
        "price": 1.5,
        "categories": [["Beauty", "Makeup"]],
        "related": {"also_bought": ["B"]},
        "imUrl": "http://x/a.jpg",
        "salesRank": {"Beauty": 3},
    },
    {
        "asin": "B",
        "title": "Beta's Cream",
        "categories": [["Beauty", "Skin"], ["Beauty", "Face"]],
        "description": 'A "rich" cream',
    },
    {"asin": "Z", "title": "never interacted", "categories": [["Beauty"]]},
]


def test_amazon2014_reviews_gz_and_literal_meta(files):
    reviews = files.jsonl("reviews_Beauty.json.gz", amazon_review_records())
    meta = files.literals("meta_Beauty.json.gz", AMAZON_META_2014)
    assert "'asin'" in __import__("gzip").open(meta).read().decode()  # really single-quoted literals
    data = prepare_source("amazon2014", {"reviews": reviews, "meta": meta}, {"user_min": 1, "item_min": 1})
    assert data.user_ids == ["u1", "u2"]
    assert data.item_ids == ["B", "A", "C"]  # first appearance walking u1's time-sorted sequence
    assert seqs(data) == [[1, 2, 3, 2], [1, 2, 3]]
    assert user_timestamps(data) == [[50, 100, 100, 200], [50, 60, 70]]
    assert data.item_attrs[0] == {
        "title": "Beta's Cream",
        "categories": [["Beauty", "Skin"], ["Beauty", "Face"]],
        "description": 'A "rich" cream',
    }
    assert data.item_attrs[1] == {
        "title": "Alpha Lipstick",
        "brand": "Acme",
        "price": 1.5,
        "categories": [["Beauty", "Makeup"]],
    }
    assert data.item_attrs[2] == {}  # C has no metadata line
    counts = data.meta["counts"]
    assert counts["filtered_rating"] == 1
    assert counts["users_dropped_min_length"] == 1 and counts["interactions_dropped_min_length"] == 2
    assert counts["items_without_attributes"] == 1


def test_amazon2014_ratings_csv_plain(files):
    ratings = files.lines("ratings_Beauty.csv", [f"{u},{i},{r},{t}" for u, i, t, r in AMAZON_REVIEWS])
    data = prepare_source("amazon2014", {"reviews": ratings}, {"user_min": 1, "item_min": 1})
    assert seqs(data) == [[1, 2, 3, 2], [1, 2, 3]]
    assert user_timestamps(data) == [[50, 100, 100, 200], [50, 60, 70]]
    assert data.item_attrs is None


def test_amazon2014_literal_meta_is_never_evaluated(files, tmp_path):
    """A metadata line with code in it is malformed, not executed."""
    reviews = files.jsonl("reviews_X.json", amazon_review_records())
    marker = tmp_path / "pwned"
    meta = files.lines("meta_X.json", [f"__import__('pathlib').Path({str(marker)!r}).touch()"])
    with pytest.raises(ValueError, match="line 1"):
        prepare_source("amazon2014", {"reviews": reviews, "meta": meta}, {"user_min": 1, "item_min": 1})
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- Amazon 2018
def test_amazon2018_reviews_and_json_meta(files):
    reviews = files.jsonl(
        "AMAZON_FASHION.json.gz",
        [
            {
                "overall": r,
                "verified": True,
                "reviewTime": "x",
                "reviewerID": u,
                "asin": i,
                "unixReviewTime": t,
            }
            for u, i, t, r in AMAZON_REVIEWS
        ],
    )
    meta = files.jsonl(
        "meta_AMAZON_FASHION.json.gz",
        [
            {
                "asin": "A",
                "title": "Shirt",
                "brand": "Acme",
                "feature": ["cotton", "blue"],
                "description": ["soft"],
                "date": "5 star",
                "price": "$9.99",
                "imageURL": ["http://x"],
                "also_buy": ["B"],
            },
            {"asin": "C", "title": "Hat", "feature": [], "description": [], "date": "March 1, 2010"},
            {
                "asin": "C",
                "title": "Hat (second record wins, like the official dict)",
                "date": "March 2, 2010",
            },
        ],
    )
    data = prepare_source("amazon2018", {"reviews": reviews, "meta": meta}, {"user_min": 1, "item_min": 1})
    # overall 0.0 is also filtered for 2018 (same official rating_score)
    assert seqs(data) == [[1, 2, 3, 2], [1, 2, 3]]
    assert data.item_ids == ["B", "A", "C"]
    assert data.item_attrs[1] == {
        "title": "Shirt",
        "brand": "Acme",
        "price": "$9.99",
        "date": "5 star",
        "feature": ["cotton", "blue"],
        "description": ["soft"],
    }
    assert data.item_attrs[2]["title"].startswith("Hat (second")
    assert data.meta["counts"]["duplicate_meta_records"] == 1


# ---------------------------------------------------------------------------------------------- Yelp
def yelp_reviews(date_fmt: str):
    rows = [
        ("uA", "b1", "2010-01-05", 4),
        ("uB", "b2", "2011-03-01", 5),
        ("uA", "b2", "2010-01-05", 3),  # same day as uA's b1: file order
        ("uA", "b3", "2009-12-31", 5),
        ("uB", "b1", "2011-02-01", 2),
        ("uB", "b3", "2011-04-01", 1),
        ("uA", "b1", "1999-12-31", 5),  # before 2000-01-01 00:00:00: filtered
        (
            "uB",
            "b2",
            "2019-12-31",
            5,
        ),  # "2019-12-31" <= "2019-12-31 00:00:00" (string compare): kept (old schema)
        ("uB", "b3", "2012-01-01", 0),  # stars 0: filtered
    ]
    out = []
    for k, (u, b, d, s) in enumerate(rows):
        date = d if date_fmt == "old" else f"{d} 10:00:0{k}"
        record = {"user_id": u, "business_id": b, "date": date, "stars": s, "text": "nice"}
        record.update(
            {"type": "review", "votes": {"useful": 0}} if date_fmt == "old" else {"review_id": f"r{k}"}
        )
        out.append(record)
    return out


def test_yelp_recsys2013_schema(files):
    reviews = files.jsonl("yelp_training_set_review.json", yelp_reviews("old"))
    business = files.jsonl(
        "yelp_training_set_business.json",
        [
            {
                "business_id": "b1",
                "full_address": "x",
                "open": True,
                "categories": ["Food", "Pizza"],
                "city": "Phoenix",
                "review_count": 9,
                "name": "Pizza Place",
                "neighborhoods": [],
                "longitude": 1.0,
                "state": "AZ",
                "stars": 4.5,
                "latitude": 2.0,
                "type": "business",
            },
            {
                "business_id": "b2",
                "open": False,
                "categories": [],
                "city": "Tempe",
                "review_count": 3,
                "name": "Bar",
                "state": "AZ",
                "stars": 3.0,
                "type": "business",
            },
        ],
    )
    data = prepare_source("yelp", {"reviews": reviews, "meta": business}, {"user_min": 1, "item_min": 1})
    assert data.user_ids == ["uA", "uB"]
    assert data.item_ids == ["b3", "b1", "b2"]
    assert seqs(data) == [[1, 2, 3], [2, 3, 1, 3]]
    assert user_timestamps(data) == [[20091231, 20100105, 20100105], [20110201, 20110301, 20110401, 20191231]]
    assert data.item_attrs[1] == {
        "name": "Pizza Place",
        "categories": ["Food", "Pizza"],
        "type": "business",
        "open": True,
        "review_count": 9,
        "city": "Phoenix",
        "state": "AZ",
        "stars": 4.5,
    }
    assert data.item_attrs[0] == {}
    counts = data.meta["counts"]
    assert counts["filtered_date"] == 1 and counts["filtered_rating"] == 1
    assert data.meta["reader_notes"] == {"review_schema": "recsys2013", "business_schema": "recsys2013"}


def test_yelp_open_dataset_schema_is_normalised(files):
    reviews = files.jsonl("yelp_academic_dataset_review.json", yelp_reviews("new"))
    business = files.jsonl(
        "yelp_academic_dataset_business.json",
        [
            {
                "business_id": "b1",
                "name": "Pizza Place",
                "city": "Phoenix",
                "state": "AZ",
                "stars": 4.5,
                "review_count": 9,
                "is_open": 1,
                "attributes": {"WiFi": "no"},
                "categories": "Food, Pizza",
                "hours": None,
            },
            {
                "business_id": "b3",
                "name": "Closed Spot",
                "city": "Mesa",
                "state": "AZ",
                "stars": 2.0,
                "review_count": 1,
                "is_open": 0,
                "categories": None,
            },
        ],
    )
    data = prepare_source("yelp", {"reviews": reviews, "meta": business}, {"user_min": 1, "item_min": 1})
    # "2019-12-31 10:00:07" > "2019-12-31 00:00:00": the current schema's last-day review falls outside the
    # window
    assert seqs(data) == [[1, 2, 3], [2, 3, 1]]
    assert user_timestamps(data)[0] == [20091231100003, 20100105100000, 20100105100002]
    assert data.item_attrs[1] == {
        "name": "Pizza Place",
        "categories": ["Food", "Pizza"],
        "type": "business",
        "open": True,
        "review_count": 9,
        "city": "Phoenix",
        "state": "AZ",
        "stars": 4.5,
    }
    assert data.item_attrs[0]["open"] is False and data.item_attrs[0]["categories"] == []
    assert data.meta["counts"]["filtered_date"] == 2
    assert data.meta["reader_notes"]["business_schema"] == "open-dataset"


# ---------------------------------------------------------------------------------------------- indexed files
def test_inter_txt_keeps_ids_and_max_id(files):
    path = files.lines("inter.txt.gz", ["1 3", "1 1", "1 3", "2 7", "2 1", "2 2", "3 1", "3 2", "3 7", "3 1"])
    data = prepare_source("inter", {"input": path})
    assert seqs(data) == [[3, 1, 3], [7, 1, 2], [1, 2, 7, 1]]
    assert data.user_ids == ["1", "2", "3"]
    assert data.n_items == 7  # max id; 4, 5, 6 never occur (orphans) but are valid ids
    assert data.item_ids == [str(i) for i in range(1, 8)]
    assert data.timestamps is None and data.item_attrs is None
    assert data.meta["counts"]["orphan_item_ids"] == 3
    assert data.to_inter_txt().splitlines()[:3] == ["1 3", "1 1", "1 3"]


def test_s3rec_sequences_with_jsonl_and_csv_item_tables(files):
    path = files.lines("Beauty.txt", ["1 1 2 3 4", "2 5 2 6", "3 6 1 1 7"])
    items = files.jsonl(
        "items.jsonl.gz",
        [{"item_id": i, "asin": f"ASIN{i}", "title": f"T{i}", "categories": ["Makeup"]} for i in range(1, 8)],
    )
    data = prepare_source("s3rec", {"input": path, "items": items})
    assert seqs(data) == [[1, 2, 3, 4], [5, 2, 6], [6, 1, 1, 7]]
    assert data.n_items == 7 and data.item_ids[0] == "1"
    assert data.item_attrs[4] == {"asin": "ASIN5", "title": "T5", "categories": ["Makeup"]}
    csv_items = files.lines("items.csv", ["title,item_id,brand", '"Big, red",2,Acme', "Small,5,"])
    data = prepare_source("sasrec", {"input": path, "items": csv_items})
    assert data.item_attrs[1] == {"title": "Big, red", "brand": "Acme"}
    assert data.item_attrs[4] == {"title": "Small", "brand": ""}
    assert data.item_attrs[0] == {}
    assert data.meta["counts"]["items_without_attributes"] == 5


def test_recbole_atomic_files(files):
    inter = files.lines(
        "ml.inter",
        [
            "user_id:token\titem_id:token\trating:float\ttimestamp:float",
            "u1\ti9\t5\t300",
            "u1\ti8\t4\t100",
            "u2\ti8\t3\t50",
            "u1\ti7\t1\t100.0",
            "u2\ti9\t2\t60",
            "u2\ti7\t5\t70.5",
        ],
    )
    item = files.lines(
        "ml.item",
        [
            "item_id:token\ttitle:token_seq\tyear:float\tgenre:token",
            "i7\tThe Seventh Seal\t1957\tDrama",
            "i8\tEight\t\tAction",
            "i9\tNine Lives\t2016\t",
        ],
    )
    data = prepare_source("recbole", {"input": inter, "meta": item}, {"user_min": 1, "item_min": 1})
    assert data.user_ids == ["u1", "u2"]
    assert data.item_ids == ["i8", "i7", "i9"]
    assert seqs(data) == [[1, 2, 3], [1, 3, 2]]
    assert user_timestamps(data) == [[100, 100, 300], [50, 60, 70]]
    assert data.meta["counts"]["timestamps_floored"] == 1
    assert data.item_attrs[1] == {"title": ["The", "Seventh", "Seal"], "year": 1957.0, "genre": "Drama"}
    assert data.item_attrs[0] == {"title": ["Eight"], "year": None, "genre": "Action"}


def write_unisrec(files, rows: dict[str, list[list[int]]], cap: int):
    """UniSRec files for full 0-based sequences: one train row per prefix, histories cut to ``cap``."""
    header = "user_id:token\titem_id_list:token_seq\titem_id:token"
    out = {"train": [header], "valid": [header], "test": [header]}
    for user, (seq,) in rows.items():
        for k in range(len(seq) - 3, 0, -1):  # UniSRec writes the longest prefix first
            out["train"].append(f"{user}\t{' '.join(map(str, seq[max(0, k - cap) : k]))}\t{seq[k]}")
        for split, k in (("valid", len(seq) - 2), ("test", len(seq) - 1)):
            out[split].append(f"{user}\t{' '.join(map(str, seq[max(0, k - cap) : k]))}\t{seq[k]}")
    for split, lines in out.items():
        files.lines(f"uni/Sci.{split}.inter.gz", lines)
    files.lines("uni/Sci.item2index.gz", [f"ASIN{i}\t{i}" for i in range(8)])
    files.lines("uni/Sci.user2index.gz", ["REV_A\t0", "REV_B\t1"])
    files.lines(
        "uni/Sci.text.gz",
        ["item_id:token\ttext:token_seq"] + [f"ASIN{i}\tText of item {i}. " for i in range(7)],
    )


def test_unisrec_rebuilds_histories_cut_by_the_cap(files):
    long_seq = [0, 1, 2, 3, 4, 5, 2, 6]  # 8 items; with cap 4 the test history alone keeps only the last 4
    write_unisrec(files, {"0": [long_seq], "1": [[3, 4, 0]]}, cap=4)
    data = prepare_source("unisrec", {"input": files.root / "uni"})
    assert data.user_ids == ["REV_A", "REV_B"]
    assert seqs(data) == [[i + 1 for i in long_seq], [4, 5, 1]]
    assert data.n_items == 8  # item2index has 8 entries, item 7 (id 8) is never used
    assert data.item_ids[:2] == ["ASIN0", "ASIN1"]
    assert data.item_attrs[2] == {"text": "Text of item 2."}
    assert data.item_attrs[7] == {}
    assert data.meta["counts"]["users_rebuilt_from_train_rows"] == 1
    # given only the test file (no train/valid beside it), the cut history is all there is
    only = files.root / "only"
    only.mkdir()
    (only / "Sci.test.inter.gz").write_bytes((files.root / "uni" / "Sci.test.inter.gz").read_bytes())
    cut = prepare_source("unisrec", {"input": only / "Sci.test.inter.gz"})
    assert seqs(cut)[0] == [4, 5, 6, 3, 7]
    assert cut.meta["counts"]["users_truncated_to_history_cap"] == 1


def test_lcrec_json_documents(files):
    files.raw("Sci.inter.json.gz", json.dumps({"0": [0, 1, 2, 1], "1": [3, 2, 0], "2": [4, 0, 1]}).encode())
    files.raw(
        "Sci.item.json.gz",
        json.dumps(
            {
                str(i): {"title": f"T{i}", "description": "d", "brand": "", "categories": "A,B"}
                for i in range(6)
            },
            indent=2,
        ).encode(),
    )
    data = prepare_source("lcrec", {"input": files.root / "Sci.inter.json.gz"})
    assert data.user_ids == ["0", "1", "2"]
    assert seqs(data) == [[1, 2, 3, 2], [4, 3, 1], [5, 1, 2]]
    assert data.n_items == 6  # the item table has 6 items
    assert data.item_attrs[3] == {"title": "T3", "description": "d", "brand": "", "categories": "A,B"}


def test_readers_stream_lazily(files):
    """Nothing is read until the interactions are consumed; a reader is a generator in file order."""
    path = files.lines("inter.txt", ["1 2", "1 1", "2 1"])
    out = read_source("inter", ReaderInputs(inputs=[path]), ReadOptions())
    assert out.report.counts == {}
    assert list(out.interactions) == [("1", "2", None), ("1", "1", None), ("2", "1", None)]
    assert out.report.counts["interactions_read"] == 3


def test_registry_lists_every_format():
    assert set(READERS.names()) >= {
        "amazon2014",
        "amazon2018",
        "yelp",
        "inter",
        "s3rec",
        "sasrec",
        "unisrec",
        "lcrec",
        "recbole",
    }
    assert READERS.meta("s3rec")["defaults"]["id_assignment"] == "given"
    assert np.all([READERS.meta(n)["description"] for n in READERS.names()])
