"""Training behaviour: every backbone and variant learns (beats popularity), resume is exact, custom encoders
plug in.

The "beats popularity" tests train for real on a small synthetic catalogue and are marked ``slow`` (CI runs
them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from esrkit.models import MODELS
from esrkit.runs.train import _epochs_seconds
from esrkit.training.losses import LossSpec
from esrkit.training.rundir import RunDir
from tests.training.helpers import (
    HIDDEN_ID,
    MAX_LEN,
    SCHEDULE,
    SCHEDULE_ID,
    popularity_score,
    small_assets,
    small_data,
    train_and_score,
)

BACKBONES = ["sasrec", "bert4rec", "gru4rec"]


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny (hidden 16-64): a second intra-op thread costs them more in synchronisation than
    it computes, so each test trains on one (benchmarks/RESULTS.md, "CPU threads: reading the figures");
    restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _llmesr(backbone: str = "sasrec", **switches):
    torch.manual_seed(0)  # the same initial weights in every run of a test
    data = small_data()
    items, pca, _ = small_assets()
    return MODELS.get("llmesr")(
        data.n_items, items, pca[16], backbone=backbone, hidden=16, max_len=MAX_LEN, **switches
    )


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_plain_backbone_beats_popularity(backbone: str) -> None:
    data = small_data()
    torch.manual_seed(0)
    model = MODELS.get("id")(data.n_items, backbone=backbone, hidden=HIDDEN_ID[backbone], max_len=MAX_LEN)
    score, _ = train_and_score(model, data, lr=3e-3, **SCHEDULE_ID[backbone])
    assert score > popularity_score(data) + 0.005


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_llmesr_beats_popularity(backbone: str) -> None:
    data = small_data()
    _, _, neighbours = small_assets()
    score, _ = train_and_score(
        _llmesr(backbone), data, lr=3e-3, alpha=0.1, neighbours=neighbours, **SCHEDULE[backbone]
    )
    assert score > popularity_score(data) + 0.01


VARIANTS = {
    "w/o co-view": dict(co_view=False),
    "w/o se-view": dict(se_view=False),
    "w/o share": dict(share_encoder=False),
    "w/o CA": dict(cross_attention=False),
    "1-layer adapter": dict(adapter_layers=1),
    "random init": dict(id_init="random"),
    "unfrozen semantic table": dict(freeze_semantic=False),
    "causal SASRec": dict(causal=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_llmesr_variant_beats_popularity(name: str) -> None:
    data = small_data()
    _, _, neighbours = small_assets()
    score, _ = train_and_score(
        _llmesr(**VARIANTS[name]), data, lr=3e-3, alpha=0.1, neighbours=neighbours, **SCHEDULE["sasrec"]
    )
    assert score > popularity_score(data) + 0.01, name


@pytest.mark.slow
@pytest.mark.parametrize(
    "opts",
    [
        dict(alpha=0.0),
        dict(sd_loss="paper", alpha=0.1 / 32),
        dict(teacher_refresh="epoch"),
        dict(loss=LossSpec("bpr")),
    ],
    ids=["w/o SD", "SD paper scale", "teacher per epoch", "BPR"],
)
def test_training_options_learn(opts: dict) -> None:
    data = small_data()
    _, _, neighbours = small_assets()
    alpha = opts.pop("alpha", 0.1)
    score, _ = train_and_score(
        _llmesr(), data, lr=3e-3, alpha=alpha, neighbours=neighbours, **SCHEDULE["sasrec"], **opts
    )
    assert score > popularity_score(data) + 0.01


def test_sd_scales_differ_by_the_representation_size() -> None:
    """The official nn.MSELoss is Eq. 9 divided by the user-representation size (2 x 16 here)."""
    from esrkit.data.batches import seq2seq_batch
    from esrkit.data.tensors import DeviceSequences
    from esrkit.training.objectives import SelfDistillation

    data = small_data()
    _, _, neighbours = small_assets()
    seqs = DeviceSequences(data)
    model = _llmesr().eval()  # eval: no dropout, so both losses see the same representations
    batch = seq2seq_batch(seqs, np.arange(32), MAX_LEN, 1, torch.Generator().manual_seed(0))
    losses = {}
    for scale in ("mse_mean", "paper"):
        sd = SelfDistillation(seqs, neighbours, 10, 0.1, scale, MAX_LEN)
        with torch.no_grad():
            losses[scale] = sd.loss(model, batch, [np.arange(32)]).item()
    assert losses["paper"] == pytest.approx(32 * losses["mse_mean"], rel=1e-4)


def test_loss_decreases_and_teachers_get_no_gradient(monkeypatch) -> None:
    """A few steps on one batch lower the loss; the teacher forward never builds an autograd graph."""
    from esrkit.training import objectives

    data = small_data()
    _, _, neighbours = small_assets()
    seen = []
    original, original_last = objectives.encode_bucketed, objectives.last_hidden_bucketed

    def spy(model, inp, buckets, lengths=None):
        out = original(model, inp, buckets, lengths)
        seen.append(any(h.requires_grad for _, h in out))
        return out

    def spy_last(model, inp, buckets, lengths=None):  # teachers and (CPU) the student: the last position
        out = original_last(model, inp, buckets, lengths)
        seen.append(out.requires_grad)
        return out

    monkeypatch.setattr(objectives, "encode_bucketed", spy)
    monkeypatch.setattr(objectives, "last_hidden_bucketed", spy_last)
    model = _llmesr()
    _, trainer = train_and_score(model, data, epochs=0, alpha=0.1, neighbours=neighbours)
    gen = torch.Generator().manual_seed(0)
    rows = np.arange(64)
    first = trainer.step(rows, gen)["loss"]
    for _ in range(15):
        last = trainer.step(rows, gen)["loss"]
    assert last < first
    # per step: the ranking and student passes need gradients (two calls on a CPU), the teacher pass must not
    assert seen.count(True) == 2 * 16 and seen.count(False) == 16


def test_resume_reproduces_an_uninterrupted_run(tmp_path) -> None:
    data = small_data()
    _, _, neighbours = small_assets()

    def run(path, epochs, resume=False):
        rd = RunDir(path)
        rd.checkpoints.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)  # same initial weights for every run
        model = _llmesr()
        score, trainer = train_and_score(
            model,
            data,
            epochs=epochs,
            alpha=0.1,
            neighbours=neighbours,
            run_dir=rd,
            resume=resume,
            max_batches_per_epoch=3,
            batch_size=32,
        )
        return score, model, trainer

    full_score, full_model, full_trainer = run(tmp_path / "a", 3)
    _, _, interrupted = run(tmp_path / "b", 1)  # "interrupted" after one epoch
    resumed_score, resumed_model, resumed_trainer = run(tmp_path / "b", 3, resume=True)
    assert resumed_trainer.state.epoch == 3
    for (name, a), (_, b) in zip(full_model.state_dict().items(), resumed_model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert resumed_score == full_score
    assert [h["score"] for h in resumed_trainer.state.history] == [
        h["score"] for h in full_trainer.state.history
    ]
    # the run's reported training time covers the interrupted process's epoch too, not only the resumed ones
    first_epoch = interrupted.state.history[0]
    assert resumed_trainer.state.history[0]["train_seconds"] == first_epoch["train_seconds"]
    assert (
        _epochs_seconds(resumed_trainer.state.history)
        > first_epoch["train_seconds"] + first_epoch["valid_seconds"]
    )


class MeanPoolEncoder(nn.Module):
    """A user-defined encoder: running mean of the item vectors, then an MLP (causal by construction)."""

    def __init__(self, hidden: int, **_) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self, x, mask, **_):
        m = mask.unsqueeze(-1).to(x.dtype)
        mean = torch.cumsum(x * m, 1) / torch.cumsum(m, 1).clamp_min(1.0)
        return self.mlp(mean)


def test_custom_encoder_plugs_in_and_learns(scratch_encoders) -> None:
    scratch_encoders.register("meanpool-test", objective="seq2seq", inputs="plain")(MeanPoolEncoder)
    data = small_data()
    _, _, neighbours = small_assets()
    plain = MODELS.get("id")(data.n_items, backbone="meanpool-test", hidden=32, max_len=MAX_LEN)
    wrapped = _llmesr(backbone="meanpool-test")
    before, _ = train_and_score(wrapped, data, epochs=0, alpha=0.1, neighbours=neighbours)
    after, _ = train_and_score(
        _llmesr(backbone="meanpool-test"), data, epochs=4, batch_size=32, alpha=0.1, neighbours=neighbours
    )
    assert after > before + 0.02
    untrained, _ = train_and_score(
        MODELS.get("id")(data.n_items, backbone="meanpool-test", hidden=32, max_len=MAX_LEN), data, epochs=0
    )
    score, _ = train_and_score(plain, data, epochs=2, batch_size=32)
    assert score > untrained + 0.02  # the plain family learns through the plugged-in encoder too


def test_deterministic_teachers_are_encoded_once_with_identical_results(monkeypatch) -> None:
    """GRU4Rec has no dropout: repeated teachers are encoded once, and the teacher means do not change."""
    from esrkit.data.tensors import DeviceSequences
    from esrkit.training import objectives

    data = small_data()
    _, _, neighbours = small_assets()
    model = _llmesr("gru4rec").train()
    seqs = DeviceSequences(data)
    sd = objectives.SelfDistillation(seqs, neighbours, 10, 0.1, max_len=MAX_LEN)
    users = np.arange(40)
    with torch.no_grad():
        fast = sd.teachers(model, users)
        monkeypatch.setattr(objectives, "_stochastic", lambda m: True)  # force one encoding per occurrence
        slow = sd.teachers(model, users)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    assert len(np.unique(neighbours[users, :10])) < users.size * 10  # the batch really had repeats


def _diverging_from(epoch_k: int):
    """Trainer.train_epoch that, from epoch ``epoch_k`` on, leaves NaN weights and a NaN loss (what an
    exploding gradient does), so the tests need not find hyper-parameters that really diverge."""
    from esrkit.training.trainer import Trainer

    original = Trainer.train_epoch

    def train_epoch(self, epoch):
        stats = original(self, epoch)
        if epoch >= epoch_k:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
            stats["loss"] = float("nan")
        return stats

    return train_epoch


def test_a_nan_loss_stops_training_and_keeps_the_best_epoch_before_it(tmp_path, monkeypatch) -> None:
    from esrkit.training.trainer import Trainer, TrainingDiverged

    data = small_data()
    monkeypatch.setattr(Trainer, "train_epoch", _diverging_from(2))
    rd = RunDir(tmp_path / "run")
    rd.checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    model = MODELS.get("id")(data.n_items, backbone="gru4rec", hidden=16, max_len=MAX_LEN)
    score, trainer = train_and_score(
        model, data, epochs=6, run_dir=rd, max_batches_per_epoch=3, batch_size=32
    )
    s = trainer.state
    assert (s.epoch, s.diverged_epoch, s.stopped) == (3, 2, True)  # no epoch after the NaN one
    assert s.best_epoch in (0, 1) and [h.get("diverged", False) for h in s.history] == [False, False, True]
    assert "score" not in s.history[2]  # a NaN model is not validated
    from esrkit.training import checkpoint as ckpt

    ckpt.load_model(rd.best, model)  # the best checkpoint is finite and is what a run reports
    assert all(torch.isfinite(p).all() for p in model.parameters())

    resumed_model = MODELS.get("id")(data.n_items, backbone="gru4rec", hidden=16, max_len=MAX_LEN)
    _, resumed = train_and_score(
        resumed_model, data, epochs=6, run_dir=rd, resume=True, max_batches_per_epoch=3, batch_size=32
    )
    assert (resumed.state.epoch, resumed.state.diverged_epoch) == (3, 2)  # resuming does not train on

    monkeypatch.setattr(Trainer, "train_epoch", _diverging_from(0))
    fresh = MODELS.get("id")(data.n_items, backbone="gru4rec", hidden=16, max_len=MAX_LEN)
    with pytest.raises(TrainingDiverged, match="diverged at epoch 0 .* lower train.lr"):
        train_and_score(fresh, data, epochs=6, max_batches_per_epoch=3, batch_size=32)


def _gru4rec(objective: str):
    from esrkit.config import ModelConfig
    from esrkit.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="id", backbone="gru4rec", hidden=HIDDEN_ID["gru4rec"], objective=objective)
    return build_model(cfg, small_data().n_items, MAX_LEN)


def test_an_objective_override_scores_every_position_of_a_gru4rec_sequence(monkeypatch) -> None:
    """``model.objective=seq2seq``: every training item after the first is a target, where the official
    GRU4Rec objective scores only the item after the sequence (one per user)."""
    from esrkit.data.tensors import DeviceSequences
    from esrkit.training import objectives
    from esrkit.training.losses import LossContext
    from esrkit.training.trainer import Trainer, TrainerOptions

    data = small_data()
    seqs = DeviceSequences(data)
    users = np.arange(32)
    seen = {}

    def count(model, h, pos, neg, loss):
        seen[model.objective] = (h.shape[0], pos.tolist())
        return h.sum() * 0

    monkeypatch.setattr(objectives, "ranking_loss_from_states", count)
    for objective in ("", "seq2seq"):
        model = _gru4rec(objective)
        trainer = Trainer(model, seqs, TrainerOptions(max_len=MAX_LEN), lambda m, e: {}, progress=False)
        batch = trainer.make_batch(users, torch.Generator().manual_seed(0))  # the trainer's own dispatch
        objectives.ranking_loss(model, batch, LossContext(LossSpec()))
    lengths = np.minimum(seqs.train_lengths(users) - 1, MAX_LEN)
    assert seen["last"][0] == users.size
    assert seen["seq2seq"][0] == lengths.sum() > 3 * users.size
    # the last item of each user's training part is a target under both
    assert set(seen["last"][1]) <= set(seen["seq2seq"][1])


@pytest.mark.slow
def test_gru4rec_trained_on_every_position_learns_faster() -> None:
    data = small_data()
    short = dict(epochs=8, batch_size=16, lr=3e-3)
    official, _ = train_and_score(_gru4rec(""), data, **short)
    every, _ = train_and_score(_gru4rec("seq2seq"), data, **short)
    assert every > popularity_score(data) + 0.01
    assert every > official + 0.02, (every, official)
