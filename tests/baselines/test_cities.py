"""CITIES: the inference function learns on head items with the backbone frozen and replaces only tail
items."""

from __future__ import annotations

import numpy as np
import torch

from esrkit.models.baselines import CITIES, CitiesOptions
from esrkit.models.baselines.cities import EmbeddingInference
from esrkit.models.popularity import training_items
from tests.baselines.helpers import MAX_LEN, backbone_state, make_model, run_steps, trainer_for
from tests.training.helpers import small_data


def test_head_and_tail_split_follows_training_counts() -> None:
    data = small_data()
    model = make_model("cities")
    counts = np.bincount(training_items(data), minlength=data.n_items + 1)
    assert (counts[model.head_items.numpy()] > 5).all()
    assert (counts[model.tail_items.numpy()] <= 5).all()
    assert 0 not in model.tail_items.tolist()


def test_stage_two_trains_only_the_inference_function() -> None:
    model = make_model("cities")
    frozen = backbone_state(model)
    inference = {k: v.clone() for k, v in model.inference.state_dict().items()}
    run_steps(model, steps=4)
    for k, v in backbone_state(model).items():
        assert torch.equal(v, frozen[k]), f"backbone weight {k} changed in stage 2"
    assert any(not torch.equal(v, inference[k]) for k, v in model.inference.state_dict().items())


def test_only_tail_items_are_replaced_and_only_at_inference() -> None:
    model = make_model("cities")
    run_steps(model, steps=3)
    table = model.items.weight.detach()[: model.n_items + 1].clone()
    assert torch.equal(model.all_item_vectors(), table)  # training mode: the backbone's own table
    model.eval()  # entering evaluation infers the tail embeddings
    served = model.all_item_vectors()
    changed = (served != table).any(1)
    tail = torch.zeros(model.n_items + 1, dtype=torch.bool)
    tail[model.tail_items] = True
    assert tail.any() and torch.equal(changed, tail)
    # the backbone reads the same table: encoding a tail item's sequence differs from the raw table's encoding
    ids = model.tail_items[:3]
    assert torch.equal(model.item_vectors(ids), served[ids])


def test_inferred_embedding_uses_all_contexts_of_a_tail_item() -> None:
    model = make_model("cities")
    run_steps(model, steps=2)
    model.eval()
    item = int(model.tail_items[0])
    c = model._contexts
    rows = torch.arange(int(c.ptr[item]), int(c.ptr[item + 1]))
    left, right = model._context_tokens(rows)
    expected = model.inference(left.unsqueeze(0), right.unsqueeze(0), model.items.weight.detach())[0]
    torch.testing.assert_close(model.all_item_vectors()[item], expected)


def test_contexts_are_the_official_windows() -> None:
    """[left items, MASK, right items] around each occurrence; at least 3 items in the window."""
    from esrkit.data.sequences import SequenceData

    # training parts (seq[:-2]): [1 2 3 4], [2 5], [3 1 2]
    data = SequenceData.from_sequences([[1, 2, 3, 4, 9, 9], [2, 5, 9, 9], [3, 1, 2, 9, 9]], n_items=9)
    model = CITIES(
        9,
        options=CitiesOptions(context_len=2, pretrain_epochs=0, tail_threshold=1, heads=2),
        hidden=8,
        max_len=MAX_LEN,
    )
    model.setup(data)
    c = model._contexts
    rows = torch.arange(
        int(c.ptr[2]), int(c.ptr[3])
    )  # item 2: in user 0 (pos 1) and user 2 (pos 2); user 1 too short
    left, right = model._context_tokens(rows)
    assert left.tolist() == [[0, 1], [3, 1]]
    assert right.tolist() == [[3, 4], [0, 0]]


def _untrimmed(
    f: EmbeddingInference, left: torch.Tensor, right: torch.Tensor, table: torch.Tensor
) -> torch.Tensor:
    """The official fixed 2C+1 layout, every padding column kept."""
    B, K, C = left.shape
    tokens = torch.cat([left, torch.ones(B, K, 1, dtype=torch.long), right], -1).view(B * K, -1)
    x = torch.nn.functional.embedding(tokens, table)
    x[:, C] = f.mask_vector
    x = x * f.position_weights.unsqueeze(-1) + f.sinusoid
    padding = tokens == 0
    for layer in f.interpreter:
        x = layer(x, padding)
    keep = (~padding).unsqueeze(-1).float()
    contexts = ((x * keep).sum(1) / keep.sum(1)).view(B, K, -1)
    for layer in f.aggregator:
        contexts = layer(contexts)
    return f.out(contexts.mean(1))


def test_trimmed_context_columns_are_exact() -> None:
    torch.manual_seed(0)
    f = EmbeddingInference(16, context_len=4, heads=2, layers=2, dropout=0.0).eval()
    table = torch.randn(20, 16)
    left = torch.tensor([[[0, 0, 3, 4], [0, 0, 0, 5]], [[0, 0, 0, 0], [0, 0, 0, 9]]])
    right = torch.tensor([[[6, 0, 0, 0], [7, 8, 0, 0]], [[0, 0, 0, 0], [2, 0, 0, 0]]])
    with torch.no_grad():
        torch.testing.assert_close(
            f(left, right, table), _untrimmed(f, left, right, table), atol=1e-5, rtol=1e-5
        )


def test_two_stages_restore_the_best_backbone_and_reset_early_stopping() -> None:
    data = small_data()
    model = make_model("cities", pretrain_epochs=3)
    scores = {0: 0.1, 1: 0.3, 2: 0.2}
    snapshots = {}

    def validate(m, epoch):
        snapshots[epoch] = backbone_state(m)
        s = scores.get(epoch, 0.05)  # stage 2 scores lower than stage 1's best
        return {"sampled": {"overall": {"ndcg@10": s}}}

    trainer = trainer_for(model, data, epochs=5, validate=validate)
    trainer.opt_cfg.max_batches_per_epoch = 2
    trainer.fit()
    assert int(model.stage_start) == 3
    for k, v in backbone_state(model).items():  # stage 2 started from epoch 1's backbone and kept it
        assert torch.equal(v, snapshots[1][k]), k
    assert trainer.state.best_epoch >= 3  # selection among stage-2 epochs only
