"""Data-parallel training on the existing engines: ``torchrun`` + ``torch.distributed`` + DistributedDataParallel.

``torchrun --nproc-per-node N -m esrkit train --recipe R ...`` (one process per GPU, or N CPU processes) runs the
same pipeline as ``esrkit train``; every process finds ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in its environment
and joins one process group (NCCL for CUDA tensors and gloo for CPU tensors on GPU machines, gloo on CPU-only
ones). Nothing changes for a single process: ``runtime()`` then returns the plain ``Runtime`` whose every hook is
the single-process behaviour, so ``esrkit train`` / ``esrkit demo`` stay bit-for-bit what they were.

How the work is split (see docs/SCALING.md):

* **Sample order.** Epoch ``e`` uses the single-process permutation (``np.random.default_rng([seed, e])``) and the
  same global batches of ``train.batch_size`` samples: ``train.batch_size`` is the *global* batch, whatever the
  number of processes. Rank ``r`` of ``N`` trains on rows ``r, r + N, r + 2N, ...`` of each global batch, which is
  exactly ``DistributedSampler(shuffle=False)`` over the epoch's permutation with a per-rank batch of
  ``batch_size / N``. Nothing is padded or dropped: a short last batch is split unevenly (sizes differ by at most
  one) and a rank left with no row runs one row with weight 0, so every sample is seen once per epoch, as in a
  single process.
* **Sampling.** Every rank builds the whole global batch from the epoch's generator (the same draws as a single
  process: negatives, cloze masks, rejection-sampling redraws), then keeps its rows. Batch building is cheap index
  work next to the forward and backward passes, and it keeps negatives and masks identical to a single process.
* **Loss scale.** The ranking loss is a mean over the scored positions of the *global* batch and self-distillation
  a mean over its users, so each rank multiplies its local mean by ``N x local count / global count``; DDP's
  gradient average then gives exactly the single-process gradient of the global batch (up to floating-point
  summation order). Model-specific losses (``training_loss`` / ``auxiliary_loss`` of the baselines) are averaged
  over ranks as plain DDP does.
* **Teachers.** Every process holds all sequences (``DeviceSequences``), so a user's similar users are gathered by
  their global row, whichever rank trains that user.
* **Dropout.** The global torch RNG drives dropout; rank 0 keeps the single-process seed, rank r > 0 a stream of
  its own (``rank_seed``). Each rank's RNG state is saved in the checkpoint, so a resumed distributed run
  continues exactly where the interrupted one was.
* **Evaluation** is sharded: rank r encodes and ranks a contiguous range of user rows, the ranks are all-gathered,
  and every process computes the same metrics, so early stopping agrees everywhere.
* **Files.** Only rank 0 writes the run directory (config, provenance, metrics, checkpoints, results, summary);
  on resume rank 0 reads the checkpoint and broadcasts its bytes, so other nodes need no shared filesystem for it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.evaluation.evaluator import Evaluator
from esrkit.models.base import SeqInput
from esrkit.models.recommender import SequentialRecommender
from esrkit.training import checkpoint as ckpt
from esrkit.training.batches import TrainBatch
from esrkit.training.objectives import length_buckets
from esrkit.training.trainer import StepContext, Trainer
from esrkit.utils.io import append_jsonl

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT_S = 3600.0  # collectives (and the wait while rank 0 prepares inputs) time out after an hour
_OWNS_GROUP = False


# ---------------------------------------------------------------------------------------------- process group
def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launched() -> bool:
    """True in a process started by torchrun / accelerate launch with more than one process."""
    return env_int("WORLD_SIZE", 1) > 1


def init_process_group(timeout_s: float | None = None) -> bool:
    """Join the process group described by the environment (``env://``); False when there is none to join.

    Backend: ``cpu:gloo,cuda:nccl`` when CUDA is available (DDP's CUDA gradients over NCCL, small CPU objects over
    gloo), ``gloo`` otherwise; ``ESRKIT_DIST_BACKEND`` overrides. ``ESRKIT_DIST_TIMEOUT_S`` (default one hour)
    bounds every collective, including the barrier other ranks wait at while rank 0 prepares data and embeddings.
    """
    global _OWNS_GROUP
    import torch.distributed as dist

    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if not launched():
        return False
    cuda = torch.cuda.is_available()
    backend = os.environ.get("ESRKIT_DIST_BACKEND") or ("cpu:gloo,cuda:nccl" if cuda else "gloo")
    if cuda and "nccl" in backend:
        torch.cuda.set_device(env_int("LOCAL_RANK", 0) % max(torch.cuda.device_count(), 1))
    seconds = timeout_s if timeout_s is not None else float(os.environ.get("ESRKIT_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=seconds))
    _OWNS_GROUP = True
    log.info("rank %d/%d joined the process group (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def shutdown(wait: bool = True) -> None:
    """Leave the process group if this module created it. ``wait``: first meet every rank at a barrier, so no rank
    tears its connections down while a peer still uses them (under load, gloo could abort a rank at exit with
    "terminate called without an active exception"); pass False on an error path, where a peer may never come."""
    global _OWNS_GROUP
    import torch.distributed as dist

    if _OWNS_GROUP and dist.is_available() and dist.is_initialized():
        if wait:
            try:
                dist.barrier()
            except Exception:  # noqa: BLE001 - leaving anyway; the run's own outcome is already decided
                log.warning("ranks did not meet before leaving the process group")
        dist.destroy_process_group()
    _OWNS_GROUP = False


def exit_rank_now() -> None:
    """End this rank of a distributed run right here, skipping interpreter teardown. Once the process group is gone
    and the results are written and printed nothing is left to do, and torch's C++ teardown can abort a rank at exit
    ("terminate called without an active exception", seen with gloo on a 2-core machine), which makes torchrun
    report the whole run as failed."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of a rank: the run's seed on rank 0 (the single-process stream), a derived one elsewhere."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [lo, hi) of ``n`` rows for ``rank`` (sizes differ by at most one)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


# ---------------------------------------------------------------------------------------------- runtimes
class Runtime:
    """A single process: every hook is the plain single-process behaviour."""

    rank = 0
    world_size = 1
    local_rank = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, name: str) -> torch.device:
        from esrkit.training.pipeline import resolve_device

        return resolve_device(name)

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and give its (picklable) result to every rank; rank 0's error is raised everywhere."""
        return fn()

    def staged(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank, rank 0 first (so it fills the workdir caches the others then read)."""
        return fn()

    def barrier(self) -> None:
        pass

    def evaluator_class(self) -> type[Evaluator]:
        return Evaluator

    def trainer(self, model, seqs, options, validate, run_dir, distillation, progress: bool = True) -> Trainer:
        return Trainer(model, seqs, options, validate, run_dir, distillation, progress=progress)

    def load_model(self, path: Path, model: nn.Module) -> dict[str, Any]:
        return ckpt.load_model(path, model)

    def describe(self) -> dict[str, Any] | None:
        return None


class DistributedRuntime(Runtime):
    """One rank of a torch.distributed process group (see the module docstring)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_rank = env_int("LOCAL_RANK", self.rank)
        self.local_world_size = env_int("LOCAL_WORLD_SIZE", self.world_size)

    def device(self, name: str) -> torch.device:
        """``auto`` / ``cuda`` / ``cuda:N`` -> this process's GPU (``cuda:LOCAL_RANK``); ``cpu`` stays the CPU."""
        if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
        if name not in ("auto", "cuda"):
            log.warning("train.device=%s ignored under torchrun: rank %d uses cuda:%d (its LOCAL_RANK)", name,
                        self.rank, self.local_rank)
        return torch.device("cuda", self.local_rank % torch.cuda.device_count())

    # -------------------------------------------------------------- collectives on small host objects (gloo)
    def broadcast(self, value: Any, src: int = 0) -> Any:
        box = [value]
        self.dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        self.dist.barrier()

    def on_main(self, fn: Callable[[], T]) -> T:
        payload: tuple[str, Any] = ("ok", None)
        error: BaseException | None = None
        if self.is_main:
            try:
                payload = ("ok", fn())
            except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
                error, payload = exc, ("error", f"{type(exc).__name__}: {exc}")
        status, value = self.broadcast(payload)
        if status == "error":
            if error is not None:
                raise error
            raise RuntimeError(f"rank 0 failed: {value}")
        return value

    def staged(self, fn: Callable[[], T]) -> T:
        """Three waves: global rank 0, then local rank 0 of every other node (a node-local workdir), then the rest;
        an error in any wave stops every rank."""
        result: Any = None
        waves = (self.rank == 0, self.rank != 0 and self.local_rank == 0, self.local_rank != 0 and self.rank != 0)
        for mine in waves:
            error: Exception | None = None
            message = None
            if mine:
                try:
                    result = fn()
                except Exception as exc:  # noqa: BLE001 - re-raised below
                    error, message = exc, f"rank {self.rank}: {type(exc).__name__}: {exc}"
            failures = [m for m in self.all_gather(message) if m]
            if failures:
                if error is not None:
                    raise error
                raise RuntimeError(f"input preparation failed on {failures[0]}")
        return result

    # -------------------------------------------------------------- pipeline hooks
    def evaluator_class(self) -> type[Evaluator]:
        return ShardedEvaluator

    def trainer(self, model, seqs, options, validate, run_dir, distillation, progress: bool = True) -> Trainer:
        return DistributedTrainer(model, seqs, options, validate, run_dir if self.is_main else None, distillation,
                                  progress=progress and self.is_main, runtime=self)

    def read_bytes(self, path: Path) -> bytes:
        """Rank 0 reads a checkpoint and checks its recorded hash, everyone gets the bytes (no shared
        filesystem needed)."""
        return self.on_main(lambda: ckpt.read_checkpoint_bytes(path))

    def load_model(self, path: Path, model: nn.Module) -> dict[str, Any]:
        tensors, meta = tensors_from_bytes(self.read_bytes(path), path)
        device = next(model.parameters()).device
        model.load_state_dict({k: v.to(device) for k, v in tensors.items()})
        return meta

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "local_world_size": self.local_world_size,
                "backend": str(self.dist.get_backend()), "global_batch": "train.batch_size (split over ranks)"}


