"""Registry, options, recipes, checkpoints and the end-to-end pipeline for the baselines."""

from __future__ import annotations

import pytest
import torch

from esrkit.config import ModelConfig, config_from_dict, resolve_recipe
from esrkit.data.tensors import make_input
from esrkit.models import MODELS, ModelAssets, build_model
from esrkit.training import checkpoint as ckpt
from tests.baselines.helpers import BASELINES, MAX_LEN, make_model, run_steps
from tests.training.helpers import small_assets, small_data

RECIPES = (
    "beauty5-cities-sasrec",
    "beauty5-melt-sasrec",
    "beauty5-rlmrec-sasrec",
    "fashion-paper-cities-sasrec",
    "fashion-paper-melt-sasrec",
    "yelp-paper-cities-sasrec",
    "yelp-paper-melt-sasrec",
)


def test_registered_with_their_requirements() -> None:
    for name in BASELINES:
        assert name in MODELS
    cfg = ModelConfig(name="rlmrec")
    assert MODELS.get("rlmrec").requirements(cfg) == {"llm_items"}
    assert MODELS.get("cities").requirements(cfg) == set() and MODELS.get("melt").requirements(cfg) == set()


def test_options_come_from_model_extra() -> None:
    data = small_data()
    items, _, _ = small_assets()
    cfg = ModelConfig(name="melt", hidden=16, extra={"melt": {"lamb_u": 0.3, "e_max": 200.0}})
    model = build_model(cfg, data.n_items, MAX_LEN)
    assert model.options.lamb_u == 0.3 and model.options.e_max == 200 and model.options.lamb_i == 0.4
    cfg = ModelConfig(name="rlmrec", hidden=16, extra={"rlmrec": {"mode": "gen"}})
    model = build_model(cfg, data.n_items, MAX_LEN, ModelAssets(llm_items=items))
    assert (model.weight, model.temperature) == (0.1, 0.5)
    with pytest.raises(ValueError, match="unknown option"):
        cfg = ModelConfig(name="cities", hidden=16, extra={"cities": {"tail_treshold": 3}})
        build_model(cfg, data.n_items, MAX_LEN)
    with pytest.raises(ValueError, match="expected"):
        build_model(
            ModelConfig(name="cities", hidden=16, extra={"cities": {"layers": "two"}}), data.n_items, MAX_LEN
        )
    with pytest.raises(ValueError, match="LLM item embeddings"):
        build_model(ModelConfig(name="rlmrec", hidden=16), data.n_items, MAX_LEN)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_resolve_on_every_backbone(recipe: str) -> None:
    for backbone in ("sasrec", "bert4rec", "gru4rec"):
        cfg = resolve_recipe(recipe, [f"model.backbone={backbone}"])
        assert cfg.model.name in BASELINES and cfg.model.hidden == 128 and cfg.model.backbone == backbone
        assert (cfg.embedding.provider == "none") == (cfg.model.name != "rlmrec")


@pytest.mark.parametrize("name", ["cities", "melt"])
def test_a_checkpoint_predicts_without_setup(name: str, tmp_path) -> None:
    """``esrkit evaluate`` rebuilds the model and loads the best checkpoint, without ``setup``."""
    data = small_data()
    model = make_model(name)
    run_steps(model, steps=2)
    model.eval()
    ckpt.save_model(tmp_path / "best.safetensors", model)
    cls = type(model)
    reloaded = cls(
        data.n_items, options=model.options, backbone="sasrec", hidden=32, max_len=MAX_LEN, dropout=0.1
    )
    ckpt.load_model(tmp_path / "best.safetensors", reloaded)
    reloaded.eval()
    inp = make_input(torch.tensor([[0, 0, 0, 5, 7], [1, 2, 3, 4, 5]]), MAX_LEN)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.all_item_vectors(), model.all_item_vectors())
        torch.testing.assert_close(reloaded.encode(inp), model.encode(inp))


@pytest.mark.parametrize("name", BASELINES)
def test_pipeline_trains_evaluates_and_reloads(name: str, tmp_path) -> None:
    from esrkit.runs.load import load_run
    from esrkit.runs.train import train

    extra = {
        "cities": {"pretrain_epochs": 1, "item_batch": 16, "layers": 1},
        "melt": {"pretrain_epochs": 1},
        "rlmrec": {},
    }[name]
    cfg = config_from_dict(
        {
            "name": f"tiny-{name}",
            "output_dir": str(tmp_path / "runs"),
            "workdir": str(tmp_path / "work"),
            "data": {
                "source": "synthetic",
                "name": "tiny",
                "group_rule": "pareto",
                "max_len": MAX_LEN,
                "synthetic": {"n_users": 200, "n_items": 120, "max_length": 20, "seed": 3},
            },
            "embedding": {"provider": "offline" if name == "rlmrec" else "none"},
            "model": {"name": name, "hidden": 16, "extra": {name: extra}},
            "train": {"epochs": 2, "max_batches_per_epoch": 3, "batch_size": 32, "device": "cpu"},
            "eval": {"protocols": ["sampled"], "negatives": 20},
        }
    )
    summary = train(cfg, progress=False)
    assert summary["test"]["sampled"]["overall"]["ndcg@10"]["mean"] > 0
    run = load_run(tmp_path / "runs" / f"tiny-{name}" / "seed-42", "cpu")
    if name != "rlmrec":
        assert run.model.baseline_active  # the best checkpoint is a stage-2 model
