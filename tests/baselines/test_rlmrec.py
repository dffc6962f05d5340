"""RLMRec: the alignment never touches the frozen LLM table, learns on its own, and is training-only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esrkit.data.batches import seq2seq_batch
from esrkit.data.tensors import DeviceSequences
from esrkit.models.baselines.rlmrec import info_nce
from esrkit.models.idrec import IDRecommender
from tests.baselines.helpers import MAX_LEN, make_model
from tests.training.helpers import small_data


def _batch(rows: int = 64):
    data = small_data()
    return seq2seq_batch(DeviceSequences(data), np.arange(rows), MAX_LEN, 1, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mode", ["con", "gen"])
def test_alignment_is_zero_gradient_for_the_llm_table_and_decreases_alone(mode: str) -> None:
    model = make_model("rlmrec", mode=mode)
    table = model.semantic_table.clone()
    assert not model.semantic_table.requires_grad
    assert "semantic_table" not in dict(model.named_parameters())
    assert "semantic_table" not in model.state_dict()  # frozen and rebuilt from the embeddings, never saved
    batch = _batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(25):
        loss = model.alignment_loss(batch, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        assert model.semantic_table.grad is None
        opt.step()
        losses.append(loss.item())
    assert torch.equal(model.semantic_table, table)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses


def test_the_weight_scales_the_auxiliary_loss() -> None:
    batch = _batch()
    ctx = type("Ctx", (), {"generator": None})()
    a = make_model("rlmrec", weight=0.01)
    b = make_model("rlmrec", weight=0.02)
    torch.manual_seed(0)
    la = a.auxiliary_loss(batch, ctx)
    torch.manual_seed(0)
    lb = b.auxiliary_loss(batch, ctx)
    torch.testing.assert_close(lb, 2 * la)
    assert make_model("rlmrec", weight=0.0).auxiliary_loss(batch, ctx) is None
    assert (
        a.weight == 0.01
        and make_model("rlmrec").weight == 0.01
        and make_model("rlmrec", mode="gen").weight == 0.1
    )


@pytest.mark.parametrize("align", ["users", "items", "both"])
def test_alignment_targets(align: str) -> None:
    model = make_model("rlmrec", align=align)
    torch.manual_seed(0)
    loss = model.alignment_loss(_batch())
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_prediction_is_the_plain_backbone() -> None:
    """The projector and the LLM table are training-only: the same weights score exactly as an ID backbone."""
    data = small_data()
    model = make_model("rlmrec").eval()
    plain = IDRecommender(data.n_items, backbone="sasrec", hidden=32, max_len=MAX_LEN, dropout=0.1).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("projector.") for k in unexpected)
    tokens = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    from esrkit.data.tensors import make_input

    inp = make_input(tokens, MAX_LEN)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(inp), plain.encode(inp))
        torch.testing.assert_close(model.all_item_vectors(), plain.all_item_vectors())


def test_info_nce_prefers_matching_pairs() -> None:
    x = torch.eye(4)
    assert info_nce(x, x, 0.2) < info_nce(x, x.roll(1, 0), 0.2)
