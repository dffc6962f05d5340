"""The training loop: Adam, early stopping on a validation metric, resumable checkpoints.

Official schedule (``trainers/trainer.py``): Adam (lr 1e-3, no weight decay, no LR decay), batch 128, up to
200 epochs, validation every epoch, early stopping when validation N@10 has not *strictly* improved for
``patience`` (20) epochs; the best-validation checkpoint is tested once at the end.

Reproducibility: the sample order and all sampling (negatives, cloze masks) of epoch ``e`` come from
generators seeded by (seed, e); dropout uses the global torch RNG, whose state is saved with every ``last``
checkpoint. A run interrupted at any point and resumed with ``resume=True`` continues from the last finished
epoch and reaches the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from esrkit.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from esrkit.data.batches import TrainBatch, cloze_batch, last_item_batch, seq2seq_batch
from esrkit.data.tensors import DeviceSequences, length_buckets
from esrkit.models.recommender import SequentialRecommender
from esrkit.training import checkpoint as ckpt
from esrkit.training.averaging import WeightAverage
from esrkit.training.losses import LossContext, LossSpec
from esrkit.training.objectives import SelfDistillation, ranking_loss, ranking_loss_and_student
from esrkit.training.rundir import RunDir, epoch_line
from esrkit.utils.io import append_jsonl, atomic_write_text, read_jsonl

log = logging.getLogger(__name__)


# length buckets per batch when train.buckets = 0 (exact either way; fewer on GPUs, where kernel launches cost
# more than the padding they save)
AUTO_BUCKETS = {"cpu": 4, "cuda": 2}


def auto_buckets(device: torch.device) -> int:
    return AUTO_BUCKETS.get(device.type, AUTO_BUCKETS["cpu"])


@dataclass
class TrainerOptions:
    """What the loop needs of a RunConfig (esrkit/runs/train.py builds it); the defaults are the config's."""

    lr: float = TrainConfig.lr
    weight_decay: float = TrainConfig.weight_decay
    batch_size: int = TrainConfig.batch_size
    epochs: int = TrainConfig.epochs
    patience: int = TrainConfig.patience
    seed: int = TrainConfig.seed
    loss: LossSpec = LossSpec()
    mask_prob: float = ModelConfig.mask_prob
    max_len: int = DataConfig.max_len
    buckets: int = AUTO_BUCKETS["cpu"]  # train.buckets resolved for the device (auto_buckets)
    max_batches_per_epoch: int = TrainConfig.max_batches_per_epoch
    watch: str = TrainConfig.watch
    watch_protocol: str = EvalConfig.valid_protocol
    ema: float = TrainConfig.ema  # decay of the weight average validation and the best model use; 0 = off
    item_lr: float = TrainConfig.item_lr  # learning rate of the model's item tables; 0 = lr


@dataclass
class StepContext:
    """What model hooks (``training_loss``, ``auxiliary_loss``, ``on_epoch_start``) may use."""

    trainer: Trainer
    epoch: int
    buckets: list[np.ndarray] | None = None
    generator: torch.Generator | None = None

    @property
    def seqs(self) -> DeviceSequences:
        return self.trainer.seqs

    @property
    def options(self) -> TrainerOptions:
        return self.trainer.opt_cfg

    @property
    def loss(self) -> LossContext:
        """The ranking loss with this step's generator (shared negatives are drawn from it)."""
        return self.trainer.loss_context(self.generator)

    def ranking_loss(self, batch: TrainBatch) -> torch.Tensor:
        """The backbone's ranking loss of ``batch`` under this step's buckets and loss (a model hook that adds
        its own terms to it, e.g. MELT's, calls this instead of importing the training objectives)."""
        return ranking_loss(self.trainer.model, batch, self.loss, self.buckets)


@dataclass
class TrainState:
    epoch: int = 0  # next epoch to run
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped: bool = False
    diverged_epoch: int = -1  # the epoch whose training loss was not finite (training stopped there)
    history: list[dict[str, Any]] = field(default_factory=list)


