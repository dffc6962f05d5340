"""The Python serving API on models built directly (no training): histories, batches, k, exclusions,
errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from esrkit.data.batches import prediction_input
from esrkit.data.sequences import SequenceData
from esrkit.data.tensors import DeviceSequences
from esrkit.models.recommender import NewItemsUnsupported
from esrkit.serving import UnknownItemsError
from tests.serving.helpers import MAX_LEN, catalogue, served_model

FAMILIES = [
    (),
    ("model.backbone=bert4rec",),
    ("model.backbone=gru4rec",),
    ("model.name=llminit",),
    ("model.name=id",),
    ("embedding.center_items=true",),
]


def forward_pass_scores(served, history: list[int]) -> np.ndarray:
    """The model's own evaluation path on a dataset holding this one sequence (no serving code involved)."""
    data = SequenceData.from_sequences([history], n_items=served.n_items)
    model = served.model
    inp = prediction_input(
        DeviceSequences(data), np.array([0]), "next", MAX_LEN, model.objective, model.mask_token
    )
    with torch.no_grad():
        return (model.last_hidden(inp) @ model.all_item_vectors().T)[0].numpy()


@pytest.mark.parametrize("overrides", FAMILIES, ids=lambda o: ",".join(o) or "llmesr")
def test_an_unseen_history_scores_like_the_models_forward_pass(overrides) -> None:
    served = served_model(*overrides)
    rng = np.random.default_rng(1)
    for length in (3, MAX_LEN - 1, MAX_LEN, 2 * MAX_LEN + 3):  # shorter than, filling, overflowing the window
        history = rng.integers(1, served.n_items + 1, length).tolist()
        raw = [served.item_ids[i - 1] for i in history]
        expected = forward_pass_scores(served, history)
        np.testing.assert_allclose(served.scores(raw), expected, rtol=1e-5, atol=1e-6)


def test_recommend_excludes_history_and_extra_items_and_ranks_by_score() -> None:
    served = served_model()
    history = ["I000010", "I000020", "I000030"]
    scores = served.scores(history)
    recs = served.recommend(history, k=10, exclude=["I000040"])
    ids = [r.item for r in recs]
    assert len(recs) == 10 and not set(ids) & {*history, "I000040"}
    internal = served.item_index(ids)
    np.testing.assert_allclose([r.score for r in recs], scores[internal], rtol=1e-6)
    allowed = np.delete(np.arange(1, served.n_items + 1), served.item_index([*history, "I000040"]) - 1)
    assert np.isclose(recs[0].score, scores[allowed].max())
    assert all(a.score >= b.score for a, b in itertools.pairwise(recs))
    assert recs[0].title == catalogue().item_attrs[internal[0] - 1]["title"]
    with_history = served.recommend(history, k=served.n_items, exclude_history=False)
    assert set(history) <= {r.item for r in with_history}


def test_k_larger_than_the_catalogue_returns_only_real_items() -> None:
    served = served_model("model.backbone=bert4rec")  # BERT4Rec's [MASK] has a row too: never recommended
    history, exclude = ["I000001", "I000002", "I000002", "I000003"], ["I000004"]
    recs = served.recommend(history, k=served.n_items + 50, exclude=exclude)
    ids = [r.item for r in recs]
    assert len(ids) == served.n_items - 4 and len(set(ids)) == len(ids)
    assert set(ids) <= set(served.item_ids) and not set(ids) & {*history, *exclude}
    assert all(np.isfinite(r.score) for r in recs)
    for top in served.top_k_all_users(k=10 * served.n_items):
        for r, row in enumerate(top.rows):
            got = top.items[r][top.valid[r]]
            assert len(got) == served.n_items - len(set(served.users.history(row).tolist()))
            assert got.min() >= 1 and got.max() <= served.n_items


