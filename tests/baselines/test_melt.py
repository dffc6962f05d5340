"""MELT: official head/tail splits and contexts; the item branch rewrites tail items only; the user branch
learns from head users only and changes tail users' representations only."""

from __future__ import annotations

import math

import numpy as np
import torch

from esrkit.data.sequences import SequenceData
from esrkit.data.tensors import make_input
from esrkit.models.baselines import MELT, MeltOptions
from tests.baselines.helpers import MAX_LEN, make_model, run_steps
from tests.training.helpers import small_data


def _train_lengths(data) -> np.ndarray:
    return data.lengths() - 2


def test_pareto_splits_follow_the_official_rule() -> None:
    data = small_data()
    model = make_model("melt")
    lengths = _train_lengths(data)
    assert float(model.user_threshold) == float(np.quantile(lengths, 0.8))
    assert (lengths[model.head_users.numpy()] > float(model.user_threshold)).all()
    counts = model.item_counts.numpy()
    assert model.item_threshold == float(np.quantile(counts[1:][counts[1:] > 0], 0.78))
    assert (counts[model.head_items.numpy()] > model.item_threshold).all()
    assert (counts[model.tail_items.numpy()] <= model.item_threshold).all()


def test_item_contexts_are_prefixes_and_reversed_suffixes() -> None:
    # one user whose training part is [1 2 3 4]; item 3 sits at position 2
    data = SequenceData.from_sequences([[1, 2, 3, 4, 5, 5], [1, 2, 5, 5]], n_items=5)
    model = MELT(5, options=MeltOptions(pretrain_epochs=0, pareto=0.5), hidden=8, max_len=MAX_LEN)
    model.setup(data)
    rows = torch.arange(int(model.ctx_ptr[3]), int(model.ctx_ptr[4]))
    windows = model._context_windows(rows).tolist()
    assert sorted(windows) == sorted(
        [[1, 2, 3], [0, 4, 3]]
    )  # prefix ending in 3; suffix [3 4] read backwards
    rows = torch.arange(int(model.ctx_ptr[1]), int(model.ctx_ptr[2]))  # item 1: both users, position 0
    expected = [[0, 0, 0, 1], [4, 3, 2, 1], [0, 0, 0, 1], [0, 0, 2, 1]]
    assert sorted(model._context_windows(rows).tolist()) == sorted(expected)


def test_item_branch_rewrites_exactly_the_tail_items() -> None:
    model = make_model("melt")
    before = model.items.weight.detach().clone()
    item = int(model.tail_items[0])  # becomes W_I(mean of its contexts' plain representations)
    rows = torch.arange(int(model.ctx_ptr[item]), int(model.ctx_ptr[item + 1]))
    model.eval()
    with torch.no_grad():
        expected = model.item_inference(model.represent(model._context_windows(rows)).mean(0))
    model.train()
    model.update_tail_items()
    assert model.training  # the update restores the mode it found
    after = model.items.weight.detach()
    changed = (after != before).any(1)
    tail = torch.zeros_like(changed)
    tail[model.tail_items] = True
    assert tail.any() and torch.equal(changed, tail)
    torch.testing.assert_close(after[item], expected, atol=1e-5, rtol=1e-5)


def test_user_branch_samples_head_users_only() -> None:
    data = small_data()
    model = make_model("melt")
    model.plan_epoch(n_batches=5)
    seen = set()
    for _ in range(5):
        users, items = model._next_chunks(None)
        seen.update(users.tolist())
        assert set(items.tolist()) <= set(model.head_items.tolist())
    lengths = _train_lengths(data)
    assert seen == set(model.head_users.tolist())  # one epoch visits every head user
    assert (lengths[list(seen)] > float(model.user_threshold)).all()


def test_user_branch_changes_tail_users_only_and_only_at_inference() -> None:
    model = make_model("melt")
    run_steps(model, steps=2)
    thr = math.floor(float(model.user_threshold))
    rng = np.random.default_rng(0)
    lengths = [1, 2, thr, thr + 1, thr + 5, 30]
    tokens = torch.zeros(len(lengths), 30, dtype=torch.long)
    for r, n in enumerate(lengths):
        tokens[r, 30 - n :] = torch.as_tensor(rng.integers(1, model.n_items + 1, n))
    inp = make_input(tokens, MAX_LEN)
    model.eval()
    with torch.no_grad():
        plain, served = model.backbone_encode(inp), model.encode(inp)
    torch.testing.assert_close(served[:, :-1], plain[:, :-1])
    differs = (served[:, -1] != plain[:, -1]).any(1).tolist()
    assert differs == [n <= float(model.user_threshold) for n in lengths]
    tail = torch.tensor(differs)
    torch.testing.assert_close(served[tail, -1], plain[tail, -1] + model.user_transfer(plain[tail, -1]))
    model.train()
    torch.manual_seed(0)
    a = model.encode(inp)
    torch.manual_seed(0)
    b = model.backbone_encode(inp)
    torch.testing.assert_close(a, b)  # training never applies the transfer (official)


def test_curriculum_weights_match_the_official_formulas() -> None:
    model = make_model("melt", e_max=180)
    thr = float(model.user_threshold)
    n = torch.tensor([thr + 3.0])
    expected = abs(math.sin(math.pi / 2 * 7 / 180 + math.pi / (2 * (MAX_LEN - thr - 1)) * (3 - 1)))
    assert math.isclose(float(model.user_weight(n, 7)), expected, rel_tol=1e-5)
    item = model.head_items[:1]
    n_ctx = min(float(model.item_counts[item]), model.item_threshold + 50)
    expected = abs(math.sin(math.pi / 2 * 7 / 180 + math.pi / 100 * (n_ctx - model.item_threshold - 1)))
    assert math.isclose(float(model.item_weight(item, 7)), expected, rel_tol=1e-5)


def test_stage_one_is_the_plain_backbone() -> None:
    model = make_model("melt", pretrain_epochs=5)
    losses = run_steps(model, steps=2)
    assert not model.baseline_active and np.isfinite(losses).all()
    batch_out = model.training_loss(None, None)
    assert batch_out is None  # the trainer's default ranking loss
