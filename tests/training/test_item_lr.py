"""``train.item_lr``: the model's item tables train at their own rate (esrkit/training/trainer.py)."""

from __future__ import annotations

import pytest
import torch

from esrkit import config
from esrkit.data.tensors import DeviceSequences
from esrkit.models import MODELS
from esrkit.training.losses import LossSpec
from esrkit.training.rundir import RunDir
from esrkit.training.trainer import Trainer, TrainerOptions, parameter_groups
from tests.training.helpers import small_data, train_and_score


def _one_step_moves(item_lr: float) -> tuple[float, float]:
    """Largest change of the item table and of any other weight after one Adam step (softmax over every item,
    so every row of the table has a gradient)."""
    data = small_data()
    torch.manual_seed(0)
    model = MODELS.get("id")(data.n_items, hidden=16, causal=True, max_len=50)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    options = TrainerOptions(lr=1e-3, item_lr=item_lr, max_len=50, loss=LossSpec("ce"), batch_size=32)
    trainer = Trainer(model, DeviceSequences(data), options, lambda m, e: {}, progress=False)
    trainer.step(trainer.epoch_order(0)[:32], torch.Generator().manual_seed(0))
    moves = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    table = moves.pop("items.weight")
    return table, max(moves.values())


def test_the_item_table_steps_at_item_lr_and_every_other_weight_at_lr() -> None:
    """Adam's first step moves a weight with a gradient by its group's learning rate (m / sqrt(v) = +-1)."""
    table, rest = _one_step_moves(item_lr=1e-2)
    assert table == pytest.approx(1e-2, rel=1e-3)
    assert rest == pytest.approx(1e-3, rel=1e-3)
    table, rest = _one_step_moves(item_lr=0.0)  # 0: one rate for all
    assert table == pytest.approx(1e-3, rel=1e-3) and rest == pytest.approx(1e-3, rel=1e-3)


def test_item_lr_needs_a_model_with_item_tables() -> None:
    model = MODELS.get("id")(20, hidden=8, max_len=10)
    assert parameter_groups(model, 0.0) == [p for p in model.parameters() if p.requires_grad]
    model.item_tables = lambda: []
    with pytest.raises(ValueError, match=r"train\.item_lr: IDRecommender has no trainable item tables"):
        parameter_groups(model, 1e-2)


def test_item_lr_is_validated() -> None:
    assert config.resolve_recipe(None, ["train.item_lr=0.001"]).train.item_lr == 0.001
    with pytest.raises(config.ConfigError, match=r"train\.item_lr"):
        config.resolve_recipe(None, ["train.item_lr=-1"])


def test_resuming_keeps_both_rates(tmp_path) -> None:
    """The optimizer's two groups are saved in the training checkpoint: stopped after one epoch and resumed,
    the run ends with the weights of one that ran through."""

    def run(path, epochs, resume=False):
        rd = RunDir(path)
        rd.checkpoints.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = MODELS.get("id")(small_data().n_items, hidden=16, causal=True, max_len=50)
        opts = dict(max_batches_per_epoch=3, batch_size=32, item_lr=1e-2)
        _, trainer = train_and_score(model, small_data(), epochs=epochs, run_dir=rd, resume=resume, **opts)
        return model, trainer

    full, _ = run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    resumed, trainer = run(tmp_path / "b", 2, resume=True)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-2, 1e-3]
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
