"""``esrkit tune-bonus`` (esrkit/runs/bonus.py): the ranking-time bonus chosen on validation, the same numbers
as ``esrkit evaluate --neighbour-boost``, the test split read only when asked."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.config import ConfigError
from esrkit.runs.bonus import (
    NO_BONUS,
    Setting,
    bonus_grid,
    check_runs,
    combine_records,
    pick_best,
    pick_tail_first,
)
from esrkit.runs.load import load_run, run_evaluator
from esrkit.runs.train import train
from tests.runs.test_cold_protocol import config
from tests.runs.test_ranking_bonus import LLMINIT


def means(*rows):
    return {setting: {"valid": v, "valid_tail_item": t} for setting, v, t in rows}


def test_the_grid_has_no_bonus_once_then_every_setting_smallest_first():
    grid = bonus_grid([0, 0.5, 0.25, 0.5], [3, 1, 3], [0, 0])
    assert grid == [
        NO_BONUS,
        Setting(0.25, 1, 0),
        Setting(0.25, 3, 0),
        Setting(0.5, 1, 0),
        Setting(0.5, 3, 0),
    ]
    assert Setting(0.25, 3, 1).options() == (
        "--neighbour-boost 0.25 --neighbour-boost-items 3 --neighbour-boost-tail 1 "
        "--text-boost 0 --text-boost-items 1 --text-boost-tail 0 "
        "--popularity-tilt 0 --popularity-tilt-items 1"
    )
    for bad in ([[-1], [1], [0]], [[1], [0], [0]], [[1], [1], [-0.5]], [[1], [], [0]]):
        with pytest.raises(ConfigError, match="bonus grid"):
            bonus_grid(*bad)
    for bad in ([[-1], [1], [0]], [[1], [0], [0]], [[1], [1], [-1]]):
        with pytest.raises(ConfigError, match="text term grid"):
            bonus_grid([0], [1], [0], *bad)


def test_the_two_terms_grids_combine_each_off_once_and_off_first():
    grid = bonus_grid([0, 0.5], [1], [0], [0, 1], [3], [0, 1])
    assert grid == [
        NO_BONUS,
        Setting(0, 1, 0, 1, 3, 0),
        Setting(0, 1, 0, 1, 3, 1),
        Setting(0.5, 1, 0),
        Setting(0.5, 1, 0, 1, 3, 0),
        Setting(0.5, 1, 0, 1, 3, 1),
    ]
    assert [s.label() for s in grid[:2]] == ["none", "text 1, last 3, tail 0"]
    assert grid[4].label() == "beta 0.5, last 1, tail 0; text 1, last 3, tail 0"
    assert Setting.from_record({"beta": 0.5, "items": 1, "tail": 0.0}) == grid[3]  # a record from before
    model = types.SimpleNamespace()
    grid[5].apply(model)
    assert (model.neighbour_boost, model.text_boost, model.text_boost_tail) == (0.5, 1.0, 1.0)
    assert Setting.of(model) == grid[5]


def test_the_popularity_tilt_joins_the_grid_off_first_and_round_trips():
    grid = bonus_grid([0.5], [1], [0], [0], [1], [0], [0, 0.1, 0.25], [10, 3])
    assert grid[:3] == [NO_BONUS, Setting(0, 1, 0, 0, 1, 0, 0.1, 3), Setting(0, 1, 0, 0, 1, 0, 0.1, 10)]
    assert len(grid) == 2 * 5 and grid[5] == Setting(0.5, 1, 0)  # the bonus off, then on; the tilt off first
    assert grid[-1].label() == "beta 0.5, last 1, tail 0; tilt 0.25, last 10"
    assert grid[-1].options().endswith("--popularity-tilt 0.25 --popularity-tilt-items 10")
    model = types.SimpleNamespace()
    grid[-1].apply(model)
    assert (model.popularity_tilt, model.popularity_tilt_items) == (0.25, 10) and Setting.of(model) == grid[
        -1
    ]
    assert Setting.from_record({"beta": 0.5, "items": 1, "tail": 0.0, "text": 0}) == grid[5]  # older records
    with pytest.raises(ConfigError, match="popularity tilt grid"):
        bonus_grid([0], [1], [0], [0], [1], [0], [0.1], [0])


def test_tail_first_picks_the_best_tail_within_the_tolerance_and_never_below_it():
    none, small, large, huge = NO_BONUS, Setting(0.25, 1, 2.0), Setting(0.5, 3, 3.0), Setting(1.0, 3, 3.0)
    mean = means((none, 0.100, 0.050), (small, 0.101, 0.055), (large, 0.1002, 0.060), (huge, 0.095, 0.070))
    settings = [none, small, large, huge]
    # floor 0.99 x 0.101 = 0.09999: `large` is above it, `huge` (the best tail) below
    assert pick_tail_first(settings, mean, 0.01) == large
    assert pick_tail_first(settings, mean, 0.10) == huge
    assert pick_tail_first(settings, mean, 0.0) == small == pick_best(settings, mean)


def test_ties_go_to_the_smaller_bonus():
    a, b = Setting(0.25, 1, 0.0), Setting(0.5, 1, 0.0)
    mean = means((a, 0.1, 0.06), (b, 0.1, 0.06))
    assert pick_tail_first([a, b], mean, 0.01) == a == pick_best([a, b], mean)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of LLMInit with text neighbours, and one run without them."""
    root = tmp_path_factory.mktemp("bonus")
    for seed in (42, 43):
        train(config(root, *LLMINIT, f"train.seed={seed}"), progress=False)
    train(config(root / "plain", "model.name=llminit", "train.epochs=1"), progress=False)
    base = root / "runs" / "demo"
    return base / "seed-42", base / "seed-43", root / "plain" / "runs" / "demo" / "seed-42"


