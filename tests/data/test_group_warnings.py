"""A warning when the chosen long-tail rule leaves a group empty or tiny, with the rule to use instead."""

from __future__ import annotations

import json

from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.data.groups import compute_groups, group_warnings
from esrkit.data.prepare import prepare_source
from esrkit.data.sequences import SequenceData
from tests.data.own_data import write_recbole


def _long_histories(tmp_path):
    """40 users with 12-20 interactions each: every test input has >= 11 items, so none is below ts_user =
    9."""
    inter, item = write_recbole(tmp_path / "raw", n_users=40)
    return prepare_source(
        "recbole",
        {"input": str(inter), "meta": str(item)},
        name="mine",
        overrides=["user_min=0", "item_min=0"],
    )  # keep every interaction


def test_official_rule_without_tail_users_warns_and_names_pareto(tmp_path) -> None:
    data = _long_histories(tmp_path)
    assert int(compute_groups(data, "test", 9, 4, "official").tail_user.sum()) == 0
    (warning,) = group_warnings(data, "test", 9, 4, "official")
    assert "the official group rule (ts_user=9, ts_item=4) leaves 0 tail users (0.0%)" in warning
    pareto = compute_groups(data, "test", rule="pareto")
    assert (
        f"Use --set data.group_rule=pareto (the paper's 20% rule: {int(pareto.tail_user.sum())} tail "
        f"users, {int(pareto.tail_item.sum())} tail-item targets)"
    ) in warning
    assert group_warnings(data, "test", rule="pareto") == []


def test_thresholds_are_suggested_when_pareto_is_the_problem() -> None:
    """Every user equally long: the 20% rule puts all of them at the head; thresholds cannot fix that
    either."""
    data = SequenceData.from_sequences([[1, 2, 3, 4, 5, 6]] * 30 + [[6, 5, 4, 3, 2, 1]] * 30, n_items=6)
    (warning,) = group_warnings(data, "test", rule="pareto")
    assert "the pareto group rule leaves 0 tail users" in warning and "No rule gives every group" in warning


def test_data_stats_prints_the_warning(tmp_path) -> None:
    data = _long_histories(tmp_path)
    data.save(tmp_path / "mine")
    runner = CliRunner()
    res = runner.invoke(cli, ["data", "stats", str(tmp_path / "mine")])
    assert res.exit_code == 0, res.output
    assert "warning: the official group rule (ts_user=9, ts_item=4) leaves 0 tail users" in res.output
    res = runner.invoke(cli, ["data", "stats", str(tmp_path / "mine"), "--json", "--group-rule", "pareto"])
    assert json.loads(res.output)["group_warnings"] == []