def parameter_groups(model: SequentialRecommender, item_lr: float) -> list:
    """The trainable parameters for Adam: one group at ``train.lr``, or with ``train.item_lr`` the model's
    item tables in a group of their own at that rate (how far tail items move from their text initialisation
    is set by it; every other weight keeps ``train.lr``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not item_lr:
        return params
    tables = [p for p in model.item_tables() if p.requires_grad]
    if not tables:
        raise ValueError(
            f"train.item_lr: {type(model).__name__} has no trainable item tables (item_tables()); "
            "unset train.item_lr"
        )
    ids = {id(p) for p in tables}
    return [{"params": tables, "lr": item_lr}, {"params": [p for p in params if id(p) not in ids]}]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite before any epoch could be kept as the best."""


class Trainer:
    def __init__(
        self,
        model: SequentialRecommender,
        seqs: DeviceSequences,
        options: TrainerOptions,
        validate: Callable[[SequentialRecommender, int], dict[str, Any]],
        run_dir: RunDir | None = None,
        distillation: SelfDistillation | None = None,
        progress: bool = True,
    ) -> None:
        self.model, self.seqs, self.opt_cfg = model, seqs, options
        self.validate, self.run_dir, self.sd, self.progress = validate, run_dir, distillation, progress
        self.optimizer = torch.optim.Adam(
            parameter_groups(model, options.item_lr) or [torch.zeros(1, requires_grad=True)],
            lr=options.lr,
            weight_decay=options.weight_decay,
        )
        self.state = TrainState()
        self.n_users = seqs.n_users
        self.n_samples = 2 * self.n_users if model.objective == "cloze" else self.n_users
        self.average = WeightAverage(model, options.ema) if options.ema > 0 else None
        needs_popularity = options.loss.sampler != "uniform" or options.loss.popularity_adjust > 0
        self._log_popularity = seqs.train_log_popularity() if needs_popularity else None

    def loss_context(self, generator: torch.Generator | None) -> LossContext:
        return LossContext(self.opt_cfg.loss, generator, self._log_popularity)

    # ------------------------------------------------------------------ one step
    def make_batch(self, rows: np.ndarray, gen: torch.Generator) -> TrainBatch:
        o, obj, k = self.opt_cfg, self.model.objective, self.opt_cfg.loss.batch_negatives
        if obj == "seq2seq":
            return seq2seq_batch(self.seqs, rows, o.max_len, k, gen)
        if obj == "last":
            return last_item_batch(self.seqs, rows, o.max_len, k, gen)
        if obj == "cloze":
            return cloze_batch(self.seqs, rows, o.max_len, o.mask_prob, k, gen)
        raise ValueError(f"unknown objective {obj!r}")

    def input_lengths(self, rows: np.ndarray) -> np.ndarray:
        users = rows % self.n_users
        train = self.seqs.train_lengths(users)
        return np.minimum(train if self.model.objective == "cloze" else train - 1, self.opt_cfg.max_len)

    def losses(self, batch: TrainBatch, ctx: StepContext) -> dict[str, torch.Tensor]:
        custom = self.model.training_loss(batch, ctx)
        if custom is not None:
            return custom
        return self.default_losses(batch, ctx)

    def default_losses(self, batch: TrainBatch, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Ranking loss, + alpha x SD (LLM-ESR's total loss, Eq. (10): L = L_Rank + alpha L_SD), + the model's
        auxiliary loss: {"loss", "rank"[, "sd"][, "aux"]} (the distributed trainer re-weights these parts per
        rank)."""
        if self.sd is not None and self.sd.alpha > 0:
            rank, student = ranking_loss_and_student(self.model, batch, ctx.loss, ctx.buckets)
            sd = self.sd.loss(self.model, batch, ctx.buckets, student)
            parts = {"loss": rank + self.sd.alpha * sd, "rank": rank, "sd": sd}  # Eq. (10)
        else:
            rank = ranking_loss(self.model, batch, ctx.loss, ctx.buckets)
            parts = {"loss": rank, "rank": rank}
        extra = self.model.auxiliary_loss(batch, ctx)
        if extra is not None:
            parts["loss"] = parts["loss"] + extra
            parts["aux"] = extra
        return parts

    def step(self, rows: np.ndarray, gen: torch.Generator, epoch: int = 0) -> dict[str, float]:
        batch = self.make_batch(rows, gen)
        buckets = length_buckets(self.input_lengths(rows), self.opt_cfg.buckets)
        parts = self.losses(batch, StepContext(self, epoch, buckets, gen))
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in parts.items()}

    # ------------------------------------------------------------------ epochs
    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.opt_cfg.seed, epoch]).permutation(self.n_samples)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        gen = torch.Generator(device=self.seqs.device).manual_seed(int(self.opt_cfg.seed * 100_003 + epoch))
        self.model.on_epoch_start(StepContext(self, epoch, None, gen))
        if self.sd is not None and self.sd.refresh == "epoch" and self.sd.alpha > 0:
            self.sd.refresh_cache(self.model)
        order = self.epoch_order(epoch)
        bs = self.opt_cfg.batch_size
        n_batches = math.ceil(len(order) / bs)
        if self.opt_cfg.max_batches_per_epoch:
            n_batches = min(n_batches, self.opt_cfg.max_batches_per_epoch)
        totals: dict[str, float] = {}
        start = time.perf_counter()
        bar = _progress(n_batches, f"epoch {epoch}", self.progress)
        for b in range(n_batches):
            out = self.step(order[b * bs : (b + 1) * bs], gen, epoch)
            if self.average is not None:
                self.average.update(self.model)
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{totals['loss'] / (b + 1):.4f}")
        if bar is not None:
            bar.close()
        stats = {k: v / max(n_batches, 1) for k, v in totals.items()}
        stats["train_seconds"] = time.perf_counter() - start
        stats["batches"] = n_batches
        return stats

    def fit(self, resume: bool = False) -> TrainState:
        o = self.opt_cfg
        if resume and self._has_checkpoint():
            self._resume()
        else:
            self._seed()
        while self.state.epoch < o.epochs and not self.state.stopped:
            epoch = self.state.epoch
            stats = self.train_epoch(epoch)
            if not math.isfinite(stats["loss"]):
                self._stop_diverged(epoch, stats)
                break
            t0 = time.perf_counter()
            with self._averaged():  # validated and saved as best with the average, trained on without it
                valid = self.validate(self.model, epoch)
                stats["valid_seconds"] = time.perf_counter() - t0
                score = valid[o.watch_protocol]["overall"][o.watch]
                self._update_stopper(epoch, score)
            record = {
                "epoch": epoch,
                **stats,
                "valid": valid,
                "score": score,
                "best_epoch": self.state.best_epoch,
            }
            self.state.history.append(_compact(record))
            self.state.epoch = epoch + 1
            self._checkpoint(record)
            self._report(record)
        return self.state

    def _averaged(self) -> contextlib.AbstractContextManager[None]:
        """The weight average in the model for validation and the best checkpoint (``train.ema``)."""
        return self.average.applied(self.model) if self.average is not None else contextlib.nullcontext()

    def _average_tensors(self) -> dict[str, torch.Tensor]:
        return self.average.state_tensors() if self.average is not None else {}

    def _restore_average(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.average is None:
            return
        if not self.average.load_state_tensors(tensors, next(self.model.parameters()).device):
            log.warning("the checkpoint holds no weight average (train.ema was off); it starts again here")

    def _stop_diverged(self, epoch: int, stats: dict[str, float]) -> None:
        """A NaN/inf loss: every later epoch would be garbage (and validating a NaN model is meaningless), so
        training stops here and the best epoch before it is the result; with no such epoch it is an error."""
        s = self.state
        s.stopped, s.diverged_epoch = True, epoch
        if s.best_epoch < 0:
            raise TrainingDiverged(
                f"training diverged at epoch {epoch} (loss {stats['loss']}) before any "
                "validated epoch; try a lower train.lr"
            )
        record = {"epoch": epoch, **stats, "diverged": True, "best_epoch": s.best_epoch}
        s.history.append(_compact(record))
        s.epoch = epoch + 1
        self._checkpoint(record)
        self._report(record)
        log.warning(
            "epoch %d: training loss is %s, training stopped; the result is the best epoch %d "
            "(validation %s %.4f)",
            epoch,
            stats["loss"],
            s.best_epoch,
            self.opt_cfg.watch,
            s.best_score,
        )

    # hooks a distributed trainer overrides (esrkit/training/distributed.py): only rank 0 holds the run
    # directory
    def _has_checkpoint(self) -> bool:
        return self.run_dir is not None and self.run_dir.last.exists()

    def _seed(self) -> None:
        torch.manual_seed(self.opt_cfg.seed)

    def _update_stopper(self, epoch: int, score: float) -> None:
        s = self.state
        if score > s.best_score:
            s.best_score, s.best_epoch, s.bad_epochs = score, epoch, 0
            if self.run_dir is not None:
                ckpt.save_model(self.run_dir.best, self.model, {"epoch": epoch, "score": score})
        else:
            s.bad_epochs += 1
            if s.bad_epochs >= self.opt_cfg.patience:
                s.stopped = True

    def _checkpoint(self, record: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        append_jsonl(self.run_dir.metrics, record)
        ckpt.save_training_state(
            self.run_dir.last, self.model, self.optimizer, self._state_dict(), self._average_tensors()
        )

    def _report(self, record: dict[str, Any]) -> None:
        """The epoch's line in the run folder's train.log and on the progress logger (only the process that
        owns the run folder writes)."""
        o = self.opt_cfg
        if self.run_dir is not None:
            self.run_dir.log(epoch_line(record, o.watch, o.watch_protocol))
        else:
            log.info(epoch_line(record, o.watch, o.watch_protocol))

    def _state_dict(self) -> dict[str, Any]:
        s = self.state
        return {
            "epoch": s.epoch,
            "best_score": s.best_score,
            "best_epoch": s.best_epoch,
            "bad_epochs": s.bad_epochs,
            "stopped": s.stopped,
            "diverged_epoch": s.diverged_epoch,
        }

    def _resume(self) -> None:
        assert self.run_dir is not None
        meta, tensors = ckpt.load_training_state(self.run_dir.last, self.model, self.optimizer)
        self._restore_state(meta)
        self._restore_average(tensors)
        s = self.state
        log.info("resumed at epoch %d (best %.4f @ %d)", s.epoch, s.best_score, s.best_epoch)

    def _restore_state(self, meta: dict[str, Any]) -> None:
        """The inverse of ``_state_dict``, shared with the distributed trainer; also keeps metrics.jsonl
        consistent with the checkpoint by dropping the lines of epochs that did not finish."""
        s = self.state
        s.epoch, s.best_score, s.best_epoch = meta["epoch"], meta["best_score"], meta["best_epoch"]
        s.bad_epochs, s.stopped = meta["bad_epochs"], meta["stopped"]
        s.diverged_epoch = meta.get("diverged_epoch", -1)  # absent from checkpoints of older versions
        if self.run_dir is not None and self.run_dir.metrics.exists():
            rows = [r for r in read_jsonl(self.run_dir.metrics) if r["epoch"] < s.epoch]
            s.history = [_compact(r) for r in rows]
            atomic_write_text(self.run_dir.metrics, "".join(json.dumps(r) + "\n" for r in rows))


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    """Keep the history small: overall validation metrics only."""
    valid = {p: {"overall": g["overall"]} for p, g in record.get("valid", {}).items()}
    return {**{k: v for k, v in record.items() if k != "valid"}, "valid": valid}


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm  # lazy: tqdm loads only when a bar is shown

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
