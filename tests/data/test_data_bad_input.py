"""Bad input fails with a DataError naming file, line and field; --skip-malformed skips, counts and
reports."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from esrkit.cli.data import data as data_cli
from esrkit.data.prepare import prepare_source
from esrkit.data.readers import DataError


def review(u: str, i: str, t: int = 1, r: float = 5.0) -> str:
    return json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": r})


GOOD_REVIEWS = [review(f"u{u}", f"i{k}", k) for u in range(3) for k in range(3)]


def assert_names(exc: pytest.ExceptionInfo, path, line: int, field: str) -> None:
    message = str(exc.value)
    assert path.name in message, message
    assert f"line {line}" in message, message
    assert repr(field) in message, message
    assert exc.value.line == line and exc.value.field == field


LOOSE = {"user_min": 0, "item_min": 0}


def test_malformed_json_line(files):
    path = files.lines(
        "reviews_X.json.gz", GOOD_REVIEWS[:2] + ['{"reviewerID": "u9", "asin": '] + GOOD_REVIEWS[2:]
    )
    with pytest.raises(DataError) as exc:
        prepare_source("amazon2014", {"reviews": path}, LOOSE)
    assert_names(exc, path, 3, "<json>")
    assert isinstance(exc.value, ValueError)


def test_malformed_python_literal_in_2014_meta(files):
    reviews = files.lines("reviews_X.json", GOOD_REVIEWS)
    meta = files.lines("meta_X.json", ["{'asin': 'i0', 'title': 'ok'}", "{'asin': 'i1', 'title': 'unclosed}"])
    with pytest.raises(DataError) as exc:
        prepare_source("amazon2014", {"reviews": reviews, "meta": meta}, LOOSE)
    assert_names(exc, meta, 2, "<literal>")


def test_missing_required_field(files):
    path = files.lines(
        "reviews_X.json", [GOOD_REVIEWS[0], json.dumps({"reviewerID": "u1", "unixReviewTime": 3})]
    )
    with pytest.raises(DataError) as exc:
        prepare_source("amazon2014", {"reviews": path}, LOOSE)
    assert_names(exc, path, 2, "asin")


def test_non_integer_timestamp(files):
    path = files.lines(
        "AMAZON_FASHION.json", [GOOD_REVIEWS[0], review("u1", "i1").replace("1,", '"soon",', 1)]
    )
    with pytest.raises(DataError) as exc:
        prepare_source("amazon2018", {"reviews": path}, LOOSE)
    assert_names(exc, path, 2, "unixReviewTime")


def test_undecodable_bytes_name_their_line(files):
    line2 = '{"reviewerID": "u1", "asin": "caf\u00e9", "unixReviewTime": 2}'
    body = (GOOD_REVIEWS[0] + "\n" + line2 + "\n").encode("latin-1")  # written in the wrong encoding
    assert b"\xe9" in body
    path = files.raw("reviews_X.json.gz", body)
    with pytest.raises(DataError) as exc:
        prepare_source("amazon2014", {"reviews": path}, LOOSE)
    assert_names(exc, path, 2, "<encoding>")
    assert "UTF-8" in str(exc.value)


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("inter.txt", "inter"),
        ("reviews_X.json.gz", "amazon2014"),
        ("Beauty.txt", "s3rec"),
        ("r.inter", "recbole"),
    ],
)
def test_empty_files(files, name, fmt):
    path = files.raw(name, b"\n  \n")
    with pytest.raises(DataError, match="empty") as exc:
        prepare_source(fmt, {"input": path} if fmt != "amazon2014" else {"reviews": path})
    assert path.name in str(exc.value) and exc.value.line == 1


def test_corrupt_gzip(files):
    path = files.raw("inter.txt.gz", b"1 1\n" * 100)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match="cannot read"):
        prepare_source("inter", {"input": path})


def test_duplicate_item_ids_in_item_tables(files):
    seqs = files.lines("Beauty.txt", ["1 1 2 3", "2 2 3 1"])
    jsonl = files.jsonl(
        "items.jsonl", [{"item_id": 1, "title": "a"}, {"item_id": 2}, {"item_id": 1, "title": "b"}]
    )
    with pytest.raises(DataError) as exc:
        prepare_source("s3rec", {"input": seqs, "items": jsonl})
    assert_names(exc, jsonl, 3, "item_id")
    assert "first on line 1" in str(exc.value)
    csv = files.lines("items.csv.gz", ["asin,title", "1,a", "2,b", "2,c"])
    with pytest.raises(DataError) as exc:
        prepare_source("s3rec", {"input": seqs, "items": csv})
    assert_names(exc, csv, 4, "asin")


def test_item_table_without_id_column(files):
    seqs = files.lines("Beauty.txt", ["1 1 2 3"])
    table = files.jsonl("items.jsonl", [{"name": "x"}])
    with pytest.raises(DataError, match="id column"):
        prepare_source("s3rec", {"input": seqs, "items": table})


def test_non_integer_ids_in_inter_txt(files):
    path = files.lines("inter.txt", ["1 1", "1 2", "1 B00X", "1 3"])
    with pytest.raises(DataError) as exc:
        prepare_source("inter", {"input": path})
    assert_names(exc, path, 3, "item")
    path = files.lines("inter2.txt", ["1 1", "u2 2"])
    with pytest.raises(DataError) as exc:
        prepare_source("inter", {"input": path})
    assert_names(exc, path, 2, "user")
    path = files.lines("inter3.txt", ["1 1", "1 0"])
    with pytest.raises(DataError, match="padding"):
        prepare_source("inter", {"input": path})


def test_too_short_sequences_in_final_files(files):
    path = files.lines("Beauty.txt", ["1 1 2 3", "2 4 5", "3 1 2 3 4"])
    with pytest.raises(DataError) as exc:
        prepare_source("s3rec", {"input": path})
    assert_names(exc, path, 2, "sequence")
    inter = files.lines("inter.txt", ["1 1", "1 2", "1 3", "2 1", "2 2", "3 3", "3 1", "3 2"])
    with pytest.raises(DataError) as exc:
        prepare_source("inter", {"input": inter})
    assert_names(exc, inter, 4, "sequence")


def test_yelp_bad_date_and_lcrec_bad_json(files):
    reviews = files.jsonl(
        "review.json", [{"user_id": "a", "business_id": "b", "date": "yesterday", "stars": 5}]
    )
    with pytest.raises(DataError) as exc:
        prepare_source("yelp", {"reviews": reviews})
    assert_names(exc, reviews, 1, "date")
    files.raw("S.inter.json", b'{"0": [0, 1, 2],\n "1": [1, 2, 3\n}')
    with pytest.raises(DataError) as exc:
        prepare_source("lcrec", {"input": files.root / "S.inter.json"})
    assert exc.value.line == 3 and "S.inter.json" in str(exc.value)


def test_recbole_bad_header_and_bad_float(files):
    bad_header = files.lines("a.inter", ["user_id\titem_id", "1\t2"])
    with pytest.raises(DataError) as exc:
        prepare_source("recbole", {"input": bad_header})
    assert_names(exc, bad_header, 1, "user_id")
    bad_float = files.lines(
        "b.inter", ["user_id:token\titem_id:token\ttimestamp:float", "1\t2\t3", "1\t3\tnoon"]
    )
    with pytest.raises(DataError) as exc:
        prepare_source("recbole", {"input": bad_float})
    assert_names(exc, bad_float, 3, "timestamp")


# ---------------------------------------------------------------------------------------------- skipping
def test_skip_malformed_counts_and_reports(files):
    lines = GOOD_REVIEWS[:3] + ["not json", json.dumps({"reviewerID": "u1"})] + GOOD_REVIEWS[3:]
    body = (
        "\n".join(lines) + "\n"
    ).encode() + b'{"reviewerID": "u\xff", "asin": "i1", "unixReviewTime": 1}\n'
    path = files.raw("reviews_X.json", body)
    data = prepare_source("amazon2014", {"reviews": path}, {**LOOSE, "skip_malformed": True})
    assert data.n_interactions == 9
    assert data.meta["skipped_malformed"] == {
        "reviews_X.json: <json>": 1,
        "reviews_X.json: asin": 1,
        "reviews_X.json: <encoding>": 1,
    }
    assert data.meta["counts"]["skipped_malformed"] == 3
    assert any("line 4" in s for s in data.meta["skipped_samples"])


def test_skip_malformed_also_skips_short_final_sequences(files):
    path = files.lines("Beauty.txt", ["1 1 2 3", "2 4 5", "3 1 2 x", "4 1 2 3 4"])
    data = prepare_source("s3rec", {"input": path}, {"skip_malformed": True, "user_min": 0, "item_min": 0})
    assert data.user_ids == ["1", "4"]
    assert data.meta["skipped_malformed"] == {"Beauty.txt: item": 1, "Beauty.txt: sequence": 1}
    assert data.meta["counts"]["users_dropped_min_length"] == 1


def test_cli_reports_skips_on_stderr_and_errors_cleanly(files, tmp_path):
    path = files.lines("inter.txt", ["1 1", "1 2", "1 x", "1 3", "2 1", "2 2", "2 3"])
    runner = CliRunner()
    failed = runner.invoke(
        data_cli, ["prepare", "--format", "inter", "--input", str(path), "-o", str(tmp_path / "o")]
    )
    assert failed.exit_code == 1
    assert "inter.txt, line 3, field 'item'" in failed.output
    assert not (tmp_path / "o").exists()
    ok = runner.invoke(
        data_cli,
        ["prepare", "--format", "inter", "--input", str(path), "--skip-malformed", "-o", str(tmp_path / "o")],
    )
    assert ok.exit_code == 0, ok.output
    assert "skipped 1 malformed line(s)" in ok.stderr
    assert "inter.txt, line 3" in ok.stderr
    assert "2 users" in ok.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_lcrec_duplicate_item_key(files):
    files.raw("S.inter.json", b'{"0": [0, 1, 2]}')
    files.raw("S.item.json", b'{\n "0": {"title": "a"},\n "1": {"title": "b"},\n "0": {"title": "c"}\n}\n')
    with pytest.raises(DataError) as exc:
        prepare_source("lcrec", {"input": files.root / "S.inter.json"})
    assert_names(exc, files.root / "S.item.json", 4, "0")
    data = prepare_source("lcrec", {"input": files.root / "S.inter.json"}, {"skip_malformed": True})
    assert data.item_attrs[0] == {"title": "a"}  # the first record is kept, the duplicate skipped
    assert data.meta["skipped_malformed"] == {"S.item.json: 0": 1}


def test_date_window_from_the_command_line(files):
    reviews = files.jsonl(
        "review.json",
        [
            {"user_id": "a", "business_id": f"b{k}", "date": f"20{k:02d}-06-01", "stars": 5}
            for k in range(1, 10)
        ],
    )
    data = prepare_source(
        "yelp",
        {"reviews": reviews},
        None,
        overrides=["user_min=0", "item_min=0", "date_min=2003-01-01", "date_max=2007-01-01"],
    )
    assert data.timestamps.tolist() == [20030601, 20040601, 20050601, 20060601]
    assert data.meta["counts"]["filtered_date"] == 5


# ---------------------------------------------------------------------------------------------- issue 20
RECBOLE_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_recbole_non_finite_timestamp_names_its_line_and_can_be_skipped(files, bad):
    rows = [f"u{u}\ti{k}\t5\t{u * 10 + k}" for u in range(3) for k in range(3)]
    path = files.lines("r.inter", [RECBOLE_HEADER, *rows[:4], f"u1\ti2\t5\t{bad}", *rows[4:]])
    with pytest.raises(DataError) as exc:
        prepare_source("recbole", {"input": path}, LOOSE)
    assert_names(exc, path, 6, "timestamp")
    assert f"got {bad!r}" in str(exc.value)  # the closing quote is kept
    data = prepare_source("recbole", {"input": path}, {**LOOSE, "skip_malformed": True})
    assert data.n_interactions == 9 and data.meta["skipped_malformed"] == {"r.inter: timestamp": 1}


def test_a_nan_rating_is_malformed(files):
    path = files.lines("reviews_X.json", [*GOOD_REVIEWS, review("u9", "i1").replace("5.0", "NaN")])
    with pytest.raises(DataError) as exc:
        prepare_source("amazon2014", {"reviews": path}, LOOSE)
    assert_names(exc, path, len(GOOD_REVIEWS) + 1, "overall")


def test_a_count_filter_that_removes_everyone_names_its_options(files):
    path = files.lines("reviews_X.json", GOOD_REVIEWS)
    with pytest.raises(DataError) as exc:
        prepare_source("amazon2014", {"reviews": path}, {"user_min": 5, "item_min": 5, "kcore": True})
    message = str(exc.value)
    assert "user_min=5" in message and "item_min=5" in message and "kcore" in message
    assert "reviews_X.json" in message and "removed all 9 interactions" in message


def test_a_huge_token_is_quoted_short(files):
    token = "x" * 5_000_000
    path = files.lines("inter.txt", ["1 1", "1 2", f"1 {token}", "1 3"])
    with pytest.raises(DataError) as exc:
        prepare_source("inter", {"input": path})
    message = str(exc.value)
    assert len(message) < 300 and "5,000,000 characters" in message and "line 3" in message


def test_cli_messages_keep_their_closing_quote(files, tmp_path):
    path = files.lines("inter.txt", ["1 1", "1 2", "1 x", "1 3", "2 1", "2 2", "2 3"])
    res = CliRunner().invoke(
        data_cli, ["prepare", "--format", "inter", "--input", str(path), "-o", str(tmp_path / "o")]
    )
    assert res.exit_code != 0 and "got 'x'" in res.output