def evaluate(run_dir, split, beta):
    out = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(run_dir),
            "--split",
            split,
            "--json",
            "--protocol",
            "full",
            "--neighbour-boost",
            str(beta),
        ],
    )
    assert out.exit_code == 0, out.output
    return json.loads(out.output)["full"]


def test_the_choice_is_made_on_validation_with_evaluates_numbers(runs, tmp_path):
    a, b, _ = runs
    path = tmp_path / "choice.json"
    out = CliRunner().invoke(
        cli,
        [
            "tune-bonus",
            *(str(a), str(b)),
            *("--betas", "0,3", "--items", "1", "--tails", "0", "--text-boosts", "0"),
            *("--json", str(path)),
        ],
    )
    assert out.exit_code == 0, out.output
    record = json.loads(path.read_text())
    for run, row in zip((a, b), record["runs"], strict=True):
        assert [s["beta"] for s in row["settings"]] == [0.0, 3.0]
        for setting in row["settings"]:
            assert "test" not in setting  # the test split is not read unless asked
            valid = evaluate(run, "valid", setting["beta"])
            assert setting["valid"] == pytest.approx(valid["overall"]["ndcg@10"], abs=1e-9)
            assert setting["valid_tail_item"] == pytest.approx(valid["tail_item"]["ndcg@10"], abs=1e-9)
    means_ = [(m["valid"], -i) for i, m in enumerate(record["mean"])]
    best = record["mean"][max(range(2), key=lambda i: means_[i])]
    assert record["chosen"] == {k: best[k] for k in Setting._fields}
    assert record["mean"][1]["valid"] == pytest.approx(
        (record["runs"][0]["settings"][1]["valid"] + record["runs"][1]["settings"][1]["valid"]) / 2
    )
    assert "chosen on validation" in out.output and "esrkit export" in out.output

    out = CliRunner().invoke(
        cli,
        [
            "tune-bonus",
            str(a),
            "--betas",
            "3",
            "--items",
            "1",
            "--tails",
            "0",
            "--text-boosts",
            "0",
            "--with-test",
            "--json",
            str(path),
        ],
    )
    assert out.exit_code == 0, out.output
    test = json.loads(path.read_text())["runs"][0]["settings"][1]["test"]
    assert test["overall"] == pytest.approx(evaluate(a, "test", 3)["overall"]["ndcg@10"], abs=1e-9)


