"""Every LLM-ESR switch builds the network its ablation describes (structure only: no training, milliseconds).

The slow tests in tests/training/test_training.py check that the variants learn; these check that each switch
changes exactly the part of the model it names (the paper's Table 2 / Table 6 rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from esrkit.config import ModelConfig
from esrkit.data.tensors import make_input
from esrkit.models import MODELS
from esrkit.models.llmesr import Adapter, CrossAttention

N_ITEMS, D_LLM, HIDDEN, MAX_LEN = 30, 24, 8, 20
RNG = np.random.default_rng(0)
LLM = RNG.normal(size=(N_ITEMS, D_LLM)).astype(np.float32)
PCA = RNG.normal(size=(N_ITEMS, HIDDEN)).astype(np.float32)
INPUT = make_input(torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]]), MAX_LEN)


def build(**switches):
    torch.manual_seed(0)
    return MODELS.get("llmesr")(N_ITEMS, LLM, PCA, hidden=HIDDEN, max_len=MAX_LEN, **switches)


def _modules(model, kind: type) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, kind)]


def _encoders(model) -> list[str]:
    return [name for name, m in model.named_children() if name.startswith("encoder")]


def test_the_full_model() -> None:
    model = build()
    assert _encoders(model) == ["encoder"]
    assert _modules(model, CrossAttention) == ["llm2id", "id2llm"]
    assert len(model.adapter.layers) == 2 and model.adapter.layers[0].out_features == D_LLM // 2
    assert (
        "semantic_table" not in dict(model.named_parameters()) and "semantic_table" not in model.state_dict()
    )
    assert model.collab.weight.requires_grad
    torch.testing.assert_close(model.collab.weight[1:-1].detach(), torch.as_tensor(PCA))
    assert model.encode(INPUT).shape == (2, 5, 2 * HIDDEN) and model.all_item_vectors().shape == (
        N_ITEMS + 1,
        2 * HIDDEN,
    )
    assert model.score_views() == [slice(0, HIDDEN), slice(HIDDEN, 2 * HIDDEN)]


def test_without_share_two_encoders_with_their_own_weights() -> None:
    model = build(share_encoder=False)
    assert _encoders(model) == ["encoder", "encoder_se"]
    own = {id(p) for p in model.encoder.parameters()}
    assert own and not own & {id(p) for p in model.encoder_se.parameters()}
    model.eval()
    with torch.no_grad():  # the second view goes through the second encoder
        out = model.encode(INPUT)
        model.encoder_se.final_norm.bias.add_(1.0)
        moved = model.encode(INPUT)
    torch.testing.assert_close(out[..., :HIDDEN], moved[..., :HIDDEN])
    torch.testing.assert_close(out[..., HIDDEN:] + 1.0, moved[..., HIDDEN:])


def test_without_the_collaborative_view_no_id_table_no_cross_attention() -> None:
    model = build(co_view=False)
    assert not hasattr(model, "collab") and _modules(model, CrossAttention) == [] and model.fusion is None
    assert model.encode(INPUT).shape[-1] == HIDDEN and model.score_views() == []
    assert MODELS.get("llmesr").requirements(ModelConfig(co_view=False)) == {"llm_items"}  # no PCA needed


def test_without_the_semantic_view_no_llm_table_no_adapter() -> None:
    model = build(se_view=False)
    assert not hasattr(model, "semantic_table") and _modules(model, Adapter) == []
    assert _modules(model, CrossAttention) == [] and model.encode(INPUT).shape[-1] == HIDDEN


def test_without_cross_attention() -> None:
    model = build(cross_attention=False)
    assert _modules(model, CrossAttention) == [] and model.encode(INPUT).shape[-1] == 2 * HIDDEN


def test_one_layer_adapter() -> None:
    layers = build(adapter_layers=1).adapter.layers
    assert len(layers) == 1 and (layers[0].in_features, layers[0].out_features) == (D_LLM, HIDDEN)
    with pytest.raises(ValueError, match="adapter_layers"):
        build(adapter_layers=3)


def test_random_id_init_is_not_the_pca_table() -> None:
    table = build(id_init="random").collab.weight[1:-1].detach()
    assert not torch.allclose(table, torch.as_tensor(PCA), atol=0.1)
    assert MODELS.get("llmesr").requirements(ModelConfig(id_init="random")) == {"llm_items"}
    assert MODELS.get("llmesr").requirements(ModelConfig()) == {"llm_items", "pca"}


def test_without_freezing_the_llm_table_is_trained() -> None:
    model = build(freeze_semantic=False)
    table = dict(model.named_parameters())["semantic_table"]
    assert isinstance(table, nn.Parameter) and table.requires_grad and "semantic_table" in model.state_dict()
    model.all_item_vectors().sum().backward()
    assert table.grad is not None and table.grad[1:-1].abs().sum() > 0


def test_esrkit_additions_are_off_by_default_and_start_at_the_official_model() -> None:
    assert not hasattr(build(), "semantic_offset") and not build().fusion.active
    residual = build(semantic_residual=True)
    assert residual.semantic_offset.weight.abs().sum() == 0  # starts at the official semantic view
    ids = torch.arange(N_ITEMS + 1)
    torch.testing.assert_close(residual.semantic_vectors(ids), residual.adapter(residual.semantic_table[ids]))
    assert build(view_norm=True).fusion.active and build(gate="user").fusion.active


def test_the_item_tables_are_the_per_item_parameters_that_train() -> None:
    """``train.item_lr`` trains these at their own rate: E_co always, the semantic offset and a fine-tuned
    E_se only where they are trained."""

    def names(model) -> set[str]:
        by_id = {id(p): n for n, p in model.named_parameters()}
        return {by_id[id(p)] for p in model.item_tables()}

    assert names(build()) == {"collab.weight"}
    assert names(build(semantic_residual=True)) == {"collab.weight", "semantic_offset.weight"}
    assert names(build(freeze_semantic=False)) == {"collab.weight", "semantic_table"}
