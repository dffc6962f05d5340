from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.index import NeighbourTable, ShardedIndex, exact_topk, synthetic_user_embeddings


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emb")
    x = synthetic_user_embeddings(900, 32, seed=41, users_per_cluster=30)
    np.save(folder / "users.npy", x)
    (folder / "ids.json").write_text(json.dumps([f"U{i:04d}" for i in range(len(x))]))
    return folder, x


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", [["index"], ["index", "build"], ["index", "query"]])
def test_help(command):
    assert "Usage" in run(*command, "--help")


def test_build_exact_then_query(embeddings, tmp_path):
    folder, x = embeddings
    out = tmp_path / "sim"
    text = run(
        "index",
        "build",
        "--embeddings",
        str(folder / "users.npy"),
        "--ids",
        str(folder / "ids.json"),
        "-k",
        "15",
        "-o",
        str(out),
    )
    assert "method: exact" in text and "peak memory" in text and "time:" in text
    table = NeighbourTable.load(out)
    np.testing.assert_array_equal(table.rows, exact_topk(x, 15)[0])
    shown = run("index", "query", str(out), "--user", "U0003", "-k", "4", "--json")
    payload = json.loads(shown)
    assert [n["user"] for n in payload["neighbours"]] == table.lookup("U0003", 4)
    assert "U0003" in run("index", "query", str(out), "--user", "U0003")
    result = CliRunner().invoke(
        cli, ["index", "build", "--embeddings", str(folder / "users.npy"), "-o", str(out)]
    )
    assert result.exit_code != 0 and "overwrite" in result.output


def test_build_hnsw_and_sharded_report_recall(embeddings, tmp_path):
    folder, _ = embeddings
    text = run(
        "index",
        "build",
        "--embeddings",
        str(folder / "users.npy"),
        "-k",
        "10",
        "--method",
        "hnsw",
        "--M",
        "16",
        "--ef",
        "64",
        "--recall-sample",
        "200",
        "-o",
        str(tmp_path / "h"),
    )
    assert "recall@10 vs exact on 200 sampled users" in text
    assert (tmp_path / "h" / "hnsw.bin").is_file() and (tmp_path / "h" / "hnsw.json").is_file()
    text = run(
        "index",
        "build",
        "--embeddings",
        str(folder / "users.npy"),
        "-k",
        "10",
        "--method",
        "exact",
        "--shard-size",
        "400",
        "-o",
        str(tmp_path / "s"),
    )
    assert "shards: 3" in text
    assert ShardedIndex.load(tmp_path / "s" / "shards").method == "exact"
    assert "1" in run("index", "query", str(tmp_path / "s"), "--user", "1", "-k", "3")


def test_unknown_user_is_a_clear_error(embeddings, tmp_path):
    folder, _ = embeddings
    run("index", "build", "--embeddings", str(folder / "users.npy"), "-k", "5", "-o", str(tmp_path / "t"))
    result = CliRunner().invoke(cli, ["index", "query", str(tmp_path / "t"), "--user", "nobody"])
    assert result.exit_code != 0 and "unknown user id" in result.output
