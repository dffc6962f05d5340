"""Data-parallel training on the existing engines: ``torchrun`` + ``torch.distributed`` +
DistributedDataParallel.

``torchrun --nproc-per-node N -m esrkit train --recipe R ...`` (one process per GPU, or N CPU processes) runs
the same pipeline as ``esrkit train``; every process finds ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in its
environment and joins one process group (NCCL for CUDA tensors and gloo for CPU tensors on GPU machines, gloo
on CPU-only ones). Nothing changes for a single process: ``runtime()`` then returns the plain ``Runtime``
whose every hook is the single-process behaviour, so ``esrkit train`` / ``esrkit demo`` stay bit-for-bit what
they were.

How the work is split (see docs/SCALING.md):

* **Sample order.** Epoch ``e`` uses the single-process permutation (``np.random.default_rng([seed, e])``) and
  the same global batches of ``train.batch_size`` samples: ``train.batch_size`` is the *global* batch,
  whatever the number of processes. Rank ``r`` of ``N`` trains on rows ``r, r + N, r + 2N, ...`` of each
  global batch, which is exactly ``DistributedSampler(shuffle=False)`` over the epoch's permutation with a
  per-rank batch of ``batch_size / N``. Nothing is padded or dropped: a short last batch is split unevenly
  (sizes differ by at most one) and a rank left with no row runs one row with weight 0, so every sample is
  seen once per epoch, as in a single process.
* **Sampling.** Every rank builds the whole global batch from the epoch's generator (the same draws as a
  single process: negatives, cloze masks, rejection-sampling redraws), then keeps its rows. Batch building is
  cheap index work next to the forward and backward passes, and it keeps negatives and masks identical to a
  single process.
* **Loss scale.** The ranking loss is a mean over the scored positions of the *global* batch and
  self-distillation a mean over its users, so each rank multiplies its local mean by ``N x local count /
  global count``; DDP's gradient average then gives exactly the single-process gradient of the global batch
  (up to floating-point summation order). Model-specific losses (``training_loss`` / ``auxiliary_loss`` of the
  baselines) are averaged over ranks as plain DDP does.
* **Teachers.** Every process holds all sequences (``DeviceSequences``), so a user's similar users are
  gathered by their global row, whichever rank trains that user.
* **Dropout.** The global torch RNG drives dropout; rank 0 keeps the single-process seed, rank r > 0 a stream
  of its own (``rank_seed``). Each rank's RNG state is saved in the checkpoint, so a resumed distributed run
  continues exactly where the interrupted one was.
* **Evaluation** is sharded: rank r encodes and ranks a contiguous range of user rows, the ranks are
  all-gathered, and every process computes the same metrics, so early stopping agrees everywhere.
* **Files.** Only rank 0 writes the run directory (config, provenance, metrics, checkpoints, results,
  summary); on resume rank 0 reads the checkpoint and broadcasts its bytes, so other nodes need no shared
  filesystem for it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from esrkit.data.batches import TrainBatch
from esrkit.data.tensors import SeqInput, length_buckets
from esrkit.evaluation.evaluator import Evaluator
from esrkit.models.recommender import SequentialRecommender
from esrkit.training import checkpoint as ckpt
from esrkit.training.trainer import StepContext, Trainer
from esrkit.utils import runtime as processes
from esrkit.utils.io import append_jsonl
from esrkit.utils.runtime import exit_rank_now, init_process_group, launched, rank_seed, shard_range, shutdown

log = logging.getLogger(__name__)

__all__ = [
    "DistributedRuntime",
    "DistributedTrainer",
    "Runtime",
    "ShardedEvaluator",
    "exit_rank_now",
    "init_process_group",
    "launched",
    "local_step",
    "rank_seed",
    "runtime",
    "shard_range",
    "shutdown",
    "weighted_losses",
]


# ---------------------------------------------------------------------------------------------- runtimes
class Runtime(processes.Runtime):
    """A single process (esrkit/utils/runtime.py) with training's hooks: every hook is the plain
    single-process behaviour."""

    def evaluator_class(self) -> type[Evaluator]:
        return Evaluator

    def trainer(
        self, model, seqs, options, validate, run_dir, distillation, progress: bool = True
    ) -> Trainer:
        return Trainer(model, seqs, options, validate, run_dir, distillation, progress=progress)

    def load_model(self, path: Path, model: nn.Module) -> dict[str, Any]:
        return ckpt.load_model(path, model)


class DistributedRuntime(processes.DistributedRuntime, Runtime):
    """One rank of a torch.distributed process group with training's hooks (see the module docstring)."""

    def evaluator_class(self) -> type[Evaluator]:
        return ShardedEvaluator

    def trainer(
        self, model, seqs, options, validate, run_dir, distillation, progress: bool = True
    ) -> Trainer:
        return DistributedTrainer(
            model,
            seqs,
            options,
            validate,
            run_dir if self.is_main else None,
            distillation,
            progress=progress and self.is_main,
            runtime=self,
        )

    def read_bytes(self, path: Path) -> bytes:
        """Rank 0 reads a checkpoint and checks its recorded hash, everyone gets the bytes (no shared
        filesystem needed)."""
        return self.on_main(lambda: ckpt.read_checkpoint_bytes(path))

    def load_model(self, path: Path, model: nn.Module) -> dict[str, Any]:
        tensors, meta = tensors_from_bytes(self.read_bytes(path), path)
        device = next(model.parameters()).device
        model.load_state_dict({k: v.to(device) for k, v in tensors.items()})
        return meta


