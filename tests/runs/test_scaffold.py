"""`esrkit recipe new`: a recipe and a template that load, with the group rule chosen for the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.config import resolve_recipe
from esrkit.data.prepare import prepare_source
from esrkit.data.synthetic import SyntheticOptions, generate
from esrkit.prompts import load_templates
from tests.data.own_data import write_recbole


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    inter, item = write_recbole(tmp_path / "raw")
    data = prepare_source("recbole", {"input": str(inter), "meta": str(item)}, name="mine")
    data.save(tmp_path / "data" / "mine")
    return tmp_path


def test_recipe_new_writes_a_recipe_and_template_that_load(project) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "recipe",
            "new",
            "mine",
            "--dataset",
            "data/mine",
            "--provider",
            "offline",
            "--backbone",
            "bert4rec",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "wrote recipes/mine.toml and recipes/prompts/mine.toml" in res.output
    cfg = resolve_recipe("mine")  # found in the current folder's recipes/, as esrkit train will
    inputs = (cfg.data.path, cfg.embedding.provider, cfg.embedding.templates)
    assert inputs == ("data/mine", "offline", "mine")
    model = (cfg.model.name, cfg.model.backbone, cfg.model.hidden, cfg.train.epochs)
    assert model == ("llmesr", "bert4rec", 64, 200)
    # every user has >= 12 interactions: the official 9/4 leave no tail user, so the 20% rule is chosen, and
    # the recipe says why
    assert cfg.data.group_rule == "pareto"
    text = (project / "recipes" / "mine.toml").read_text()
    assert "the official thresholds 9/4 leave 0 tail users" in text
    sasrec = "--name mine-sasrec --set model.name=id --set model.hidden=128 --set embedding.provider=none"
    assert sasrec in text
    assert load_templates("mine").user.item_field == "movie_title"
    assert "name is " in res.output and "['" not in res.output  # the sample prompts it prints


def test_official_rule_kept_when_it_fits(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    generate(SyntheticOptions(n_users=400, n_items=300)).save(tmp_path / "syn")
    res = CliRunner().invoke(cli, ["recipe", "new", "syn", "--dataset", "syn", "--provider", "offline"])
    assert res.exit_code == 0, res.output
    cfg = resolve_recipe("syn")
    assert (cfg.data.group_rule, cfg.data.ts_user, cfg.data.ts_item) == ("official", 9, 4)


def test_bad_options_write_nothing_and_files_are_not_replaced(project) -> None:
    runner = CliRunner()
    for args, message in (
        (["--provider", "nope"], "no provider named 'nope'"),
        (["--backbone", "nope"], "unknown backbone 'nope'"),
    ):
        res = runner.invoke(cli, ["recipe", "new", "mine", "--dataset", "data/mine", *args])
        assert res.exit_code != 0 and message in res.output
        assert not (project / "recipes").exists()
    res = runner.invoke(cli, ["recipe", "new", "../x", "--dataset", "data/mine"])
    assert res.exit_code != 0 and "becomes a file name" in res.output
    res = runner.invoke(cli, ["recipe", "new", "generic", "--dataset", "data/mine"])
    assert res.exit_code != 0 and "a prompt named 'generic' exists already" in res.output
    first = ["recipe", "new", "mine", "--dataset", "data/mine", "-p", "offline"]
    assert runner.invoke(cli, first).exit_code == 0
    res = runner.invoke(cli, first)
    assert res.exit_code != 0 and "exists (pass --force" in res.output
    assert (
        runner.invoke(
            cli, ["recipe", "new", "mine", "--dataset", "data/mine", "-p", "offline", "--force"]
        ).exit_code
        == 0
    )