def test_the_popularity_tilt_is_tuned_with_evaluates_numbers(runs, tmp_path):
    a, _, _ = runs
    path = tmp_path / "tilt.json"
    grid = ("--betas", "0", "--text-boosts", "0", "--tilts", "0,2", "--tilt-items", "3", "--with-test")
    out = CliRunner().invoke(cli, ["tune-bonus", str(a), *grid, "--json", str(path)])
    assert out.exit_code == 0, out.output
    rows = json.loads(path.read_text())["runs"][0]["settings"]
    assert [(r["tilt"], r["tilt_items"]) for r in rows] == [(0.0, 1), (2.0, 3)]
    assert rows[0]["valid"] != rows[1]["valid"]  # the tilt changes ranking
    options = ["--popularity-tilt", "2", "--popularity-tilt-items", "3"]
    for split, number in (("valid", rows[1]["valid"]), ("test", rows[1]["test"]["overall"])):
        res = CliRunner().invoke(
            cli, ["evaluate", str(a), "--split", split, "--json", "--protocol", "full", *options]
        )
        assert res.exit_code == 0, res.output
        assert number == pytest.approx(json.loads(res.output)["full"]["overall"]["ndcg@10"], abs=1e-9)


def test_the_text_term_is_tuned_with_evaluates_numbers(runs, tmp_path):
    a, _, _ = runs
    path = tmp_path / "text.json"
    grid = ("--betas", "0", "--text-boosts", "0,2", "--text-items", "2", "--text-tails", "1")
    out = CliRunner().invoke(cli, ["tune-bonus", str(a), *grid, "--json", str(path)])
    assert out.exit_code == 0, out.output
    rows = json.loads(path.read_text())["runs"][0]["settings"]
    assert [(r["text"], r["text_items"], r["text_tail"]) for r in rows] == [(0.0, 1, 0.0), (2.0, 2, 1.0)]
    options = ["--text-boost", "2", "--text-boost-items", "2", "--text-boost-tail", "1"]
    res = CliRunner().invoke(
        cli, ["evaluate", str(a), "--split", "valid", "--json", "--protocol", "full", *options]
    )
    assert res.exit_code == 0, res.output
    valid = json.loads(res.output)["full"]
    assert rows[1]["valid"] == pytest.approx(valid["overall"]["ndcg@10"], abs=1e-9)
    assert rows[1]["valid_tail_item"] == pytest.approx(valid["tail_item"]["ndcg@10"], abs=1e-9)
    assert rows[1]["valid"] != rows[0]["valid"]
    assert "--text-boost 0 " in out.output or "--text-boost 2 " in out.output  # the export line


def test_records_of_runs_evaluated_apart_give_the_choice_of_one_invocation(runs, tmp_path):
    """--records: each seed evaluated by its own process, then combined, is the same record as one
    invocation over both; a different grid, a run given twice or a file that is no record is refused."""
    a, b, _ = runs
    grid = ("--betas", "0,3", "--items", "1", "--tails", "0", "--text-boosts", "0")

    def tune(*args):
        out = CliRunner().invoke(cli, ["tune-bonus", *map(str, args)])
        assert out.exit_code == 0, out.output
        return out

    for run, name in ((a, "a"), (b, "b"), (b, "b2")):
        tune(
            run,
            *(grid if name != "b2" else (*grid[:1], "0,2", *grid[2:])),
            "--json",
            tmp_path / f"{name}.json",
        )
    tune(a, b, *grid, "--json", tmp_path / "both.json")
    out = tune(
        "--records", tmp_path / "a.json", "--records", tmp_path / "b.json", "--json", tmp_path / "ab.json"
    )
    both, combined = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("both", "ab"))
    assert combined == both
    assert "chosen on validation (best mean N@10 of 2 run(s))" in out.output

    with pytest.raises(ConfigError, match="another grid"):
        combine_records([tmp_path / "a.json", tmp_path / "b2.json"])
    with pytest.raises(ConfigError, match="in two of the records"):
        combine_records([tmp_path / "both.json", tmp_path / "b.json"])
    (tmp_path / "other.json").write_text('{"plan": "x"}')
    with pytest.raises(ConfigError, match=r"other\.json: not a record of esrkit tune-bonus"):
        combine_records([tmp_path / "a.json", tmp_path / "other.json"])
    for args in (
        [],
        [a, "--records", tmp_path / "b.json"],
        ["--records", tmp_path / "a.json", "--betas", "1"],
    ):
        out = CliRunner().invoke(cli, ["tune-bonus", *map(str, args)])
        assert out.exit_code == 2, out.output
    assert "drop --betas" in out.output


