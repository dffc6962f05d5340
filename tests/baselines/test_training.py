"""Every baseline trains on every backbone, and a short SASRec training beats the popularity baseline."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from esrkit.models.idrec import IDRecommender
from tests.baselines.helpers import BACKBONES, BASELINES, MAX_LEN, make_model, run_steps
from tests.training.helpers import popularity_score, small_data, train_and_score


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", BASELINES)
def test_training_step_runs_and_loss_decreases(name: str, backbone: str) -> None:
    model = make_model(name, backbone)
    losses = run_steps(model, steps=10)
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), (name, backbone, losses)


# ---------------------------------------------------------------------------------------------- vs popularity
TRAIN = {"batch_size": 32, "max_len": MAX_LEN, "lr": 3e-3}


@functools.lru_cache(maxsize=1)
def pretrained_sasrec() -> dict[str, torch.Tensor]:
    """A plain SASRec trained briefly: the pretrained backbone CITIES and MELT start from (as officially)."""
    data = small_data()
    torch.manual_seed(0)
    model = IDRecommender(data.n_items, backbone="sasrec", hidden=64, max_len=MAX_LEN, dropout=0.2)
    train_and_score(model, data, epochs=5, **TRAIN)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _from_pretrained(name: str, **options):
    model = make_model(name, "sasrec", hidden=64, dropout=0.2, **options)
    missing, unexpected = model.load_state_dict(pretrained_sasrec(), strict=False)
    assert not unexpected and all(not k.startswith(("items.", "encoder.", "inputs.")) for k in missing)
    return model


def test_cities_beats_popularity() -> None:
    data = small_data()
    model = _from_pretrained("cities")
    score, _ = train_and_score(model, data, epochs=2, **TRAIN)
    assert model.baseline_active and bool(model.is_tail.any())
    assert score > popularity_score(data) + 0.03, score


def test_melt_beats_popularity() -> None:
    data = small_data()
    model = _from_pretrained("melt", pareto=0.5)  # the official setting for non-Amazon data
    score, _ = train_and_score(model, data, epochs=4, **TRAIN)
    assert model.baseline_active
    assert score > popularity_score(data) + 0.03, score


def test_rlmrec_beats_popularity() -> None:
    data = small_data()
    model = make_model("rlmrec", "sasrec", hidden=64, dropout=0.2)
    score, trainer = train_and_score(model, data, epochs=6, **TRAIN)
    assert "aux" in trainer.state.history[-1]
    assert score > popularity_score(data) + 0.03, score
