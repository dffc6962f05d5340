"""``model.neighbour_boost``: a ranking-time option, so training and epoch selection ignore it, the reported
metrics and serving apply it, and it can be chosen after training (``esrkit evaluate/export
--neighbour-boost``)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import esrkit
from esrkit.cli.main import cli
from esrkit.config import ConfigError
from esrkit.runs.load import load_run
from esrkit.runs.train import train
from tests.runs.test_cold_protocol import config

LLMINIT = ["model.name=llminit", "model.text_neighbours=3", "train.epochs=3"]


def run_folder(tmp_path, boost: float):
    cfg = config(tmp_path / str(boost), *LLMINIT, f"model.neighbour_boost={boost}")
    train(cfg, progress=False)
    return tmp_path / str(boost) / "runs" / "demo" / "seed-42"


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_boost_changes_ranking_only_and_can_be_chosen_after_training(tmp_path) -> None:
    plain, boosted = run_folder(tmp_path, 0.0), run_folder(tmp_path, 3.0)
    a, b = history(plain), history(boosted)
    assert [h["score"] for h in a] == [h["score"] for h in b]  # the same training and epoch selection
    assert [h["loss"] for h in a] == [h["loss"] for h in b]
    results = {p: json.loads((p / "results.json").read_text()) for p in (plain, boosted)}
    assert results[plain]["best_epoch"] == results[boosted]["best_epoch"]
    full = {p: r["test"]["full"]["overall"]["ndcg@10"] for p, r in results.items()}
    assert full[plain] != full[boosted]  # the reported metrics rank with the bonus

    # chosen after training: evaluating the plain run with the bonus gives the boosted run's metrics
    res = CliRunner().invoke(cli, ["evaluate", str(plain), "--json", "--neighbour-boost", "3"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.output)
    for protocol in ("sampled", "full"):
        assert again[protocol]["overall"]["ndcg@10"] == pytest.approx(
            results[boosted]["test"][protocol]["overall"]["ndcg@10"], abs=1e-9
        )
    res = CliRunner().invoke(cli, ["export", str(plain), "-o", str(tmp_path / "x"), "--neighbour-boost", "3"])
    assert res.exit_code == 0, res.output
    served, reference = esrkit.load(tmp_path / "x"), esrkit.load(_export(boosted, tmp_path / "y"))
    assert served.cfg.model.neighbour_boost == 3.0
    items = served.item_ids[:4]
    top = [r.item for r in served.recommend(items, k=10)]
    assert top == [r.item for r in reference.recommend(items, k=10)]


def _export(run_dir, out):
    res = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_a_boost_for_a_model_without_text_neighbours_is_refused(tmp_path) -> None:
    run_dir = tmp_path / "runs" / "demo" / "seed-42"
    train(config(tmp_path, "model.name=llminit", "train.epochs=1"), progress=False)
    message = "--neighbour-boost 0.5 does not fit .*needs model.text_neighbours > 0"
    with pytest.raises(ConfigError, match=message):
        load_run(run_dir, "cpu", ranking={"neighbour_boost": 0.5})
    with pytest.raises(ConfigError, match="not ranking-time options: dropout"):
        load_run(run_dir, "cpu", ranking={"dropout": 0.1})


def test_the_bonus_refinements_can_be_replaced_and_are_checked(tmp_path) -> None:
    run_dir = tmp_path / "runs" / "demo" / "seed-42"
    options = ["model.neighbour_boost=0.5", "model.neighbour_boost_items=2", "model.neighbour_boost_tail=1"]
    train(config(tmp_path, *LLMINIT[:2], "train.epochs=1", *options), progress=False)
    run = load_run(run_dir, "cpu", ranking={"neighbour_boost_items": 3})
    assert (run.model.neighbour_boost, run.model.bonus_history, run.model.neighbour_boost_tail) == (
        0.5,
        3,
        1.0,
    )
    off = load_run(run_dir, "cpu", ranking={"neighbour_boost": 0})  # off: its refinements are inert
    assert off.model.ranking_bonus(torch.tensor([[1, 2]])) is None
    with pytest.raises(ConfigError, match="--neighbour-boost 0.5 --neighbour-boost-tail -1 does not fit"):
        load_run(run_dir, "cpu", ranking={"neighbour_boost": 0.5, "neighbour_boost_tail": -1})
    res = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--neighbour-boost-items", "0"])
    assert res.exit_code == 2 and "--neighbour-boost-items" in res.output
    out = tmp_path / "export"
    options = ["--neighbour-boost-items", "3", "--neighbour-boost-tail", "2"]
    res = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out), *options])
    assert res.exit_code == 0, res.output
    served = esrkit.load(out)  # the export ranks with the options it was given, recorded in its config
    assert (served.model.bonus_history, served.model.neighbour_boost_tail) == (3, 2.0)
    assert (served.cfg.model.neighbour_boost, served.cfg.model.neighbour_boost_items) == (0.5, 3)
