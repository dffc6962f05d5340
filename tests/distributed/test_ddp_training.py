"""``torchrun -m esrkit train`` with 2 CPU processes (gloo): equivalent to one process, rank 0 writes, resume
exact.

Tolerance of the equivalence (dropout 0, so nothing random differs): both runs see the same samples, negatives
and teachers, and the 2-process gradient is the single-process gradient up to float32 summation order
(per-rank partial sums, then the all-reduce). Those ~1e-7 relative differences stay tiny over a few epochs:
losses agree to 1e-4 relative, and a user's rank can only move when two scores are within rounding of each
other. We require every metric within 0.01 (3 users of 300) and at least 99% of per-user ranks identical; in
practice they are all equal.

Three launches in all (about 15 s each on two idle cores): the 2-process run, a 1-epoch run launched as two
single-process "nodes" meeting at a c10d rendezvous endpoint (the multi-node command line), and its resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.helpers import torchrun, torchrun_nodes, write_training_setup

pytest.importorskip("torch.distributed")


def _train_args(recipe: Path, name: str, *extra: str) -> list[str]:
    return ["-m", "esrkit", "train", "--recipe", str(recipe), "--name", name, "-q", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(recipe, single-process run, 2-process run): the same recipe, 2 epochs, global batch 23."""
    from esrkit.config import resolve_recipe
    from esrkit.runs.train import train

    root = tmp_path_factory.mktemp("ddp")
    recipe = write_training_setup(root)
    cfg = resolve_recipe(str(recipe), [])
    cfg.name = "single"
    train(cfg, progress=False)  # in this process: the plain runtime
    out = torchrun(_train_args(recipe, "ddp"), cwd=root)
    assert out.stdout.count("runs: ") == 1  # rank 0 reports, once
    return recipe, root / "runs" / "single" / "seed-42", root / "runs" / "ddp" / "seed-42"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _metrics(results: dict) -> dict[tuple[str, str, str], float]:
    return {
        (p, g, m): v
        for p, groups in results["test"].items()
        for g, ms in groups.items()
        for m, v in ms.items()
        if m != "users"
    }


def test_two_processes_reach_the_single_process_metrics(runs) -> None:
    _, one, two = runs
    a, b = _lines(one / "metrics.jsonl"), _lines(two / "metrics.jsonl")
    assert [r["epoch"] for r in b] == [0, 1]  # one writer: no line twice
    for ra, rb in zip(a, b):
        assert (
            ra["batches"] == rb["batches"] == 14
        )  # 300 users / 23: the global batch; the last one has 1 row
        for key in ("loss", "rank", "sd"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4), key
        assert abs(ra["score"] - rb["score"]) <= 0.01

    ra, rb = json.loads((one / "results.json").read_text()), json.loads((two / "results.json").read_text())
    ma, mb = _metrics(ra), _metrics(rb)
    assert ma.keys() == mb.keys()
    worst = max(abs(ma[k] - mb[k]) for k in ma if not (np.isnan(ma[k]) and np.isnan(mb[k])))
    assert worst <= 0.01, worst
    for name in ("test_sampled", "test_full", "valid_sampled", "valid_full"):
        x, y = np.load(one / "ranks" / f"{name}.npy"), np.load(two / "ranks" / f"{name}.npy")
        assert x.shape == y.shape == (300,)
        assert (x == y).mean() >= 0.99, name

    provenance = json.loads((two / "provenance.json").read_text())
    assert provenance["distributed"]["world_size"] == 2
    assert "distributed" not in json.loads((one / "provenance.json").read_text())
    last = load_file(str(two / "checkpoints" / "last.safetensors"))
    assert {"rng.rank0.torch", "rng.rank1.torch", "rng.torch"} <= last.keys()


def test_two_process_resume_reproduces_the_uninterrupted_run(runs) -> None:
    recipe, _, full = runs
    root = full.parent.parent.parent
    # "interrupted" after one epoch, launched as two single-process nodes meeting at a c10d rendezvous
    # endpoint
    torchrun_nodes(_train_args(recipe, "resumed", "--set", "train.epochs=1"), cwd=root)
    part = root / "runs" / "resumed" / "seed-42"
    assert len(_lines(part / "metrics.jsonl")) == 1
    (part / "results.json").unlink()  # the 1-epoch run finished; make it an unfinished one to resume
    torchrun(_train_args(recipe, "resumed", "--resume"), cwd=root)

    a, b = (
        load_file(str(full / "checkpoints" / "last.safetensors")),
        load_file(str(part / "checkpoints" / "last.safetensors")),
    )
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith(("model.", "optimizer.")):
            assert torch.equal(a[key], b[key]), key
    la, lb = _lines(full / "metrics.jsonl"), _lines(part / "metrics.jsonl")
    assert [(r["score"], r["loss"]) for r in la] == [(r["score"], r["loss"]) for r in lb]
    ra, rb = json.loads((full / "results.json").read_text()), json.loads((part / "results.json").read_text())
    assert ra["test"] == rb["test"] and ra["best_epoch"] == rb["best_epoch"]


