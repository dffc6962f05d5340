"""``esrkit recommend`` / ``esrkit items add`` on an export folder (built directly; no training)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import esrkit
from esrkit.cli.main import cli
from tests.serving.helpers import catalogue, served_model


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model"
    served_model().save(path)
    return path


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_history_prints_the_apis_recommendations(export) -> None:
    res = run("recommend", export, "--history", "I000001,I000002, I000003", "-k", "4", "--exclude", "I000009")
    assert res.exit_code == 0, res.output
    lines = [line.split() for line in res.output.splitlines()[1:]]
    expected = esrkit.load(export).recommend(["I000001", "I000002", "I000003"], k=4, exclude=["I000009"])
    assert [line[3] for line in lines] == [r.item for r in expected]
    assert res.output.startswith("history of 3 items; top 4:")


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_all_users_matches_one_call_per_user(export, tmp_path, suffix) -> None:
    out = tmp_path / f"recs.{suffix}"
    res = run("recommend", export, "--all-users", "-k", "7", "-o", out, "-q")
    assert res.exit_code == 0, res.output
    served = esrkit.load(export)
    data = catalogue()
    if suffix == "csv":
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
        got: dict[str, list] = {}
        for row in rows:
            got.setdefault(row["user_id"], []).append((int(row["rank"]), row["item_id"], float(row["score"])))
        got = {u: [(i, s) for _, i, s in sorted(v)] for u, v in got.items()}
    else:
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        got = {r["user_id"]: list(zip(r["items"], r["scores"])) for r in lines}
    assert list(got) == data.user_ids  # every user, in user order
    for user in data.user_ids:
        single = served.recommend_known(user, k=7)
        assert [i for i, _ in got[user]] == [r.item for r in single]
        np.testing.assert_allclose([s for _, s in got[user]], [r.score for r in single], rtol=1e-5, atol=1e-5)
    assert f"wrote {7 * data.n_users:,} recommendations for {data.n_users:,} users" in res.output


def test_known_user_by_id_and_row(export) -> None:
    a = run("recommend", export, "--user", "U000003", "-k", "3")
    b = run("recommend", export, "--user", "#2", "-k", "3")
    assert a.exit_code == 0 and a.output == b.output and a.output.startswith("user U000003 (row 2)")
    res = run("recommend", export, "--user", "nobody")
    assert res.exit_code != 0 and "unknown user id 'nobody'" in res.output


def test_bad_requests_fail_before_work(export, tmp_path) -> None:
    res = run("recommend", export, "--all-users", "-o", tmp_path / "recs.parquet")
    assert res.exit_code != 0 and "pyarrow" in res.output and not (tmp_path / "recs.parquet").exists()
    assert run("recommend", export, "--all-users").exit_code != 0
    res = run("recommend", export, "--history", "I000001", "--all-users", "-o", tmp_path / "r.csv")
    assert res.exit_code != 0 and "exactly one of" in res.output
    res = CliRunner().invoke(cli, ["recommend", str(export), "--history", "I000001,missing-1"])
    assert res.exit_code != 0 and "'missing-1'" in str(res.exception)


def test_items_add_grows_the_export(export, tmp_path) -> None:
    items = tmp_path / "new.jsonl"
    first = {"asin": "B-NEW", "title": "Lumi Gentle Rose Serum - 1 oz", "brand": "Lumi"}
    second = {"asin": "B-NEW2", "title": "Lumi Matte Lipstick"}
    items.write_text(json.dumps(first) + "\n\n" + json.dumps(second) + "\n")
    res = run("items", "add", export, "--items", items, "-o", tmp_path / "grown")
    assert res.exit_code == 0, res.output
    grown = esrkit.load(tmp_path / "grown")
    assert grown.item_ids[-2:] == ["B-NEW", "B-NEW2"] and grown.n_items == catalogue().n_items + 2
    assert esrkit.load(export).n_items == catalogue().n_items  # -o leaves the source alone
    res = run("recommend", tmp_path / "grown", "--history", "B-NEW,I000005", "-k", str(grown.n_items + 5))
    assert res.exit_code == 0 and len(res.output.splitlines()) == 1 + grown.n_items - 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"asin": "X"}\n{oops\n')
    res = CliRunner().invoke(cli, ["items", "add", str(export), "--items", str(bad)])
    assert res.exit_code != 0 and "bad.jsonl:2: not valid JSON" in str(res.exception)


def test_items_add_takes_the_new_item_norm(tmp_path) -> None:
    source = tmp_path / "llminit"
    served = served_model("model.name=llminit")
    with torch.no_grad():  # as training does: trained rows longer than a bare projection
        served.model.items.weight.mul_(2.0)
    served.save(source)
    items = tmp_path / "new.jsonl"
    items.write_text(json.dumps({"asin": "B-NEW", "title": "Lumi Gentle Rose Serum - 1 oz"}) + "\n")
    grown = {}
    for norm in ("projection", "trained"):
        res = run("items", "add", source, "--items", items, "-o", tmp_path / norm, "--new-item-norm", norm)
        assert res.exit_code == 0, res.output
        grown[norm] = esrkit.load(tmp_path / norm).model.items.weight.detach()
    n = catalogue().n_items + 1
    trained_mean = grown["trained"][1:n].norm(dim=1).mean()
    assert grown["trained"][n].norm() == pytest.approx(float(trained_mean), rel=1e-5)
    assert grown["projection"][n].norm() < 0.6 * grown["trained"][n].norm()
    res = run("items", "add", source, "--items", items, "--new-item-norm", "unit")
    assert res.exit_code != 0 and "'unit' is not one of" in res.output


def test_a_tampered_export_is_refused(export, tmp_path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    with open(copy / "items.jsonl", "a") as fh:
        fh.write('{"id": "sneaked-in", "title": ""}\n')
    res = CliRunner().invoke(cli, ["recommend", str(copy), "--history", "I000001"])
    assert res.exit_code != 0 and "items.jsonl: changed since export" in str(res.exception)
