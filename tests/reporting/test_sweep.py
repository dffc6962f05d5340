"""Sweep grid expansion, sharding, naming, resume and best-on-validation selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from esrkit.reporting.sweep import gather, select_best, write_sweep
from esrkit.runs.sweep import expand_grid, make_plan, parse_grid, parse_shard, run_sweep, setting_name, shard

GRID = ["model.alpha=1,0.5,0.1,0.05,0.01", "retrieval.n_similar=2,6,10,14,18"]
BASE = {"model.alpha": 0.1, "retrieval.n_similar": 10}


def test_parse_grid_types():
    grid = parse_grid(GRID + ["model.id_init=pca,random", "model.co_view=true,false"])
    assert grid["model.alpha"] == [1, 0.5, 0.1, 0.05, 0.01]
    assert grid["retrieval.n_similar"] == [2, 6, 10, 14, 18]
    assert grid["model.id_init"] == ["pca", "random"] and grid["model.co_view"] == [True, False]
    with pytest.raises(ValueError):
        parse_grid(["model.alpha"])
    with pytest.raises(ValueError):
        parse_grid(["model.alpha=1", "model.alpha=2"])


def test_each_is_one_factor_at_a_time_and_deduplicated():
    settings = expand_grid(parse_grid(GRID), BASE, "each")
    assert len(settings) == 9  # 5 + 5, the recipe point (0.1, 10) once
    assert settings[0] == {"model.alpha": 1.0, "retrieval.n_similar": 10}
    assert all(s["retrieval.n_similar"] == 10 or s["model.alpha"] == 0.1 for s in settings)
    assert isinstance(settings[0]["model.alpha"], float)  # 1 -> 1.0, the config's type
    assert sum(s == BASE for s in settings) == 1


def test_product_is_the_full_grid():
    settings = expand_grid(parse_grid(GRID), BASE, "product")
    assert len(settings) == 25 and len({json.dumps(s) for s in settings}) == 25
    assert settings[1] == {"model.alpha": 1.0, "retrieval.n_similar": 6}
    with pytest.raises(ValueError):
        expand_grid(parse_grid(GRID), BASE, "random")


def test_shards_partition_the_grid():
    settings = expand_grid(parse_grid(GRID), BASE, "product")
    parts = [shard(settings, i, 4) for i in range(4)]
    assert sum(len(p) for p in parts) == 25
    assert sorted(json.dumps(s) for p in parts for s in p) == sorted(json.dumps(s) for s in settings)
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_names():
    assert (
        setting_name("beauty", {"model.alpha": 0.05, "retrieval.n_similar": 10})
        == "beauty-alpha=0.05-n_similar=10"
    )
    assert setting_name("r", {"model.alpha": 1.0}) == "r-alpha=1"
    assert setting_name("r", {"model.alpha": 1.0, "train.alpha": 2}) == "r-model.alpha=1-train.alpha=2"
    assert setting_name("r", {"model.co_view": False}) == "r-co_view=false"


def _plan(tmp_path, mode="each", seeds=(1, 2)):
    grid = parse_grid(["model.alpha=0.5,0.1", "retrieval.n_similar=2,10"])
    return make_plan("demo", grid, mode, list(seeds), output_dir=str(tmp_path / "sweep"))


def _fake_trainer(scores: dict[str, tuple[float, float]], calls: list[str], write_run):
    """Writes run folders like the pipeline does: valid and test overall ndcg@10 from ``scores[name]``."""

    def train(cfg, seeds, resume=False, progress=True):
        calls.append(cfg.name)
        valid, test = scores[cfg.name]
        write_run(
            Path(cfg.output_dir),
            cfg.name,
            {s: test + s / 1000 for s in seeds},
            model="llmesr",
            valid={s: valid for s in seeds},
            base_config=cfg.to_dict(),
        )

    return train


def test_run_sweep_resumes_and_selects_on_validation_only(tmp_path, run_writer):
    plan = _plan(tmp_path)
    names = [plan.name(s) for s in plan.settings]
    assert names == [
        "demo-alpha=0.5-n_similar=10",
        "demo-alpha=0.1-n_similar=10",
        "demo-alpha=0.1-n_similar=2",
    ]
    # the best validation score is NOT the best test score: selection must follow validation
    scores = {names[0]: (0.30, 0.10), names[1]: (0.20, 0.90), names[2]: (0.25, 0.50)}
    calls: list[str] = []
    first = run_sweep(plan, 0, 2, train_fn=_fake_trainer(scores, calls, run_writer), echo=lambda m: None)
    assert calls == [names[0], names[2]] and set(first) == {names[0], names[2]}
    partial = gather(plan)
    assert not partial["complete"] and [e["status"] for e in partial["settings"]] == [
        "done",
        "pending",
        "done",
    ]
    run_sweep(plan, 1, 2, train_fn=_fake_trainer(scores, calls, run_writer), echo=lambda m: None)
    again = run_sweep(plan, train_fn=_fake_trainer(scores, calls, run_writer), echo=lambda m: None)
    assert calls == [names[0], names[2], names[1]]  # nothing retrained
    assert set(again.values()) == {"skipped (finished)"}
    sweep = write_sweep(plan)
    assert sweep["complete"] and sweep["best"]["name"] == names[0]
    assert sweep["select"]["split"] == "valid" and sweep["select"]["metric"] == "ndcg@10"
    on_disk = json.loads((plan.folder / "sweep.json").read_text())
    assert on_disk["best"] == sweep["best"]
    entry = on_disk["settings"][1]
    assert entry["test"]["sampled"]["overall"]["ndcg@10"]["mean"] == pytest.approx(0.9015)
    assert entry["seeds"] == [1, 2]
    assert (plan.folder / "figure3.png").stat().st_size > 0
    assert "**0.3000**" in (plan.folder / "sweep.md").read_text()
    # the same names with another --set: finished runs are not silently reused
    other = make_plan("demo", plan.grid, "each", [1, 2], ["train.lr=0.01"], output_dir=str(plan.folder))
    status = run_sweep(other, train_fn=_fake_trainer(scores, calls, run_writer), echo=lambda m: None)
    assert all(v.startswith("failed: a finished run") for v in status.values()) and len(calls) == 3


def test_select_best_ties_and_failures():
    entries = [
        {"name": "a", "status": "failed: x"},
        {"name": "b", "status": "done", "valid": {"mean": 0.2}},
        {"name": "c", "status": "done", "valid": {"mean": 0.2}},
        {"name": "d", "status": "pending"},
    ]
    assert select_best(entries)["name"] == "b"
    assert select_best(entries[:1]) is None


def test_failed_setting_is_recorded_and_the_rest_runs(tmp_path, run_writer):
    plan = _plan(tmp_path, seeds=(1,))
    calls: list[str] = []
    good = _fake_trainer({plan.name(s): (0.1, 0.1) for s in plan.settings}, calls, run_writer)

    def flaky(cfg, seeds, resume=False, progress=True):
        if "alpha=0.5" in cfg.name:
            raise RuntimeError("boom")
        good(cfg, seeds, resume, progress)

    status = run_sweep(plan, train_fn=flaky, echo=lambda m: None)
    assert status[plan.name(plan.settings[0])].startswith("failed: boom") and len(calls) == 2
    sweep = gather(plan, {k: v for k, v in status.items() if v.startswith("failed")})
    assert sweep["settings"][0]["status"] == "failed: boom" and not sweep["complete"]


def test_cli_dry_run_and_shard(tmp_path):
    from esrkit.cli.sweep import sweep

    args = [
        "-r",
        "demo",
        "--grid",
        "model.alpha=1,0.5,0.1",
        "--grid",
        "retrieval.n_similar=2,10",
        "--output-dir",
        str(tmp_path),
        "--dry-run",
    ]
    out = CliRunner().invoke(sweep, args + ["--shard", "1/2"])
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if "demo-" in line and "sweep demo" not in line]
    assert [line[0] for line in lines] == [" ", "*", " ", "*"]
    assert lines[0].endswith("demo-alpha=1-n_similar=10")
    bad = CliRunner().invoke(sweep, args + ["--shard", "2/2"])
    assert bad.exit_code != 0
    unknown = CliRunner().invoke(sweep, ["-r", "demo", "--grid", "model.nope=1", "--dry-run"])
    assert unknown.exit_code != 0