class _FakeRuntime:
    """Rank ``rank`` of 2, in one process: what ``_checkpoint`` / ``_resume`` ask of a DistributedRuntime."""

    world_size = 2

    def __init__(self, rank: int, states: list, files: dict) -> None:
        self.rank, self.states, self.files = rank, states, files

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather(self, value):
        return [value if r == self.rank else self.states[r] for r in range(self.world_size)]

    def on_main(self, fn):
        return fn()

    def read_bytes(self, path: Path) -> bytes:
        return self.files["last"]


def test_each_rank_gets_its_own_rng_state_back(tmp_path) -> None:
    """Dropout streams differ per rank; a resume gives every rank its own saved state (in-process check)."""
    from esrkit.data.tensors import DeviceSequences
    from esrkit.models import MODELS
    from esrkit.training.distributed import DistributedTrainer
    from esrkit.training.rundir import RunDir
    from esrkit.training.trainer import TrainerOptions
    from tests.training.helpers import small_data

    data = small_data()
    rd = RunDir(tmp_path)
    rd.checkpoints.mkdir(parents=True)

    def trainer(rank: int, states: list, files: dict) -> DistributedTrainer:
        torch.manual_seed(0)
        model = MODELS.get("id")(data.n_items, backbone="sasrec", hidden=8, max_len=20)
        return DistributedTrainer(
            model,
            DeviceSequences(data),
            TrainerOptions(max_len=20),
            lambda m, e: {},
            rd if rank == 0 else None,
            None,
            progress=False,
            runtime=_FakeRuntime(rank, states, files),
        )

    rank1_state = torch.Generator().manual_seed(1234).get_state()
    saver = trainer(0, [None, {"torch": rank1_state}], {})
    saver.state.epoch = 1
    saver._checkpoint({"epoch": 0, "loss": 1.0})
    files = {"last": rd.last.read_bytes()}
    rank0_state = torch.get_rng_state()

    torch.manual_seed(99)
    trainer(1, [], files)._resume()
    assert torch.equal(torch.get_rng_state(), rank1_state)
    torch.manual_seed(99)
    resumed = trainer(0, [], files)
    resumed._resume()
    assert torch.equal(torch.get_rng_state(), rank0_state) and resumed.state.epoch == 1


def test_every_rank_resumes_the_weight_average(tmp_path) -> None:
    """``train.ema``: the distributed checkpoint holds the average; every rank gets it back (in-process)."""
    from esrkit.data.tensors import DeviceSequences
    from esrkit.models import MODELS
    from esrkit.training.distributed import DistributedTrainer
    from esrkit.training.rundir import RunDir
    from esrkit.training.trainer import TrainerOptions
    from tests.training.helpers import small_data

    data = small_data()
    rd = RunDir(tmp_path)
    rd.checkpoints.mkdir(parents=True)

    def trainer(rank: int, files: dict) -> DistributedTrainer:
        torch.manual_seed(0)
        model = MODELS.get("id")(data.n_items, backbone="sasrec", hidden=8, max_len=20)
        return DistributedTrainer(
            model,
            DeviceSequences(data),
            TrainerOptions(max_len=20, ema=0.9),
            lambda m, e: {},
            rd if rank == 0 else None,
            None,
            progress=False,
            runtime=_FakeRuntime(rank, [None, {"torch": torch.get_rng_state()}], files),
        )

    saver = trainer(0, {})
    saver.average.update(saver.model)
    with torch.no_grad():
        for p in saver.model.parameters():
            p.add_(1.0)
    saver.average.update(saver.model)  # the average is now 0.1 away from the weights
    saver.state.epoch = 1
    saver._checkpoint({"epoch": 0, "loss": 1.0})
    files = {"last": rd.last.read_bytes()}
    for rank in (0, 1):
        resumed = trainer(rank, files)
        resumed._resume()
        assert resumed.average.shadow.keys() == saver.average.shadow.keys()
        for name, value in saver.average.shadow.items():
            assert torch.equal(resumed.average.shadow[name], value), name