def runtime() -> Runtime:
    """The runtime of this process: distributed when launched by torchrun / accelerate (joining the process group
    on first use), the plain single-process one otherwise."""
    import torch.distributed as dist

    joined = dist.is_available() and (dist.is_initialized() or launched()) and init_process_group()
    return DistributedRuntime() if joined and dist.get_world_size() > 1 else Runtime()


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
    single-process ranks and metrics. (``ties="random"`` draws its tie-breaking numbers per shard, so those ranks
    are not the single-process ones; the default ``pessimistic`` ties need no randomness.)"""

    def compute_ranks(self, model: SequentialRecommender, protocols, rows=None) -> dict[str, np.ndarray]:
        rt = runtime()
        if rows is not None or not isinstance(rt, DistributedRuntime):
            return super().compute_ranks(model, protocols, rows)
        lo, hi = shard_range(self.data.n_users, rt.rank, rt.world_size)
        if hi > lo:
            mine = super().compute_ranks(model, protocols, (lo, hi))
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
    """The rows ``positions`` of every per-row field (tensors, host arrays, the input), whatever fields exist."""
    idx = torch.as_tensor(positions, device=batch.users.device)

    def take(value: Any) -> Any:
        if isinstance(value, SeqInput):
            return value.rows(idx)
        if isinstance(value, Tensor):
            return value[idx]
        if isinstance(value, np.ndarray):
            return value[positions]
        return value

    return dataclasses.replace(batch, **{f.name: take(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


def scored(batch: TrainBatch) -> Tensor:
    """How many terms the ranking loss averages over (``last``: one per row; otherwise the non-zero targets)."""
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

    The parts are ``Trainer.default_losses`` of the rank's rows (local means), re-weighted: the sum over ranks of
    the first, divided by N (DDP's gradient average), is the single-process loss of the global batch, and the same
    holds for every part.
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
    """DDP's ``find_unused_parameters``: every parameter of the plain backbones and of LLM-ESR (all ablations) gets
    a gradient at every step, so it is off for them; the baselines with their own losses switch stages (some
    parameters get none), so it is on for them. ``ESRKIT_DDP_FIND_UNUSED=0/1`` overrides."""
    forced = os.environ.get("ESRKIT_DDP_FIND_UNUSED", "")
    if forced:
        return forced not in ("0", "false", "no")
    cls = type(model)
    return (cls.training_loss is not SequentialRecommender.training_loss
            or cls.auxiliary_loss is not SequentialRecommender.auxiliary_loss)


class DistributedTrainer(Trainer):
    """``Trainer`` whose steps run one rank's share of each global batch through DistributedDataParallel."""

    def __init__(self, *args: Any, runtime: DistributedRuntime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rt = runtime
        self._ddp: nn.Module | None = None

    def ddp(self) -> nn.Module:
        """Built at the first step, after a resume loaded the checkpoint (DDP broadcasts rank 0's weights)."""
        if self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel as DDP

            find_unused = _find_unused_parameters(self.model)
            # device_ids=None: the batch is built on the model's device already, so DDP need not walk the inputs
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
        for r, st in enumerate(states):
            tensors.update({f"rng.rank{r}.{k}": v for k, v in st.items()})
        ckpt.save_tensors(self.run_dir.last, tensors, {"optimizer": opt_meta, "trainer": self._state_dict(),
                                                       "world_size": self.rt.world_size})

    def _resume(self) -> None:
        assert self.run_dir is not None or not self.rt.is_main
        path = self.run_dir.last if self.run_dir else Path()
        tensors, meta = tensors_from_bytes(self.rt.read_bytes(path), path)
        device = next(self.model.parameters()).device
        self.model.load_state_dict({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")})
        ckpt.optimizer_from_tensors(self.optimizer, {k: v.to(device) for k, v in tensors.items()
                                                     if k.startswith("optimizer.")}, meta["optimizer"])
        own = f"rng.rank{self.rt.rank}."
        if any(k.startswith(own) for k in tensors):
            ckpt.restore_rng({"rng." + k[len(own):]: v for k, v in tensors.items() if k.startswith(own)})
        elif self.rt.rank == 0:
            ckpt.restore_rng(tensors)
        else:  # a checkpoint of fewer ranks: a fresh stream for this rank, still reproducible
            torch.manual_seed(rank_seed(self.opt_cfg.seed * 100_003 + int(meta["trainer"]["epoch"]), self.rt.rank))
        self._restore_state(meta["trainer"])  # only rank 0 has a run directory, so only it rewrites metrics.jsonl
        s = self.state
        log.info("rank %d resumed at epoch %d (best %.4f @ %d)", self.rt.rank, s.epoch, s.best_score, s.best_epoch)
