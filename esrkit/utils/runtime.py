"""The process runtime: one process, or one rank of a ``torch.distributed`` process group, and its device.

``torchrun`` / ``accelerate launch`` start several processes; each finds ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` in its environment and joins one process group (NCCL for CUDA tensors and gloo for CPU tensors
on GPU machines, gloo on CPU-only ones). ``runtime()`` returns the plain single-process ``Runtime`` otherwise,
whose every method is the single-process behaviour. Distributed embedding (esrkit/embedding/distributed.py)
and distributed training (esrkit/training/distributed.py, which adds training's hooks) both build on this.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT_S = 3600.0  # collectives (and the wait while rank 0 prepares inputs) time out after an hour
_OWNS_GROUP = False


# ---------------------------------------------------------------------------------------------- devices
def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; a CUDA device asked for without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
    return dev


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

    Backend: ``cpu:gloo,cuda:nccl`` when CUDA is available (DDP's CUDA gradients over NCCL, small CPU objects
    over gloo), ``gloo`` otherwise; ``ESRKIT_DIST_BACKEND`` overrides. ``ESRKIT_DIST_TIMEOUT_S`` (default one
    hour) bounds every collective, including the barrier other ranks wait at while rank 0 prepares data and
    embeddings.
    """
    global _OWNS_GROUP
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
    seconds = (
        timeout_s
        if timeout_s is not None
        else float(os.environ.get("ESRKIT_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    )
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=seconds))
    _OWNS_GROUP = True
    log.info("rank %d/%d joined the process group (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def shutdown(wait: bool = True) -> None:
    """Leave the process group if this module created it. ``wait``: first meet every rank at a barrier, so no
    rank tears its connections down while a peer still uses them (under load, gloo could abort a rank at exit
    with "terminate called without an active exception"); pass False on an error path, where a peer may never
    come."""
    global _OWNS_GROUP
    if _OWNS_GROUP and dist.is_available() and dist.is_initialized():
        if wait:
            try:
                dist.barrier()
            except Exception:  # noqa: BLE001 - leaving anyway; the run's own outcome is already decided
                log.warning("ranks did not meet before leaving the process group")
        dist.destroy_process_group()
    _OWNS_GROUP = False


def exit_rank_now() -> None:
    """End this rank of a distributed run right here, skipping interpreter teardown. Once the process group is
    gone and the results are written and printed nothing is left to do, and torch's C++ teardown can abort a
    rank at exit ("terminate called without an active exception", seen with gloo), which makes torchrun report
    the whole run as failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of a rank: the run's seed on rank 0 (the single-process stream), a derived one
    elsewhere."""
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
    """A single process: every method is the plain single-process behaviour."""

    rank = 0
    world_size = 1
    local_rank = 0
    local_world_size = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, name: str) -> torch.device:
        return resolve_device(name)

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and give its (picklable) result to every rank; rank 0's error is raised
        everywhere."""
        return fn()

    def staged(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank, rank 0 first (so it fills the workdir caches the others then read)."""
        return fn()

    def barrier(self) -> None:
        pass

    def broadcast(self, value: Any, src: int = 0) -> Any:
        return value

    def all_gather(self, value: Any) -> list[Any]:
        return [value]

    def describe(self) -> dict[str, Any] | None:
        return None


class DistributedRuntime(Runtime):
    """One rank of a torch.distributed process group."""

    def __init__(self) -> None:
        self.dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_rank = env_int("LOCAL_RANK", self.rank)
        self.local_world_size = env_int("LOCAL_WORLD_SIZE", self.world_size)

    def device(self, name: str) -> torch.device:
        """``auto`` / ``cuda`` / ``cuda:N`` -> this process's GPU (``cuda:LOCAL_RANK``); ``cpu`` stays the
        CPU."""
        if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
        if name not in ("auto", "cuda"):
            log.warning(
                "train.device=%s ignored under torchrun: rank %d uses cuda:%d (its LOCAL_RANK)",
                name,
                self.rank,
                self.local_rank,
            )
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
        """Three waves: global rank 0, then local rank 0 of every other node (a node-local workdir), then the
        rest; an error in any wave stops every rank."""
        result: Any = None
        waves = (
            self.rank == 0,
            self.rank != 0 and self.local_rank == 0,
            self.local_rank != 0 and self.rank != 0,
        )
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

    def describe(self) -> dict[str, Any]:
        return {
            "world_size": self.world_size,
            "local_world_size": self.local_world_size,
            "backend": str(self.dist.get_backend()),
            "global_batch": "train.batch_size (split over ranks)",
        }


def runtime(
    single: type[Runtime] = Runtime, distributed: type[DistributedRuntime] = DistributedRuntime
) -> Runtime:
    """The runtime of this process: ``distributed`` when launched by torchrun / accelerate (joining the
    process group on first use), ``single`` otherwise (the classes let a layer above add its own hooks)."""
    joined = dist.is_available() and (dist.is_initialized() or launched()) and init_process_group()
    return distributed() if joined and dist.get_world_size() > 1 else single()
