"""The comparison study: named runs from a plan file, gains over references, stopping table, records."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.config import ConfigError
from esrkit.runs.compare import load_plan
from esrkit.runs.study import run_study

PLAN = """
description = "two losses on the synthetic catalogue"
recipe = "demo"
seeds = [42, 43]
set = ["train.epochs=2", "train.patience=5", "train.max_batches_per_epoch=2",
       "data.synthetic={n_users=300, n_items=300}", "eval.batch_size=256", "eval.valid_protocol=full",
       "embedding.provider=none", "model.name=id"]
references = ["bce"]

[runs.bce]
label = "SASRec-BCE"

[runs.ce]
label = "SASRec-CE"
set = ["model.loss=ce"]
"""


def _plan(tmp_path, text: str = PLAN):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return load_plan(path, output_dir=str(tmp_path / "runs"))


def test_plan_is_checked_before_training(tmp_path):
    plan = _plan(tmp_path)
    assert [n for n, _, _ in plan.runs()] == ["bce", "ce"]
    assert plan.config("ce", ["model.loss=ce"]).model.loss == "ce"
    assert plan.config("bce", []).train.epochs == 2
    with pytest.raises(ConfigError, match="runs.ce"):
        _plan(tmp_path, PLAN.replace('set = ["model.loss=ce"]', 'set = ["model.nope=1"]'))
    with pytest.raises(ConfigError, match="references"):
        _plan(tmp_path, PLAN.replace('references = ["bce"]', 'references = ["sasrec"]'))
    with pytest.raises(ConfigError, match="unknown key"):
        _plan(tmp_path, "colour = 1\n" + PLAN)
    assert not (tmp_path / "runs").exists()  # nothing was created by a refused plan


def test_every_shipped_plan_loads():
    from esrkit.resources import list_resources

    names = list_resources("study")
    published = {"full-ranking-beauty5", "full-ranking-scientific", "cold-scientific", "ablations-scientific"}
    assert published <= set(names)
    for name in names:
        plan = load_plan(name, output_dir="runs")
        assert plan.references and all(r in {n for n, _, _ in plan.runs()} for r in plan.references), name


@pytest.mark.slow
def test_compare_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = _plan(tmp_path)
    report = run_study(plan, progress=False, log=lambda m: None)
    assert not report["failures"] and report["runs"] == ["bce", "ce"]
    gains = [g for g in report["gains"] if g["run"] == "ce" and g["versus"] == "bce"]
    assert {g["protocol"] for g in gains} == {"sampled", "full"} and all(g["seeds"] == [2, 2] for g in gains)
    stop = {row["run"]: row for row in report["stopping"]}
    assert stop["ce"]["watch"] == "full ndcg@10" and stop["ce"]["patience"] == 5
    assert set(stop["ce"]["seeds"]) == {42, 43} and stop["ce"]["seeds"][42]["epochs_run"] == 2
    md = (plan.folder / "study.md").read_text()
    assert "SASRec-CE" in md and "SASRec-BCE" in md and "## Stopping" in md and "42: " in md
    cfg = json.loads((plan.folder / "ce" / "seed-42" / "config.json").read_text())
    assert cfg["model"]["loss"] == "ce" and cfg["eval"]["valid_protocol"] == "full"

    # the record alone rebuilds the same tables
    tables = (plan.folder / "study.csv").read_text()
    published = tmp_path / "published.json"
    shutil.copy(plan.folder / "study.json", published)
    shutil.rmtree(plan.folder)
    run_study(plan, progress=False, log=lambda m: None, train_runs=False, record_files=[published])
    assert (plan.folder / "study.csv").read_text() == tables

    # the CLI: --dry-run prints one train command per run with the plan's exact overrides
    out = CliRunner().invoke(
        cli,
        [
            "study",
            "compare",
            str(tmp_path / "plan.toml"),
            "--dry-run",
            "--output-dir",
            str(tmp_path / "runs"),
        ],
    )
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 2 and "model.loss=ce" in lines[1] and "--name ce" in lines[1]


class _FakeRun:
    """What comparison_gains reads: a name, its protocols, per-seed values (N@10 overall = ``level``)."""

    def __init__(self, name: str, level: float) -> None:
        self.name, self.level = name, level

    def protocols(self) -> list[str]:
        return ["full"]

    def values(self, protocol: str, group: str, metric: str) -> list[float]:
        return [self.level, self.level + 0.01] if (group, metric) == ("overall", "ndcg@10") else []


def test_gains_compare_two_references_once_later_against_earlier():
    from esrkit.reporting.compare import comparison_gains

    runs = [_FakeRun("sasrec", 0.10), _FakeRun("llminit", 0.12), _FakeRun("best", 0.15)]
    pairs = [(g["run"], g["versus"]) for g in comparison_gains(runs, ["sasrec", "llminit"])]
    assert pairs == [("llminit", "sasrec"), ("best", "sasrec"), ("best", "llminit")]
    gain = next(g for g in comparison_gains(runs, ["sasrec"]) if g["run"] == "best")
    assert gain["gain_pct"] == pytest.approx((0.155 - 0.105) / 0.105 * 100) and gain["seeds"] == [2, 2]


def test_records_name_the_plan_without_a_machines_absolute_path(tmp_path, monkeypatch):
    from esrkit.resources import REPO_ROOT, display_path

    monkeypatch.chdir(tmp_path)
    shipped = REPO_ROOT / "recipes" / "studies" / "cold-scientific.toml"
    assert display_path(shipped) == str(shipped.relative_to(REPO_ROOT))
    assert display_path(tmp_path / "plan.toml") == "plan.toml"
    assert display_path("/elsewhere/plan.toml") == "/elsewhere/plan.toml"