def test_bad_runs_and_options_are_refused_before_any_evaluation(runs):
    a, b, plain = runs
    with pytest.raises(ConfigError, match="needs a run trained with model.text_neighbours"):
        check_runs([a, plain])
    other = config(a.parent.parent.parent.parent / "other", *LLMINIT, "model.hidden=32")
    train(other, progress=False)
    with pytest.raises(ConfigError, match=r"another experiment .*model\.hidden"):
        check_runs([a, a.parents[3] / "other" / "runs" / "demo" / "seed-42"])
    with pytest.raises(ConfigError, match="not a finished esrkit run"):
        check_runs([a.parent])
    for option in (["--items", "0"], ["--betas", "x"], ["--tail-first", "-1"], ["--text-items", "0"]):
        out = CliRunner().invoke(cli, ["tune-bonus", str(a), *option])
        assert out.exit_code == 2 and option[0] in out.output, out.output


def test_new_items_validate_with_the_held_out_items_added(runs, tmp_path):
    a, _, _ = runs
    train(config(tmp_path, *LLMINIT, "data.cold_items=0.2", "data.cold_seed=7"), progress=False)
    run, path = tmp_path / "runs" / "demo" / "seed-42", tmp_path / "new.json"
    grid = ("--betas", "0", "--text-boosts", "0,2", "--text-items", "2", "--text-tails", "1")
    out = CliRunner().invoke(cli, ["tune-bonus", str(run), *grid, "--new-items", "--json", str(path)])
    assert out.exit_code == 0, out.output
    assert "validation new-item N@10" in out.output
    rows = json.loads(path.read_text())["runs"][0]["settings"]
    # the numbers are the full data's validation split, ranked with the held-out items added as at test
    loaded = load_run(run, "cpu")
    evaluator = run_evaluator(loaded, "valid", new_items=True)
    full = loaded.inputs.cold.split.full
    assert evaluator.data is loaded.data is not loaded.inputs.data  # every item, the held-out ones added
    assert np.array_equal(evaluator.targets, full.targets("valid"))
    assert not np.array_equal(evaluator.targets, full.targets("test"))
    new_target = full.targets("valid") > loaded.inputs.cold.split.n_warm
    assert new_target.any() and np.array_equal(evaluator.groups.masks()["cold_item"], new_target)
    for row in rows:
        Setting.from_record(row).apply(loaded.model)
        metrics = evaluator.evaluate(loaded.model, ("full",)).metrics["full"]
        assert row["valid"] == pytest.approx(metrics["overall"]["ndcg@10"], abs=1e-9)
        assert row["valid_cold_item"] == pytest.approx(metrics["cold_item"]["ndcg@10"], abs=1e-9)
    assert rows[1]["valid_cold_item"] != rows[0]["valid_cold_item"]  # the tail-weighted term moves new items
    # without the flag: the warm validation the epochs were chosen on, which holds no new item
    warm = CliRunner().invoke(cli, ["tune-bonus", str(run), *grid, "--json", str(path)])
    assert warm.exit_code == 0, warm.output
    warm_rows = json.loads(path.read_text())["runs"][0]["settings"]
    assert "valid_cold_item" not in warm_rows[0] and warm_rows[0]["valid"] != rows[0]["valid"]
    with pytest.raises(ConfigError, match=r"--new-items .* data\.cold_items > 0"):
        check_runs([a], new_items=True)  # a run trained without held-out items, refused before any work
    with pytest.raises(ConfigError, match=r"data\.cold_items > 0"):
        run_evaluator(load_run(a, "cpu"), "valid", new_items=True)
