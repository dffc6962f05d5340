"""Progress that survives -q: one line per epoch in the run folder's train.log and on stderr (-qq: silent)."""

from __future__ import annotations

import json
import math
import re

from click.testing import CliRunner

from esrkit.cli.main import cli

TINY = [
    "--recipe",
    "demo",
    "--set",
    "data.synthetic={n_users=200, n_items=300}",
    "--set",
    "train.max_batches_per_epoch=2",
    "--set",
    "eval.batch_size=128",
    "--set",
    "data.group_rule=official",
    "--set",
    "data.ts_user=1",
    "--output-dir",
    "runs",
    "--workdir",
    "wd",
]


def test_epoch_lines_with_q_and_silence_with_qq(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["train", *TINY, "--name", "q", "--set", "train.epochs=2", "-q"])
    assert res.exit_code == 0, res.output
    epochs = [line for line in res.stderr.splitlines() if line.startswith("[q/seed-42] epoch ")]
    assert len(epochs) == 2
    assert "loss" in epochs[0] and "valid sampled ndcg@10" in epochs[0] and " s train + " in epochs[0]
    log = (tmp_path / "runs" / "q" / "seed-42" / "train.log").read_text().splitlines()
    assert sum(bool(re.search(r" epoch \d+: loss", line)) for line in log) == 2
    assert "test (best epoch" in log[-1]
    # ts_user = 1 leaves no tail user: said on stderr and in the log, with the rule to use
    assert res.stderr.count("Use --set data.group_rule=pareto") >= 1
    assert any(line.split(" ", 2)[2].startswith("warning: the official group rule") for line in log)
    for line in (tmp_path / "runs" / "q" / "seed-42" / "metrics.jsonl").read_text().splitlines():
        groups = json.loads(line)["valid"]["sampled"]
        assert all(math.isfinite(v) for g in groups.values() for v in g.values())  # empty buckets left out
    results = json.loads((tmp_path / "runs" / "q" / "seed-42" / "results.json").read_text())
    assert all(math.isfinite(v) for p in results["test"].values() for g in p.values() for v in g.values())

    res = runner.invoke(cli, ["train", *TINY, "--name", "qq", "--set", "train.epochs=1", "-qq"])
    assert res.exit_code == 0, res.output
    assert not re.search(r"epoch \d+: loss", res.stderr) and "[qq/" not in res.stderr
    assert "group rule" in res.stderr  # warnings still show
    assert " epoch 0: " in (tmp_path / "runs" / "qq" / "seed-42" / "train.log").read_text()
