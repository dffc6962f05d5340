"""``model.popularity_tilt``: at ranking time item i gains α (h_u - c) z_i, h_u the mean popularity z of the
user's last M items and c that of the average training interaction; serving, the sampled candidates and
checkpoints written before the centre existed all give the same term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import esrkit
from esrkit.config import ConfigError
from esrkit.models.popularity import training_items
from esrkit.models.recommender import add_ranking_bonus
from tests.serving.helpers import catalogue, config, served_model

OPTIONS = ("model.name=llminit", "model.text_neighbours=3")


def with_popularity(*overrides: str):
    served = served_model(*OPTIONS, *overrides)
    served.model.setup(catalogue())  # training popularity, as training sets it
    return served


def counts() -> np.ndarray:
    data = catalogue()
    return np.bincount(training_items(data), minlength=data.n_items + 1)


def z_by_hand() -> np.ndarray:
    logs = np.log1p(counts()[1:].astype(np.float64))
    return np.concatenate([[0.0], (logs - logs.mean()) / logs.std()])


def test_the_centre_is_the_mean_popularity_of_a_training_interaction() -> None:
    tn = with_popularity().model.text_neighbours
    z, n = z_by_hand(), counts()
    np.testing.assert_allclose(tn.popularity_z.numpy()[: len(z)], z, atol=1e-5)
    assert float(tn.popularity_centre) == pytest.approx((n[1:] * z[1:]).sum() / n[1:].sum(), abs=1e-5)
    assert float(tn.popularity_centre) > 0  # interactions sit on popular items: above the item average 0


def test_each_item_gains_alpha_times_the_users_offset_times_its_popularity() -> None:
    plain = with_popularity()
    tilted = with_popularity("model.popularity_tilt=0.4", "model.popularity_tilt_items=2")
    z, centre = z_by_hand(), float(tilted.model.text_neighbours.popularity_centre)
    by_z = np.argsort(z[1:]) + 1
    niche, mainstream = [int(i) for i in by_z[:2]], [int(i) for i in by_z[-2:]]  # the rarest / most popular
    for last in (niche, mainstream):
        history = [tilted.item_ids[i - 1] for i in reversed(last)]  # the last two items are `last`
        diff = tilted.scores(history) - plain.scores(history)
        expected = 0.4 * (z[last].mean() - centre) * z
        np.testing.assert_allclose(diff, expected, atol=1e-4)
    # a user of rare items: popular items lowered, rare ones raised; a mainstream user the reverse
    assert z[niche].mean() < centre < z[mainstream].mean()


def test_only_the_last_m_items_count_and_an_empty_history_gets_no_tilt() -> None:
    model = with_popularity("model.popularity_tilt=0.4", "model.popularity_tilt_items=2").model
    assert model.bonus_history == 2
    z, centre = z_by_hand(), float(model.text_neighbours.popularity_centre)
    recent = torch.tensor([[5, 9, 100], [5, 0, 0], [0, 0, 0]])  # most recent first; the third is not read
    scores = add_ranking_bonus(torch.zeros(3, model.n_items + 1), model, recent[:, :2])
    np.testing.assert_allclose(scores[0].numpy(), 0.4 * (z[[5, 9]].mean() - centre) * z, atol=1e-5)
    np.testing.assert_allclose(scores[1].numpy(), 0.4 * (z[5] - centre) * z, atol=1e-5)
    assert (scores[2] == 0).all() and (scores[:, 0] == 0).all()  # no history: none; padding never


def test_candidate_scores_get_the_same_tilt_and_it_adds_to_the_text_term() -> None:
    both = with_popularity("model.popularity_tilt=0.4", "model.text_boost=0.6", "model.text_boost_items=3")
    tilt = with_popularity("model.popularity_tilt=0.4")
    text = with_popularity("model.text_boost=0.6", "model.text_boost_items=3")
    recent = torch.tensor([[23, 11, 4], [5, 0, 0]])
    n = both.model.n_items + 1
    sums = [
        add_ranking_bonus(torch.zeros(2, n), m.model, recent[:, : m.model.bonus_history])
        for m in (tilt, text)
    ]
    full = add_ranking_bonus(torch.zeros(2, n), both.model, recent)
    torch.testing.assert_close(full, sums[0] + sums[1])
    candidates = torch.tensor([[1, 23, 40, 0], [7, 8, 9, 150]])
    picked = add_ranking_bonus(torch.zeros(2, 4), both.model, recent, candidates)
    torch.testing.assert_close(picked, full.gather(1, candidates))


def test_a_plugin_returning_one_dense_pair_as_before_still_ranks() -> None:
    """The earlier contract of ``ranking_similarity``: one (query, table) pair or None, not a list."""
    model = with_popularity("model.popularity_tilt=0.4").model
    recent = torch.tensor([[5], [9]])
    expected = add_ranking_bonus(torch.zeros(2, model.n_items + 1), model, recent)
    pair = model.ranking_similarity(recent, model.n_items + 1)[0]
    model.ranking_similarity = lambda r, n: pair  # an old-style plug-in's answer
    torch.testing.assert_close(add_ranking_bonus(torch.zeros(2, model.n_items + 1), model, recent), expected)
    model.ranking_similarity = lambda r, n: None
    assert (add_ranking_bonus(torch.zeros(2, model.n_items + 1), model, recent) == 0).all()


def test_a_checkpoint_from_before_the_centre_loads_and_recovers_it_from_the_training_data() -> None:
    trained = with_popularity("model.popularity_tilt=0.4").model
    state = {k: v for k, v in trained.state_dict().items() if not k.endswith("popularity_centre")}
    rebuilt = served_model(*OPTIONS, "model.popularity_tilt=0.4").model  # never set up: centre unknown
    rebuilt.load_state_dict(state)  # strict, as checkpoints load: the missing centre is not an error
    tn = rebuilt.text_neighbours
    assert torch.isnan(tn.popularity_centre)
    with pytest.raises(ValueError, match="does not know its training popularity's centre"):
        add_ranking_bonus(torch.zeros(1, rebuilt.n_items + 1), rebuilt, torch.tensor([[5]]))
    rebuilt.restore_state(catalogue())
    assert float(tn.popularity_centre) == pytest.approx(float(trained.text_neighbours.popularity_centre))
    other = counts().copy()
    other[5] += 40  # not the counts the checkpoint's popularity came from
    tn.popularity_centre.fill_(float("nan"))
    with pytest.raises(ValueError, match="item counts differ"):
        tn.restore_centre(other)


def test_the_kept_popularity_column_follows_new_popularity_and_new_items() -> None:
    served = served_model(*OPTIONS, "model.popularity_tilt=0.4", "model.popularity_tilt_items=2")
    model, recent = served.model, torch.tensor([[5, 9]])
    model.setup(catalogue())
    first = add_ranking_bonus(torch.zeros(1, model.n_items + 1), model, recent).clone()
    tn = model.text_neighbours
    tn.set_popularity(np.r_[0, np.arange(model.n_items)])  # other counts, written in place
    second = add_ranking_bonus(torch.zeros(1, model.n_items + 1), model, recent)
    z, centre = tn.popularity_z[: model.n_items + 1], float(tn.popularity_centre)
    torch.testing.assert_close(second[0], 0.4 * (z[[5, 9]].mean() - centre) * z)
    assert not torch.allclose(first, second)
    served.add_items([{**catalogue().item_attrs[3], "id": "NEW-1"}])  # a new item: popularity of count 0
    grown = add_ranking_bonus(torch.zeros(1, model.n_items + 1), model, recent)
    assert grown.shape[1] == model.n_items + 1
    assert float(grown[0, -1]) == pytest.approx(0.4 * (float(z[[5, 9]].mean()) - centre) * float(tn.unseen_z))


def test_an_export_keeps_the_centre_and_ranks_as_the_model_did(tmp_path) -> None:
    served = with_popularity("model.popularity_tilt=0.4", "model.popularity_tilt_items=2")
    served.save(tmp_path / "x")
    loaded = esrkit.load(tmp_path / "x")
    centre = loaded.model.text_neighbours.popularity_centre
    assert float(centre) == pytest.approx(float(served.model.text_neighbours.popularity_centre))
    history = ["I000004", "I000011", "I000023"]
    np.testing.assert_allclose(loaded.scores(history), served.scores(history), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.name=llminit", "model.popularity_tilt=0.5"], "needs model.text_neighbours > 0"),
        (["model.popularity_tilt=0.5"], "applies to model.name = llminit only"),
        ([*OPTIONS, "model.popularity_tilt=-1"], "model.popularity_tilt"),
        ([*OPTIONS, "model.popularity_tilt_items=0"], "model.popularity_tilt_items"),
    ],
)
def test_bad_popularity_tilt_options_are_refused(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config(*overrides)
