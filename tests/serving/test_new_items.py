"""New items from their text alone: the tiny offline provider -> the run's prompt template -> the model
family's new-item contract; ranked by the semantic view, kept by exports, usable in histories."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import esrkit
from esrkit.prompts import render_item
from tests.serving.helpers import catalogue, served_model, tiny_provider
from tests.serving.test_served_model import forward_pass_scores

TWIN_OF = 17  # the new item copies this item's text


def twin_record(new_id: str = "NEW-1") -> dict:
    return {**catalogue().item_attrs[TWIN_OF - 1], "id": new_id}


@pytest.mark.parametrize("center", [False, True])
def test_a_new_item_gets_its_texts_semantic_vector_and_the_pca_start(center) -> None:
    served = served_model(*(["embedding.center_items=true"] if center else []))
    hidden = served.cfg.model.hidden
    assert served.add_items([twin_record()]) == ["NEW-1"]
    new = served.n_items
    assert new == catalogue().n_items + 1 and served.item_ids[-1] == "NEW-1"
    vectors = served.item_vectors()
    # the same text gives the same LLM vector, so the same semantic view (the centring applied as in training)
    np.testing.assert_allclose(vectors[new, hidden:], vectors[TWIN_OF, hidden:], rtol=1e-5, atol=1e-6)
    raw = tiny_provider().embed([render_item(twin_record(), served.templates.item)])
    start = served.assets.pca_projection.transform(raw - (served.llm_center if center else 0.0))
    np.testing.assert_allclose(vectors[new, :hidden].numpy(), start[0], rtol=1e-5, atol=1e-6)


def test_a_new_item_is_ranked_by_the_semantic_view() -> None:
    """With the semantic view alone, a new item whose text equals item X's scores exactly like X after any
    history, and ranks right beside it; as a history input it acts as X does."""
    served = served_model("model.co_view=false")
    served.add_items([twin_record()])
    twin, new = served.item_ids[TWIN_OF - 1], "NEW-1"
    for history in (["I000001", "I000002"], ["I000090", "I000003", "I000120", "I000044"]):
        scores = served.scores(history)
        assert np.isclose(scores[served.n_items], scores[TWIN_OF], rtol=1e-6)
        ranked = [r.item for r in served.recommend(history, k=served.n_items)]
        assert abs(ranked.index(new) - ranked.index(twin)) == 1
    np.testing.assert_allclose(served.scores(["I000001", new]), served.scores(["I000001", twin]), rtol=1e-5)


def test_other_text_ranks_elsewhere_and_unrelated_items_are_untouched() -> None:
    served = served_model()
    history = ["I000001", "I000002", "I000003"]
    before = served.scores(history)
    served.add_items([twin_record(), {"id": "NEW-2", "title": "Zeta Volcanic Clay Face Mask - 2 oz"}])
    after = served.scores(history)
    # old items score as before: their vectors are bit-identical (cached), the scores differ only by the
    # summation order of a longer matrix product (float32 rounding, about 1e-7 here)
    np.testing.assert_allclose(after[: len(before)], before, rtol=1e-6, atol=1e-6)
    assert after[-1] != pytest.approx(after[-2])


def test_new_items_keep_bert4rec_mask_valid_and_score_like_a_forward_pass() -> None:
    served = served_model("model.backbone=bert4rec")
    model = served.model
    mask_row = model.collab.weight[model.n_items + 1].detach().clone()
    served.add_items([twin_record("N1"), twin_record("N2")])
    assert model.mask_token == model.n_items + 1 == catalogue().n_items + 3
    torch.testing.assert_close(model.collab.weight[model.mask_token], mask_row)  # [MASK] moved, unchanged
    assert model.collab.weight.shape[0] == model.semantic_table.shape[0] == model.n_items + 2
    history = [served.n_items, 5, served.n_items - 1, 9]  # new items as history inputs
    raw = [served.item_ids[i - 1] for i in history]
    np.testing.assert_allclose(served.scores(raw), forward_pass_scores(served, history), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "switches",
    [(), ("model.init_norm=backbone",), ("model.start_gate=true", "model.text_neighbours=3")],
    ids=["pca-start", "backbone-scale", "start-gate"],
)
def test_added_items_survive_an_export(switches, tmp_path) -> None:
    served = served_model("model.name=llminit", *switches)
    if served.model.start_gate is not None:  # a gate that is not at its start, so the export must carry it
        with torch.no_grad():
            served.model.start_gate.bias.fill_(-0.7)
            served.model.start_gate.slope.fill_(0.4)
    served.add_items([twin_record()])
    served.save(tmp_path / "x")
    loaded = esrkit.load(tmp_path / "x")
    assert loaded.item_ids[-1] == "NEW-1" and loaded.n_items == served.n_items
    assert loaded.titles[-1] == twin_record()["title"] and loaded.info["added_items"] == 1
    history = ["NEW-1", "I000004"]
    np.testing.assert_allclose(loaded.scores(history), served.scores(history), rtol=1e-6)
    loaded.add_items([{"id": "NEW-2", "title": "Second"}])  # and it can grow again, at the run's start scale
    served.add_items([{"id": "NEW-2", "title": "Second"}])
    assert loaded.n_items == served.n_items
    torch.testing.assert_close(loaded.item_vectors()[-1], served.item_vectors()[-1], rtol=1e-5, atol=1e-7)


def test_bad_new_items_are_refused_before_anything_changes() -> None:
    served = served_model()
    n = served.n_items
    with pytest.raises(ValueError, match="already in the catalogue: 'I000001'"):
        served.add_items([{"id": "I000001", "title": "x"}])
    with pytest.raises(ValueError, match="appears twice"):
        served.add_items([{"id": "A", "title": "x"}, {"id": "A", "title": "y"}])
    with pytest.raises(ValueError, match="record #2 has no id"):
        served.add_items([{"id": "B"}, {"title": "no id"}])
    with pytest.raises(ValueError, match="is not the one the model was trained with"):
        served.add_items([{"id": "C", "title": "x"}], dim=16)  # another width: another identity
    assert served.n_items == n == served.model.n_items


def test_adding_items_keeps_every_existing_item_vector_bit_for_bit() -> None:
    served = served_model()
    before = served.item_vectors().clone()
    served.add_items([twin_record()])
    assert torch.equal(served.item_vectors()[: len(before)], before)
    fresh = served.model.all_item_vectors().detach()  # the cache's new row is what the model computes
    torch.testing.assert_close(served.item_vectors()[-1], fresh[served.n_items])


def test_new_item_norm_can_be_chosen_per_call_and_is_checked_before_any_work() -> None:
    """The export keeps its training config (projection here); one call may add at the trained rows' mean
    length, and the next call is back to the recorded choice."""
    served = served_model("model.name=llminit")
    with torch.no_grad():  # training lengthens the rows it sees (an untrained table is the projection's size)
        served.model.items.weight.mul_(2.0)
    trained = served.model.items.weight[1 : served.n_items + 1].detach().norm(dim=1).mean()
    served.add_items([twin_record("N1")], new_item_norm="trained")
    served.add_items([twin_record("N2")])
    rows = served.model.items.weight.detach()
    n = served.n_items
    assert rows[n - 1].norm() == pytest.approx(float(trained), rel=1e-5)
    raw = tiny_provider().embed([render_item(twin_record(), served.templates.item)])
    projection = served.assets.pca_projection.transform(raw)[0]
    np.testing.assert_allclose(rows[n].numpy(), projection, rtol=1e-5, atol=1e-6)  # bare projection
    assert rows[n].norm() < 0.6 * rows[n - 1].norm()  # the two calls really differ here
    np.testing.assert_allclose(  # same direction, another length
        (rows[n - 1] / rows[n - 1].norm()).numpy(), (rows[n] / rows[n].norm()).numpy(), rtol=1e-5, atol=1e-6
    )
    assert served.model.new_item_norm == "projection"
    with pytest.raises(ValueError, match="must be one of projection, trained"):
        served.add_items([twin_record("N3")], new_item_norm="unit")
    with pytest.raises(ValueError, match="llminit models only"):
        served_model().add_items([twin_record("N3")], new_item_norm="trained")
    assert served.n_items == n
