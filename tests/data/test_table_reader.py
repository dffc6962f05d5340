"""``--format csv``: interaction tables with a header (user, item, time), columns found by name."""

from __future__ import annotations

import pytest

from esrkit.data.prepare import prepare_source
from esrkit.data.readers import DataError
from tests.data.own_data import write_csv, write_jsonl_items

LOOSE = ["user_min=0", "item_min=0"]


def test_csv_with_iso_dates_sorts_each_user_by_time(files) -> None:
    path = files.lines(
        "inter.csv",
        [
            "User_ID,Movie_ID,Timestamp",
            "a,x,2021-03-04T10:00:00",
            "a,y,2021-03-01",
            "b,y,5",
            "a,z,2021-03-05",
            "b,x,3",
            "b,z,4",
        ],
    )
    data = prepare_source("csv", {"input": str(path)}, overrides=LOOSE)
    assert data.user_ids == ["a", "b"]
    names = {i + 1: n for i, n in enumerate(data.item_ids)}
    assert [names[int(i)] for i in data.sequence(0)] == ["y", "x", "z"]  # 03-01 < 03-04 < 03-05
    assert [names[int(i)] for i in data.sequence(1)] == ["x", "z", "y"]  # 3 < 4 < 5
    assert data.meta["format"] == "csv"


def test_tsv_without_time_keeps_file_order_and_filters_ratings(files) -> None:
    path = files.lines("inter.tsv", ["item\tuser\trating", "x\ta\t5", "y\ta\t0", "z\ta\t3", "w\ta\t4"])
    data = prepare_source("csv", {"input": str(path)}, overrides=LOOSE)
    assert data.n_users == 1 and data.sequence(0).tolist() == [1, 2, 3]  # x, z, w: the 0 rating is dropped
    assert data.meta["counts"]["filtered_rating"] == 1
    assert data.timestamps is None


def test_columns_can_be_named(files) -> None:
    path = files.lines("log.csv", ["who,what,when", "a,x,1", "a,y,2", "a,z,3"])
    with pytest.raises(DataError, match=r"log.csv, line 1.*no user column.*--set user_column=NAME"):
        prepare_source("csv", {"input": str(path)}, overrides=LOOSE)
    data = prepare_source(
        "csv",
        {"input": str(path)},
        overrides=LOOSE + ["user_column=who", "item_column=what", "time_column=when"],
    )
    assert data.n_interactions == 3


def test_bad_time_names_its_line(files) -> None:
    path = files.lines("inter.csv", ["user,item,time", "a,x,1", "a,y,yesterday", "a,z,3"])
    with pytest.raises(DataError, match=r"inter.csv, line 3, field 'time': expected a number or an ISO date"):
        prepare_source("csv", {"input": str(path)}, overrides=LOOSE)


def test_item_csv_and_item_jsonl_attach_text(tmp_path) -> None:
    inter, items_csv = write_csv(tmp_path)
    items_jsonl = write_jsonl_items(tmp_path)
    from_csv = prepare_source("csv", {"input": str(inter), "items": str(items_csv)})
    from_jsonl = prepare_source("csv", {"input": str(inter), "items": str(items_jsonl)})
    assert from_csv.fingerprint() == from_jsonl.fingerprint()
    first_csv, first_jsonl = from_csv.item_attrs[0], from_jsonl.item_attrs[0]
    assert first_csv["title"] == first_jsonl["title"]
    assert isinstance(first_csv["genres"], str) and isinstance(first_jsonl["genres"], list)
    assert first_csv["genres"] == ", ".join(first_jsonl["genres"])
