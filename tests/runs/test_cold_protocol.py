"""The cold-item protocol (``data.cold_items``): options checked first, held-out items added after training
with the serving path's new-item contract, a ``cold_item`` test group."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.config import ConfigError, resolve_recipe
from esrkit.runs.load import load_run
from esrkit.runs.train import train
from esrkit.serving import ServedModel

TINY = [
    "data.synthetic={n_users=200, n_items=300}",
    "train.epochs=2",
    "train.max_batches_per_epoch=2",
    "eval.batch_size=128",
    "data.max_len=20",
    "embedding.options={dim=32, n_features=4096}",
    "model.hidden=16",
    "train.device=cpu",
]


def config(tmp_path, *overrides: str):
    cfg = resolve_recipe("demo", [*TINY, *overrides])
    cfg.output_dir, cfg.workdir = str(tmp_path / "runs"), str(tmp_path / ".esrkit")
    return cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.cold_items=1.5"], r"data.cold_items must be a fraction in \[0, 1\)"),
        (["data.cold_items=0.1", "data.cold_mode=oldest"], "data.cold_mode: unknown cold-item mode 'oldest'"),
        (["data.cold_items=0.1", "model.se_view=false", "model.id_init=random"], "cannot add items after"),
        (["data.cold_items=0.1", "embedding.pca_table=/x.npy"], "pca_table were computed from the full data"),
    ],
)
def test_bad_cold_options_fail_before_any_work(tmp_path, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        train(config(tmp_path, *overrides), progress=False)
    assert not (tmp_path / ".esrkit").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cold_items_are_added_by_the_serving_contract_and_reported(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config(tmp_path, "data.cold_items=0.2", "data.cold_seed=7", "embedding.center_items=true")
    train(cfg, progress=False)
    run_dir = tmp_path / "runs" / "demo" / "seed-42"
    results = json.loads((run_dir / "results.json").read_text())
    cold = results["cold_items"]
    assert cold["items"] + cold["warm_items"] == 300 and cold["items"] > 0
    assert cold["added_by"] == "text" and cold["mode"] == "random"
    for protocol in ("sampled", "full"):
        groups = results["test"][protocol]
        assert groups["cold_item"]["users"] == cold["test_users"] > 0
        assert groups["cold_item"]["users"] + groups["warm_item"]["users"] == 200
        assert groups["overall"]["users"] == 200
        assert "cold_item" not in results["valid"][protocol]  # validation: the warm catalogue only

    # the protocol's cold items are exactly what serving's add_items makes of their text
    warm = load_run(run_dir, "cpu", add_cold=False)
    served = ServedModel.from_run(warm)
    full = warm.inputs.cold.split.full
    n_warm = warm.inputs.cold.split.n_warm
    records = [{**full.item_attrs[i], "id": full.item_ids[i]} for i in range(n_warm, full.n_items)]
    served.add_items(records)
    added = load_run(run_dir, "cpu")
    expected = added.model.all_item_vectors().detach()
    torch.testing.assert_close(served.item_vectors(), expected, rtol=1e-5, atol=1e-6)
    assert served.item_ids == added.data.item_ids

    res = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.output)
    for group in ("overall", "cold_item", "warm_item"):
        recorded = results["test"]["full"][group]["ndcg@10"]
        assert again["full"][group]["ndcg@10"] == pytest.approx(recorded, abs=1e-9)
    res = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / "export")])
    assert res.exit_code == 0, res.output
    assert "300 items, 200 users" in res.output


@pytest.mark.slow
def test_id_only_families_get_untrained_rows_for_cold_items(tmp_path) -> None:
    cfg = config(
        tmp_path, "data.cold_items=0.1", "data.cold_mode=newest", "model.name=id", "embedding.provider=none"
    )
    summary = train(cfg, progress=False)
    results = json.loads((tmp_path / "runs" / "demo" / "seed-42" / "results.json").read_text())
    assert results["cold_items"]["added_by"] == "untrained" and results["cold_items"]["order"] == "position"
    assert np.isfinite(summary["test"]["full"]["cold_item"]["ndcg@10"]["mean"])


def test_a_run_recorded_before_the_cold_options_existed_still_resumes(tmp_path) -> None:
    from esrkit.config import RunConfig
    from esrkit.training.rundir import RunDir

    config = RunConfig().to_dict()
    old = json.loads(json.dumps(config))
    for key in ("cold_items", "cold_mode", "cold_seed"):
        del old["data"][key]
    RunDir(tmp_path / "run").create(old, {})
    import torch

    from esrkit.training import checkpoint as ckpt

    # one trained epoch: the folder holds a run to resume, not a failed start
    ckpt.save_tensors(RunDir(tmp_path / "run").last, {"w": torch.zeros(1)})
    RunDir(tmp_path / "run").create(config, {}, resume=True)  # defaults fill what the old record lacks
    config["data"]["cold_items"] = 0.1
    with pytest.raises(ValueError, match="different configuration"):
        RunDir(tmp_path / "run").create(config, {}, resume=True)
