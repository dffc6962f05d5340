"""The arithmetic of data parallelism, in one process (fast): splitting global batches over simulated ranks
and weighting their losses reproduces the single-process gradient; sharded evaluation reproduces the ranks;
text shards partition the texts; a plain process gets the plain runtime."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch

from esrkit.data.tensors import DeviceSequences, length_buckets
from esrkit.embedding.distributed import shard_of
from esrkit.evaluation.evaluator import Evaluator
from esrkit.models import MODELS
from esrkit.training.distributed import (
    Runtime,
    local_step,
    rank_seed,
    runtime,
    shard_range,
    weighted_losses,
)
from esrkit.training.objectives import SelfDistillation
from esrkit.training.trainer import StepContext, Trainer, TrainerOptions
from esrkit.utils.io import sha256_text
from tests.training.helpers import MAX_LEN, small_data


@functools.lru_cache(maxsize=1)
def _assets() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random "LLM" item vectors, PCA table and neighbour lists: the arithmetic under test does not need real
    ones."""
    data = small_data()
    rng = np.random.default_rng(0)
    items = rng.normal(size=(data.n_items, 24)).astype(np.float32)
    pca = rng.normal(size=(data.n_items, 16)).astype(np.float32)
    neighbours = np.stack([rng.choice(data.n_users, 10, replace=False) for _ in range(data.n_users)])
    return items, pca, neighbours


def test_shard_range_partitions_rows() -> None:
    for n in (0, 1, 5, 300, 301):
        for world in (1, 2, 3, 8):
            parts = [shard_range(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1


def test_text_shards_partition_and_do_not_depend_on_order() -> None:
    hashes = [sha256_text(f"text {i}") for i in range(1000)]
    owners = [shard_of(h, 3) for h in hashes]
    assert sorted(set(owners)) == [0, 1, 2]
    assert min(np.bincount(owners)) > 250  # balanced
    assert [shard_of(h, 3) for h in reversed(hashes)] == owners[::-1]


def test_rank_seed_keeps_rank_zero_on_the_single_process_stream() -> None:
    assert rank_seed(42, 0) == 42
    assert len({rank_seed(42, r) for r in range(8)}) == 8
    assert rank_seed(42, 1) == rank_seed(42, 1) != rank_seed(43, 1)


def test_a_plain_process_gets_the_plain_runtime(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rt = runtime()
    assert type(rt) is Runtime and rt.is_main and not rt.distributed
    assert rt.evaluator_class() is Evaluator
    assert rt.on_main(lambda: 7) == 7 and rt.staged(lambda: 8) == 8


def _model(kind: str):
    data = small_data()
    items, pca, neighbours = _assets()
    torch.manual_seed(0)
    if kind == "llmesr":
        model = MODELS.get("llmesr")(
            data.n_items, items, pca, backbone="sasrec", hidden=16, max_len=MAX_LEN, dropout=0.0
        )
    else:
        model = MODELS.get("id")(data.n_items, backbone=kind, hidden=16, max_len=MAX_LEN, dropout=0.0)
    seqs = DeviceSequences(data)
    sd = SelfDistillation(seqs, neighbours, 10, 0.1, "mse_mean", MAX_LEN) if kind == "llmesr" else None
    return Trainer(
        model, seqs, TrainerOptions(max_len=MAX_LEN, batch_size=64), lambda m, e: {}, None, sd, progress=False
    )


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["llmesr", "bert4rec", "gru4rec"])  # seq2seq + SD, cloze, last
@pytest.mark.parametrize("world, n_rows", [(2, 37), (3, 64), (4, 2)])  # uneven shares; ranks with no row
def test_simulated_ranks_reproduce_the_single_process_gradient(kind: str, world: int, n_rows: int) -> None:
    trainer = _model(kind)
    model = trainer.model
    rows = np.random.default_rng(1).permutation(trainer.n_samples)[:n_rows]
    state = torch.Generator().manual_seed(5).get_state()

    gen = torch.Generator().set_state(state)
    batch = trainer.make_batch(rows, gen)
    buckets = length_buckets(trainer.input_lengths(rows), trainer.opt_cfg.buckets)
    parts = trainer.losses(batch, StepContext(trainer, 0, buckets, gen))
    parts["loss"].backward()
    reference, ref_parts = _grads(model), {k: float(v.detach()) for k, v in parts.items()}

    summed: dict[str, torch.Tensor] = {}
    logged: dict[str, float] = {}
    for rank in range(world):  # what DDP's all-reduce (mean over ranks) computes
        trainer = _model(kind)  # each rank: its own replica of the same initial weights
        gen = torch.Generator().set_state(state)
        share = local_step(trainer, rows, gen, rank, world)
        total, shares = weighted_losses(trainer, share, StepContext(trainer, 0, share.buckets, gen))
        total.backward()
        for name, g in _grads(trainer.model).items():
            summed[name] = summed.get(name, 0) + g / world
        for k, v in shares.items():
            logged[k] = logged.get(k, 0.0) + float(v.detach()) / world
    assert summed.keys() == reference.keys()
    for name, ref in reference.items():  # float32 summation order only: ~1e-7 of the gradient's scale
        error = float((summed[name] - ref).abs().max())
        assert error <= 1e-5 * float(ref.abs().max()) + 1e-8, (name, error)
    assert logged.keys() == ref_parts.keys()
    for key, value in ref_parts.items():
        assert logged[key] == pytest.approx(value, rel=1e-5), key


def test_sharded_evaluation_reproduces_the_ranks() -> None:
    trainer = _model("llmesr")
    data = small_data()
    for split in ("valid", "test"):
        ev = Evaluator(data, split, trainer.seqs, max_len=MAX_LEN, seed=0, batch_size=50)
        full = ev.compute_ranks(trainer.model, ("sampled", "full"))
        for world in (2, 3):
            shards = [
                ev.compute_ranks(trainer.model, ("sampled", "full"), shard_range(data.n_users, r, world))
                for r in range(world)
            ]
            for protocol in ("sampled", "full"):
                joined = np.concatenate([s[protocol] for s in shards])
                assert joined.shape == full[protocol].shape
                assert (joined == full[protocol]).mean() >= 0.995, (split, world, protocol)
