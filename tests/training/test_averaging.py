"""The weight average (``train.ema``, esrkit/training/averaging.py) and how the trainer uses it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esrkit.models import MODELS
from esrkit.training import checkpoint as ckpt
from esrkit.training.averaging import WeightAverage
from esrkit.training.rundir import RunDir
from tests.training.helpers import small_data, train_and_score


def _linear(value: float) -> nn.Linear:
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(value)
    return layer


def test_the_average_follows_its_recurrence_and_starts_at_the_first_weights() -> None:
    layer, average = _linear(1.0), WeightAverage(_linear(0.0), 0.9)
    expected = None
    for w in [1.0, 3.0, -2.0, 5.0]:
        with torch.no_grad():
            layer.weight.fill_(w)
        average.update(layer)
        expected = w if expected is None else 0.9 * expected + 0.1 * w
        assert average.shadow["weight"][0, 0].item() == pytest.approx(expected, rel=1e-6)


def test_applied_swaps_the_average_in_and_restores_the_weights_exactly() -> None:
    layer = _linear(2.0)
    average = WeightAverage(layer, 0.5)
    with average.applied(layer):  # no average yet: the weights stay
        assert layer.weight[0, 0].item() == 2.0
    average.update(layer)
    with torch.no_grad():
        layer.weight.fill_(4.0)
    average.update(layer)  # (2 + 4) / 2
    with average.applied(layer):
        assert layer.weight[0, 0].item() == 3.0
    assert layer.weight[0, 0].item() == 4.0
    with pytest.raises(RuntimeError), average.applied(layer):
        raise RuntimeError("a failing validation")
    assert layer.weight[0, 0].item() == 4.0  # restored on the way out of an error too


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_a_decay_outside_the_open_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="train.ema"):
        WeightAverage(_linear(0.0), decay)


def _sasrec(data):
    torch.manual_seed(0)
    return MODELS.get("id")(data.n_items, hidden=16, causal=True, max_len=50)


def test_training_is_unchanged_and_validation_sees_the_average() -> None:
    """The average changes what is validated and kept, never the training trajectory: the same seed trains
    the same raw weights with and without it, and every validation scores the average."""
    data = small_data()
    plain = _sasrec(data)
    _, plain_trainer = train_and_score(plain, data, epochs=3, max_batches_per_epoch=4, batch_size=32)
    averaged = _sasrec(data)
    seen = []
    _, trainer = train_and_score(averaged, data, epochs=3, max_batches_per_epoch=4, batch_size=32, ema=0.9)
    for (name, a), (_, b) in zip(plain.state_dict().items(), averaged.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [h["loss"] for h in trainer.state.history] == [h["loss"] for h in plain_trainer.state.history]
    assert [h["score"] for h in trainer.state.history] != [h["score"] for h in plain_trainer.state.history]

    validate = trainer.validate

    def spy(model, epoch):
        seen.append({n: p.detach().clone() for n, p in model.named_parameters()})
        return validate(model, epoch)

    trainer.validate = spy
    trainer.opt_cfg.epochs = 4
    trainer.fit()
    for name, value in seen[-1].items():
        torch.testing.assert_close(value, trainer.average.shadow[name], rtol=0, atol=0, msg=name)


def test_the_best_checkpoint_holds_the_average_and_resuming_continues_it(tmp_path) -> None:
    data = small_data()

    def run(path, epochs, resume=False):
        rd = RunDir(path)
        rd.checkpoints.mkdir(parents=True, exist_ok=True)
        model = _sasrec(data)
        opts = dict(max_batches_per_epoch=3, batch_size=32, ema=0.8)
        _, trainer = train_and_score(model, data, epochs=epochs, run_dir=rd, resume=resume, **opts)
        return model, trainer, rd

    _, full, full_rd = run(tmp_path / "a", 3)
    run(tmp_path / "b", 1)  # "interrupted" after one epoch
    model, resumed, rd = run(tmp_path / "b", 3, resume=True)
    for name, value in full.average.shadow.items():
        torch.testing.assert_close(resumed.average.shadow[name], value, rtol=0, atol=0, msg=name)
    assert [h["score"] for h in resumed.state.history] == [h["score"] for h in full.state.history]
    best, _ = ckpt.load_tensors(rd.best)
    full_best, _ = ckpt.load_tensors(full_rd.best)
    for name, value in full_best.items():
        torch.testing.assert_close(best[name], value, rtol=0, atol=0, msg=name)


def test_the_best_checkpoint_is_the_average_not_the_trained_weights(tmp_path) -> None:
    data = small_data()
    rd = RunDir(tmp_path / "run")
    rd.checkpoints.mkdir(parents=True)
    model = _sasrec(data)
    _, trainer = train_and_score(model, data, epochs=1, run_dir=rd, max_batches_per_epoch=5, ema=0.5)
    best, _ = ckpt.load_tensors(rd.best)  # epoch 0, the only one, is the best
    for name, value in trainer.average.shadow.items():
        torch.testing.assert_close(best[name], value, rtol=0, atol=0, msg=name)
    trained = dict(model.named_parameters())
    assert any(not torch.equal(best[n], trained[n].detach()) for n in trainer.average.shadow)
