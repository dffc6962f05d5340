"""``model.text_boost``: at ranking time every item gains γ x (1 + t max(0, -z_i)) x its cosine by text with
the user's last m items; serving, the sampled candidates and new items added from their text all apply it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import esrkit
from esrkit.config import ConfigError
from esrkit.models.recommender import add_ranking_bonus
from tests.serving.helpers import catalogue, config, item_vectors, served_model
from tests.serving.test_new_items import TWIN_OF, twin_record

OPTIONS = ("model.name=llminit", "model.text_neighbours=3")
HISTORY = ["I000004", "I000011", "I000023"]


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def expected_term(gamma: float, last: list[int], weights: np.ndarray | None = None) -> np.ndarray:
    """γ w_j cos(sum of the last items' unit text vectors, item j's), from the LLM vectors themselves."""
    units = unit_rows(item_vectors()[0].astype(np.float64))
    query = units[[i - 1 for i in last]].sum(0)
    out = np.zeros(len(units) + 1)
    out[1:] = gamma * units @ (query / np.linalg.norm(query))
    return out if weights is None else out * weights


def with_popularity(*overrides: str):
    served = served_model(*OPTIONS, *overrides)
    served.model.setup(catalogue())  # training popularity, as training sets it
    return served


def test_every_item_gains_gamma_times_its_cosine_with_the_last_items() -> None:
    plain = served_model(*OPTIONS)
    boosted = served_model(*OPTIONS, "model.text_boost=0.6", "model.text_boost_items=2")
    diff = boosted.scores(HISTORY) - plain.scores(HISTORY)  # the same weights: only the term differs
    np.testing.assert_allclose(diff, expected_term(0.6, [23, 11]), atol=1e-5)
    assert (diff[1:] != 0).all() and diff[0] == 0  # every item, not K neighbours; padding never
    top = [r.item for r in boosted.recommend(HISTORY, k=boosted.n_items)]
    scores = boosted.scores(HISTORY)
    order = [boosted.item_ids[i - 1] for i in np.argsort(-scores[1:], kind="stable") + 1]
    assert top == [i for i in order if i not in HISTORY]


def test_rarer_items_get_more_and_popular_ones_the_plain_cosine() -> None:
    plain = with_popularity()
    boosted = with_popularity("model.text_boost=0.6", "model.text_boost_items=3", "model.text_boost_tail=1.5")
    z = boosted.model.text_neighbours.popularity_z.numpy()[: boosted.n_items + 1]
    weights = 1 + 1.5 * np.clip(-z, 0, None)
    diff = boosted.scores(HISTORY) - plain.scores(HISTORY)
    np.testing.assert_allclose(diff, expected_term(0.6, [23, 11, 4], weights), atol=1e-5)
    popular = np.flatnonzero(z[1:] > 0) + 1
    assert len(popular) and (weights[popular] == 1).all() and weights.max() > 2


def test_the_term_and_the_neighbour_bonus_add_up_and_read_their_own_last_items() -> None:
    plain = served_model(*OPTIONS)
    bonus = served_model(*OPTIONS, "model.neighbour_boost=0.7")
    both = served_model(
        *OPTIONS, "model.neighbour_boost=0.7", "model.text_boost=0.6", "model.text_boost_items=3"
    )
    assert both.model.bonus_history == 3 and bonus.model.bonus_history == 1
    diff = both.scores(HISTORY) - plain.scores(HISTORY)
    sparse = bonus.scores(HISTORY) - plain.scores(HISTORY)  # the last item's neighbours only
    np.testing.assert_allclose(diff - sparse, expected_term(0.6, [23, 11, 4]), atol=1e-5)


def test_candidate_scores_get_the_same_term_as_the_full_catalogue() -> None:
    model = served_model(*OPTIONS, "model.text_boost=0.6", "model.text_boost_items=2").model
    recent = torch.tensor([[23, 11], [5, 0], [0, 0]])
    full = add_ranking_bonus(torch.zeros(3, model.n_items + 1), model, recent)
    candidates = torch.tensor([[1, 23, 40, 0], [7, 8, 9, 150], [3, 2, 1, 0]])
    picked = add_ranking_bonus(torch.zeros(3, 4), model, recent, candidates)
    torch.testing.assert_close(picked, full.gather(1, candidates))
    assert (full[2] == 0).all()  # a history without items: no term


def test_new_items_get_the_term_from_their_text_and_keep_it_through_an_export(tmp_path) -> None:
    served, off = served_model(*OPTIONS, "model.text_boost=0.6"), served_model(*OPTIONS)
    for model in (served, off):
        model.add_items([twin_record()])  # the same text as item TWIN_OF, so the same unit vector
    history = ["I000004", served.item_ids[TWIN_OF - 1]]  # the twin is the last item
    diff = served.scores(history) - off.scores(history)
    np.testing.assert_allclose(diff[:-1], expected_term(0.6, [TWIN_OF]), atol=1e-5)
    assert diff[-1] == pytest.approx(0.6, abs=1e-5) == diff[TWIN_OF]  # cos 1, like the twin itself
    served.save(tmp_path / "x")
    loaded = esrkit.load(tmp_path / "x")
    np.testing.assert_allclose(loaded.scores(history), served.scores(history), rtol=1e-6, atol=1e-6)
    loaded.add_items([{**catalogue().item_attrs[3], "id": "NEW-2"}])  # it grows again
    assert loaded.model.text_neighbours.keys.shape[0] == loaded.n_items


def test_an_llminit_export_with_text_neighbours_can_be_saved_again_after_adding_items(tmp_path) -> None:
    """The recommended recipes' family: the text keys grow with the catalogue, so the export round trip
    (which rebuilds the model at the grown size) fits, and new items still find trained neighbours."""
    served = served_model(*OPTIONS)
    trained = served.model.text_neighbours.keys.clone()
    served.add_items([twin_record()])
    tn = served.model.text_neighbours
    assert int(tn.trained) == len(trained) and torch.equal(tn.keys[: len(trained)], trained)
    served.save(tmp_path / "x")
    loaded = esrkit.load(tmp_path / "x")
    history = ["NEW-1", "I000004"]
    np.testing.assert_allclose(loaded.scores(history), served.scores(history), rtol=1e-6, atol=1e-6)
    loaded.add_items([twin_record("NEW-2")])  # a second new twin: its neighbours are trained items only
    ids = loaded.model.text_neighbours.neighbour_ids[loaded.n_items].tolist()
    assert max(ids) <= catalogue().n_items and TWIN_OF in ids


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.name=llminit", "model.text_boost=0.5"], "needs model.text_neighbours > 0"),
        (["model.text_boost=0.5"], "applies to model.name = llminit only"),
        ([*OPTIONS, "model.text_boost=-1"], "model.text_boost"),
        ([*OPTIONS, "model.text_boost_items=0"], "model.text_boost_items"),
        ([*OPTIONS, "model.text_boost_tail=-0.5"], "model.text_boost_tail"),
    ],
)
def test_bad_text_boost_options_are_refused(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config(*overrides)


def test_the_kept_item_table_follows_new_items_and_new_popularity() -> None:
    """The weighted table is kept between calls (building it costs more than the product); a change of the
    catalogue or of the popularity it was built from must rebuild it."""
    served = served_model(*OPTIONS, "model.text_boost=0.6", "model.text_boost_tail=1.5")
    off = served_model(*OPTIONS)
    before = served.scores(HISTORY) - off.scores(HISTORY)  # popularity all 0: the plain cosine
    np.testing.assert_allclose(before, expected_term(0.6, [23]), atol=1e-5)
    for model in (served, off):
        model.model.setup(catalogue())
    z = served.model.text_neighbours.popularity_z.numpy()[: served.n_items + 1]
    after = served.scores(HISTORY) - off.scores(HISTORY)
    np.testing.assert_allclose(after, expected_term(0.6, [23], 1 + 1.5 * np.clip(-z, 0, None)), atol=1e-5)
    for model in (served, off):
        model.add_items([twin_record()])
    history = [served.item_ids[TWIN_OF - 1]]
    grown = served.scores(history) - off.scores(history)
    weight = 1 + 1.5 * max(0.0, -served.model.text_neighbours.unseen_z.item())
    assert len(grown) == served.n_items + 1 and grown[-1] == pytest.approx(0.6 * weight, abs=1e-5)
