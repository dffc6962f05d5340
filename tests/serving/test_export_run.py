"""``esrkit export`` of a trained run: the folder alone, with the dataset, caches and run deleted, recommends
exactly what the run does."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import esrkit
from esrkit.cli.main import cli
from esrkit.data.batches import prediction_input
from esrkit.providers.base import Provider
from esrkit.runs.load import load_run

TINY = [
    "--set",
    "data.synthetic={n_users=200, n_items=300}",
    "--set",
    "train.epochs=1",
    "--set",
    "train.max_batches_per_epoch=2",
    "--set",
    "eval.batch_size=128",
    "--set",
    "data.max_len=20",
    "--set",
    "model.hidden=16",
    "--set",
    "embedding.options={dim=32, n_features=4096}",
]


def run_top_k(run, rows: np.ndarray, k: int) -> list[list[str]]:
    """The run's own evaluation path: each user's whole sequence -> last_hidden -> all items, history
    excluded."""
    model, data = run.model, run.data
    inp = prediction_input(run.seqs, rows, "next", run.cfg.data.max_len, model.objective, model.mask_token)
    with torch.no_grad():
        scores = model.last_hidden(inp) @ model.all_item_vectors().T
    scores[:, 0] = float("-inf")
    for r, row in enumerate(rows):
        scores[r, torch.as_tensor(data.sequence(row).astype(np.int64))] = float("-inf")
    return [[data.item_ids[i - 1] for i in top] for top in torch.topk(scores, k).indices.tolist()]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_an_export_recommends_what_the_run_does_with_everything_else_gone(
    tmp_path, monkeypatch, backbone
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["train", "--recipe", "demo", "--name", "tiny", "-q", "--set", f"model.backbone={backbone}", *TINY],
    )
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "runs" / "tiny" / "seed-42"
    run = load_run(run_dir, "cpu")
    rows = np.arange(0, run.data.n_users, 7)
    expected = run_top_k(run, rows, 10)
    user_ids = [run.data.user_ids[r] for r in rows]
    by_run = runner.invoke(cli, ["recommend", str(run_dir), "--user", user_ids[1], "-k", "10"]).output
    res = runner.invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / "export")])
    assert res.exit_code == 0, res.output

    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copytree(tmp_path / "export", clean / "model")
    for gone in ("runs", ".esrkit", "export"):  # the dataset cache, embedding cache, run and first copy
        shutil.rmtree(tmp_path / gone)
    monkeypatch.chdir(clean)

    def refuse(*args, **kwargs):
        raise AssertionError("an LLM provider was called")

    monkeypatch.setattr(Provider, "embed", refuse)
    served = esrkit.load("model")
    assert [[r.item for r in served.recommend_known(u, 10)] for u in user_ids] == expected
    histories = [[run.data.item_ids[i - 1] for i in run.data.sequence(r)] for r in rows]
    assert [[r.item for r in recs] for recs in served.recommend_users(histories, 10)] == expected
    assert runner.invoke(cli, ["recommend", "model", "--user", user_ids[1], "-k", "10"]).output == by_run
