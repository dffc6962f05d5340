"""`esrkit data prepare|stats` end to end, and the statistics on a hand-checked toy dataset."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.data.sequences import SequenceData
from esrkit.data.stats import dataset_stats, format_stats


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_help_lists_formats_presets_and_options(runner):
    result = runner.invoke(cli, ["data", "--help"])
    assert result.exit_code == 0 and "prepare" in result.output and "stats" in result.output
    result = runner.invoke(cli, ["data", "prepare", "--help"])
    assert result.exit_code == 0
    for word in (
        "amazon2014",
        "amazon2018",
        "yelp",
        "inter",
        "s3rec",
        "unisrec",
        "lcrec",
        "recbole",
        "beauty",
        "fashion",
        "--skip-malformed",
        "--overwrite",
        "kcore",
        "id_assignment",
    ):
        assert word in result.output, word
    result = runner.invoke(cli, ["data", "stats", "--help"])
    assert result.exit_code == 0 and "--json" in result.output


def test_prepare_then_stats(runner, files, tmp_path):
    path = files.lines("inter.txt", ["1 1", "1 2", "1 3", "2 2", "2 3", "2 4", "2 2"])
    out = tmp_path / "toy"
    result = runner.invoke(
        cli, ["data", "prepare", "--format", "inter", "--input", str(path), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "2 users, 4 items, 7 interactions" in result.output
    again = runner.invoke(cli, ["data", "prepare", "--format", "inter", "--input", str(path), "-o", str(out)])
    assert again.exit_code != 0 and "already exists" in again.output
    over = runner.invoke(
        cli,
        [
            "data",
            "prepare",
            "--format",
            "inter",
            "--input",
            str(path),
            "-o",
            str(out),
            "--overwrite",
            "--set",
            "id_assignment=compact",
            "--name",
            "renamed",
        ],
    )
    assert over.exit_code == 0, over.output
    assert SequenceData.load(out).name == "renamed"
    assert SequenceData.load(out).meta["options"]["id_assignment"] == "compact"

    table = runner.invoke(cli, ["data", "stats", str(out)])
    assert table.exit_code == 0 and "interactions" in table.output and "repeats" in table.output
    as_json = runner.invoke(cli, ["data", "stats", str(out), "--json", "--ts-user", "3"])
    stats = json.loads(as_json.output)
    assert stats["users"] == 2 and stats["repeats"] == 1 and stats["groups"]["ts_user"] == 3


def test_cli_rejects_bad_combinations(runner, files, tmp_path):
    path = files.lines("inter.txt", ["1 1", "1 2", "1 3"])
    out = str(tmp_path / "x")
    result = runner.invoke(cli, ["data", "prepare", "--input", str(path), "-o", out])
    assert result.exit_code != 0 and "--format" in result.output
    result = runner.invoke(
        cli, ["data", "prepare", "--format", "inter", "--preset", "beauty", "--input", str(path), "-o", out]
    )
    assert result.exit_code != 0 and "amazon2014" in result.output
    result = runner.invoke(
        cli, ["data", "prepare", "--format", "inter", "--input", str(path), "-o", out, "--set", "nonsense=1"]
    )
    assert result.exit_code != 0 and "unknown key" in result.output
    result = runner.invoke(cli, ["data", "stats", str(tmp_path)])
    assert result.exit_code != 0 and "not a processed esrkit dataset" in result.output


def test_stats_on_the_toy_dataset(tiny_sequences):
    stats = dataset_stats(tiny_sequences)
    assert (stats["users"], stats["items"], stats["interactions"]) == (5, 8, 21)
    assert stats["sparsity"] == pytest.approx(1 - 21 / 40)
    assert stats["avg_length"] == pytest.approx(4.2)
    assert (stats["min_length"], stats["median_length"], stats["max_length"]) == (3, 4.0, 6)
    assert stats["repeats"] == 1
    assert stats["users_lt10_share"] == 1.0 and stats["items_le30_share"] == 1.0
    assert stats["top20_items_interaction_share"] == pytest.approx(3 / 21)  # floor(0.2 * 8) = 1 item with 3
    assert stats["attribute_coverage"]["title"] == {"items": 8, "share": 1.0}
    assert stats["attribute_coverage"]["brand"] == {"items": 4, "share": 0.5}
    groups = stats["groups"]
    assert (groups["ts_user"], groups["ts_item"]) == (9, 4)  # not a paper dataset: the defaults
    assert groups["tail_users"] == 5 and groups["tail_item_instances"] == 5
    custom = dataset_stats(tiny_sequences, ts_user=4, ts_item=3)["groups"]
    assert custom["tail_users"] == 3  # input lengths 2, 3, 4, 5, 2
    assert custom["tail_item_instances"] == 1  # targets 3, 5, 8, 8, 8; only item 5 has < 3 distinct users
    text = format_stats(stats)
    assert "coverage.brand" in text and "50.0%" in text
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in stats.values())
    json.dumps(stats)  # JSON-ready