def runtime() -> Runtime:
    """The runtime of this process: distributed when launched by torchrun / accelerate (joining the process
    group on first use), the plain single-process one otherwise."""
    return processes.runtime(Runtime, DistributedRuntime)


# ---------------------------------------------------------------------------------------------- checkpoints
tensors_from_bytes = ckpt.tensors_from_bytes  # a broadcast checkpoint's tensors (kept importable from here)


def _rng_state() -> dict[str, Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


# ---------------------------------------------------------------------------------------------- evaluation
class ShardedEvaluator(Evaluator):
    """Each rank ranks a contiguous range of user rows; the ranks are all-gathered, so every rank returns the
    single-process ranks and metrics. (``ties="random"`` draws its tie-breaking numbers per shard, so those
    ranks are not the single-process ones; the default ``pessimistic`` ties need no randomness.)"""

    def compute_ranks(
        self, model: SequentialRecommender, protocols, rows=None, users=None
    ) -> dict[str, np.ndarray]:
        rt = runtime()
        if rows is not None or not isinstance(rt, DistributedRuntime):
            return super().compute_ranks(model, protocols, rows, users)
        lo, hi = shard_range(self.data.n_users, rt.rank, rt.world_size)
        if hi > lo:
            mine = super().compute_ranks(model, protocols, (lo, hi), None if users is None else users[lo:hi])
        else:  # more ranks than users: nothing to rank, but keep the negatives' resampling rounds in step
            if "sampled" in protocols:
                self.negatives()
            mine = {p: np.zeros(0, dtype=np.int64) for p in ("sampled", "full") if p in protocols}
        parts = rt.all_gather(mine)
        return {p: np.concatenate([part[p] for part in parts]) for p in mine}


# ---------------------------------------------------------------------------------------------- training
@dataclass
class LocalStep:
    """One rank's share of a global batch."""

    batch: TrainBatch  # the rank's rows of the global batch
    rows: np.ndarray  # their sample indices
    buckets: list[np.ndarray]
    w_rank: Tensor  # N x (scored positions here) / (scored positions in the global batch)
    w_rows: Tensor  # N x (rows here) / (rows in the global batch)


def slice_batch(batch: TrainBatch, positions: np.ndarray) -> TrainBatch:
    """The rows ``positions`` of every per-row field (tensors, host arrays, the input), whatever fields
    exist."""
    idx = torch.as_tensor(positions, device=batch.users.device)

    def take(value: Any) -> Any:
        if isinstance(value, SeqInput):
            return value.rows(idx)
        if isinstance(value, Tensor):
            return value[idx]
        if isinstance(value, np.ndarray):
            return value[positions]
        return value

    return dataclasses.replace(
        batch, **{f.name: take(getattr(batch, f.name)) for f in dataclasses.fields(batch)}
    )


def scored(batch: TrainBatch) -> Tensor:
    """How many terms the ranking loss averages over (``last``: one per row; otherwise the non-zero
    targets)."""
    if batch.pos.dim() == 1:
        return torch.tensor(batch.pos.shape[0], device=batch.pos.device)
    return (batch.pos != 0).sum()


def local_step(trainer: Trainer, rows: np.ndarray, gen: torch.Generator, rank: int, world: int) -> LocalStep:
    """Build the global batch ``rows`` exactly as a single process would, and keep rank ``rank``'s share."""
    full = trainer.make_batch(rows, gen)
    positions = np.arange(rank, len(rows), world)
    empty = len(positions) == 0
    if empty:  # a last batch smaller than the world: run one row with weight 0 (DDP needs every rank)
        positions = np.zeros(1, dtype=np.int64)
    local = slice_batch(full, positions)
    mine = rows[positions]
    buckets = length_buckets(trainer.input_lengths(mine), trainer.opt_cfg.buckets)
    scale = 0.0 if empty else float(world)
    w_rank = scale * scored(local).float() / scored(full).clamp(min=1).float()
    w_rows = torch.tensor(scale * len(positions) / len(rows), device=full.pos.device)
    return LocalStep(local, mine, buckets, w_rank, w_rows)


def weighted_losses(trainer: Trainer, step: LocalStep, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
    """(what this rank back-propagates, {part: its share of the single-process value x N}).

    The parts are ``Trainer.default_losses`` of the rank's rows (local means), re-weighted: the sum over ranks
    of the first, divided by N (DDP's gradient average), is the single-process loss of the global batch, and
    the same holds for every part.
    """
    custom = trainer.model.training_loss(step.batch, ctx)
    if custom is not None:  # a model's own loss: plain DDP semantics (mean over ranks of local means)
        return custom["loss"], dict(custom)
    parts = trainer.default_losses(step.batch, ctx)  # teachers by global user row: all sequences are local
    shares = {"loss": parts["rank"], "rank": step.w_rank * parts["rank"]}
    total = shares["rank"]
    if "sd" in parts:
        shares["sd"] = step.w_rows * parts["sd"]
        total = total + trainer.sd.alpha * shares["sd"]
    if "aux" in parts:
        shares["aux"] = parts["aux"]
        total = total + parts["aux"]
    shares["loss"] = total
    return total, shares


class _StepModule(nn.Module):
    """What DDP wraps: the model (its parameters) and a forward that is one rank's weighted training loss."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.model = trainer.model
        object.__setattr__(self, "_trainer", trainer)  # not a submodule: DDP sees the model's parameters only

    def forward(self, step: LocalStep, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        return weighted_losses(self._trainer, step, ctx)


def _find_unused_parameters(model: SequentialRecommender) -> bool:
    """DDP's ``find_unused_parameters``: every parameter of the plain backbones and of LLM-ESR (all ablations)
    gets a gradient at every step, so it is off for them; the baselines with their own losses switch stages
    (some parameters get none), so it is on for them. ``ESRKIT_DDP_FIND_UNUSED=0/1`` overrides."""
    forced = os.environ.get("ESRKIT_DDP_FIND_UNUSED", "")
    if forced:
        return forced not in ("0", "false", "no")
    cls = type(model)
    return (
        cls.training_loss is not SequentialRecommender.training_loss
        or cls.auxiliary_loss is not SequentialRecommender.auxiliary_loss
    )


class DistributedTrainer(Trainer):
    """``Trainer`` whose steps run one rank's share of each global batch through DistributedDataParallel."""

    def __init__(self, *args: Any, runtime: DistributedRuntime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rt = runtime
        self._ddp: nn.Module | None = None

    def ddp(self) -> nn.Module:
        """Built at the first step, after a resume loaded the checkpoint (DDP broadcasts rank 0's weights)."""
        if self._ddp is None:
            find_unused = _find_unused_parameters(self.model)
            # device_ids=None: the batch is built on the model's device already, so DDP need not walk the
            # inputs
            self._ddp = DDP(_StepModule(self), device_ids=None, find_unused_parameters=find_unused)
        return self._ddp

    def step(self, rows: np.ndarray, gen: torch.Generator, epoch: int = 0) -> dict[str, float]:
        share = local_step(self, rows, gen, self.rt.rank, self.rt.world_size)
        module = self.ddp()
        total, parts = module(share, StepContext(self, epoch, share.buckets, gen))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        values = torch.stack([v.detach().float().reshape(()) for v in parts.values()])
        self.rt.dist.all_reduce(values)
        return dict(zip(parts, (values / self.rt.world_size).tolist()))

    # -------------------------------------------------------------- seeds, checkpoints, resume
    def _seed(self) -> None:
        torch.manual_seed(rank_seed(self.opt_cfg.seed, self.rt.rank))

    def _has_checkpoint(self) -> bool:
        return bool(self.rt.on_main(lambda: self.run_dir is not None and self.run_dir.last.exists()))

    def _checkpoint(self, record: dict[str, Any]) -> None:
        states = self.rt.all_gather(_rng_state())  # every rank's dropout stream, for an exact resume
        if self.run_dir is None:
            return
        append_jsonl(self.run_dir.metrics, record)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_tensors, opt_meta = ckpt.optimizer_to_tensors(self.optimizer)
        tensors.update(opt_tensors)
        tensors.update(ckpt.rng_tensors())  # rank 0's: a single process resuming this checkpoint uses it
        tensors.update(self._average_tensors())
        for r, st in enumerate(states):
            tensors.update({f"rng.rank{r}.{k}": v for k, v in st.items()})
        ckpt.save_tensors(
            self.run_dir.last,
            tensors,
            {"optimizer": opt_meta, "trainer": self._state_dict(), "world_size": self.rt.world_size},
        )

    def _resume(self) -> None:
        assert self.run_dir is not None or not self.rt.is_main
        path = self.run_dir.last if self.run_dir else Path()
        tensors, meta = tensors_from_bytes(self.rt.read_bytes(path), path)
        device = next(self.model.parameters()).device
        self.model.load_state_dict(
            {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
        )
        ckpt.optimizer_from_tensors(
            self.optimizer,
            {k: v.to(device) for k, v in tensors.items() if k.startswith("optimizer.")},
            meta["optimizer"],
        )
        own = f"rng.rank{self.rt.rank}."
        if any(k.startswith(own) for k in tensors):
            ckpt.restore_rng({"rng." + k[len(own) :]: v for k, v in tensors.items() if k.startswith(own)})
        elif self.rt.rank == 0:
            ckpt.restore_rng(tensors)
        else:  # a checkpoint of fewer ranks: a fresh stream for this rank, still reproducible
            torch.manual_seed(
                rank_seed(self.opt_cfg.seed * 100_003 + int(meta["trainer"]["epoch"]), self.rt.rank)
            )
        self._restore_state(
            meta["trainer"]
        )  # only rank 0 has a run directory, so only it rewrites metrics.jsonl
        self._restore_average(tensors)
        s = self.state
        log.info(
            "rank %d resumed at epoch %d (best %.4f @ %d)", self.rt.rank, s.epoch, s.best_score, s.best_epoch
        )