def test_batched_calls_match_one_call_each() -> None:
    served = served_model()
    data = catalogue()
    histories = [[served.item_ids[i - 1] for i in data.sequence(u)] for u in range(0, 40, 3)]
    batched = served.recommend_users(histories, k=7, batch_size=4)
    for history, recs in zip(histories, batched):
        single = served.recommend(history, k=7)
        assert [r.item for r in recs] == [r.item for r in single]
        np.testing.assert_allclose([r.score for r in recs], [r.score for r in single], rtol=1e-5, atol=1e-6)
    every = {
        int(row): (top.items[r], top.scores[r])
        for top in served.top_k_all_users(k=7, chunk=16)
        for r, row in enumerate(top.rows)
    }
    assert sorted(every) == list(range(data.n_users))
    for u in (0, 5, 77, data.n_users - 1):
        known = served.recommend_known(data.user_ids[u], k=7)
        assert [served.item_ids[i - 1] for i in every[u][0]] == [r.item for r in known]


def test_unknown_items_are_named() -> None:
    served = served_model()
    with pytest.raises(UnknownItemsError, match="'nope'.*'gone'"):
        served.recommend(["I000001", "nope", "gone", "nope"])
    with pytest.raises(UnknownItemsError, match="exclude list: 'x'"):
        served.recommend(["I000001"], exclude=["x"])
    with pytest.raises(ValueError, match="empty history"):
        served.recommend([])
    with pytest.raises(KeyError, match="unknown user id 'U9'"):
        served.recommend_known("U9")


def test_an_id_only_family_cannot_add_items_from_text() -> None:
    served = served_model("model.name=id")
    with pytest.raises(NewItemsUnsupported, match="'id' scores items by vectors learned in training only"):
        served.add_items([{"id": "N1", "title": "A new serum"}])
    assert served.n_items == catalogue().n_items


def test_the_neighbour_boost_lifts_the_last_items_text_neighbours_in_every_serving_path() -> None:
    plain = served_model("model.name=llminit", "model.text_neighbours=3")
    boosted = served_model("model.name=llminit", "model.text_neighbours=3", "model.neighbour_boost=0.7")
    history = ["I000004", "I000011", "I000023"]
    neighbours = boosted.model.text_neighbours.neighbour_ids[23].tolist()
    diff = boosted.scores(history) - plain.scores(history)
    expected = np.zeros_like(diff)
    expected[neighbours] = 0.7
    np.testing.assert_allclose(diff, expected, atol=1e-5)  # the same weights: only the bonus differs
    top = [r.item for r in boosted.recommend(history, k=boosted.n_items)]
    scores = boosted.scores(history)
    order = [boosted.item_ids[i - 1] for i in np.argsort(-scores[1:], kind="stable") + 1]
    assert top == [i for i in order if i not in history]
    user = boosted.users.row_of(catalogue().user_ids[5])
    first = next(boosted.top_k_all_users(k=5))
    known = boosted.recommend_known(catalogue().user_ids[5], k=5)
    assert [boosted.item_ids[i - 1] for i in first.items[user]] == [r.item for r in known]


def test_the_neighbour_boost_over_the_last_items_favours_rare_neighbours_when_asked() -> None:
    options = ["model.name=llminit", "model.text_neighbours=3"]
    plain = served_model(*options)
    boosted = served_model(
        *options,
        "model.neighbour_boost=0.7",
        "model.neighbour_boost_items=2",
        "model.neighbour_boost_tail=1.5",
    )
    for served in (plain, boosted):
        served.model.setup(catalogue())  # training popularity, as training sets it
    history = ["I000004", "I000011", "I000023"]
    tn = boosted.model.text_neighbours
    z = tn.popularity_z.numpy()
    expected = np.zeros(boosted.n_items + 1)
    for last in (23, 11):  # the two most recent items; a neighbour of both gets both bonuses
        for j in tn.neighbour_ids[last].tolist():
            expected[j] += 0.7 * 2 / (1 + np.exp(1.5 * z[j]))
    np.testing.assert_allclose(boosted.scores(history) - plain.scores(history), expected, atol=1e-5)
    assert len(set(expected.round(6)) - {0.0}) > 2  # the bonus differs between neighbours
