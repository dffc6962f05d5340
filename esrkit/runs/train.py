"""One run from a resolved RunConfig: the library behind ``esrkit train``.

Per seed: model, trainer, validation every epoch, early stopping, test of the best checkpoint under both
protocols, results and per-user ranks written to ``<output_dir>/<name>/seed-<seed>/``; across seeds:
``summary.json`` with mean and std of every metric. The inputs (data, embeddings, PCA, similar users) come
from esrkit/runs/inputs.py, prepared once for every seed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esrkit.config import RunConfig
from esrkit.data.groups import compute_groups
from esrkit.data.sequences import SequenceData
from esrkit.data.tensors import DeviceSequences
from esrkit.evaluation.evaluator import Evaluator
from esrkit.models import SequentialRecommender, build_model
from esrkit.runs.inputs import ColdItems, RunInputs, prepare_inputs
from esrkit.training.distributed import runtime
from esrkit.training.losses import LossSpec
from esrkit.training.objectives import SelfDistillation
from esrkit.training.rundir import PROGRESS, RunDir, environment
from esrkit.training.trainer import TrainerOptions, auto_buckets
from esrkit.utils.io import atomic_write_json

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- one seed
def _evaluator_options(cfg: RunConfig, seed: int) -> dict[str, Any]:
    d, e = cfg.data, cfg.eval
    return {
        "max_len": d.max_len,
        "negatives": e.negatives,
        "seed": seed,
        "ks": tuple(e.ks),
        "ties": e.ties,
        "exclude_history": e.exclude_history,
        "batch_size": e.batch_size,
        "ts_user": d.ts_user,
        "ts_item": d.ts_item,
        "group_rule": d.group_rule,
    }


def cold_evaluator(
    cfg: RunConfig,
    cold: ColdItems,
    device: torch.device,
    seed: int,
    cls: type[Evaluator] = Evaluator,
    split: str = "test",
) -> Evaluator:
    """The cold-item protocol's ``split`` with the held-out items added: every user of the full dataset, every
    item, the usual groups plus ``cold_item`` (the target is a held-out item) and ``warm_item``. "test" is the
    protocol's test; "valid" (the full data's validation targets, which training never saw either) is where
    ranking-time options for a catalogue that adds items are chosen (``esrkit tune-bonus --new-items``)."""
    full, d = cold.split.full, cfg.data
    groups = compute_groups(full, split, d.ts_user, d.ts_item, d.group_rule, d.max_len)
    is_cold = cold.split.cold_target(split)
    groups = dataclasses.replace(groups, extra={"cold_item": is_cold, "warm_item": ~is_cold})
    return cls(full, split, DeviceSequences(full, device), groups=groups, **_evaluator_options(cfg, seed))


def add_cold_items(model: SequentialRecommender, cfg: RunConfig, inputs: RunInputs, seed: int) -> str:
    """Add the held-out items to a trained model with its family's new-item contract; returns the path taken
    (``text``: from their LLM vectors; ``untrained``: an ID-only family's untrained rows, seeded)."""
    cold = inputs.cold
    assert cold is not None
    support = type(model).new_item_support(cfg.model)
    if support == "text":
        if cold.llm_vectors is None:
            raise ValueError("the held-out items have no LLM vectors (the model needs no embeddings?)")
        model.add_items(cold.llm_vectors, inputs.assets)
    else:
        generator = torch.Generator(device=model.device).manual_seed(seed)
        model.add_untrained_items(cold.split.n_cold, generator)
    return support


def evaluators(
    cfg: RunConfig, data: SequenceData, seqs: DeviceSequences, seed: int, cls: type[Evaluator] = Evaluator
) -> tuple[Evaluator, Evaluator]:
    e = cfg.eval
    kw = _evaluator_options(cfg, seed)
    valid = cls(data, "valid", seqs, resample_negatives=e.validation_negatives == "resample", **kw)
    test = cls(data, "test", seqs, **kw)
    return valid, test


def loss_spec(cfg: RunConfig) -> LossSpec:
    m = cfg.model
    return LossSpec(
        name=m.loss,
        negatives=cfg.train.negatives,
        sampler=m.loss_sampler,
        gbce_t=m.gbce_t,
        view_losses=m.view_losses,
        popularity_adjust=m.popularity_adjust,
        ce_precision=m.ce_precision,
        label_smoothing=m.label_smoothing,
        neighbour_smoothing=m.neighbour_smoothing,
    )


def trainer_options(cfg: RunConfig, seed: int, device: torch.device) -> TrainerOptions:
    t = cfg.train
    return TrainerOptions(
        lr=t.lr,
        weight_decay=t.weight_decay,
        batch_size=t.batch_size,
        epochs=t.epochs,
        patience=t.patience,
        seed=seed,
        loss=loss_spec(cfg),
        mask_prob=cfg.model.mask_prob,
        max_len=cfg.data.max_len,
        buckets=t.buckets or auto_buckets(device),
        max_batches_per_epoch=t.max_batches_per_epoch,
        watch=t.watch.lower(),
        item_lr=t.item_lr,
        watch_protocol=cfg.eval.valid_protocol,
        ema=cfg.train.ema,
    )


def run_seed(
    cfg: RunConfig, inputs: RunInputs, seed: int, run_dir: Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    rt = (
        runtime()
    )  # under torchrun: this rank's device, rank-0-only files, sharded evaluation (training/distributed.py)
    device = rt.device(cfg.train.device)
    rd = RunDir(run_dir)
    if resume and rt.on_main(lambda: (rd.path / "results.json").exists()):
        log.info("%s is finished; skipping", rd.path)
        return rt.on_main(rd.results)
    config = seed_config(cfg, seed)

    def provenance() -> dict[
        str, Any
    ]:  # computed by the process that writes it (environment() takes seconds)
        out = {
            "environment": environment(),
            "device": str(device),
            "fingerprints": inputs.fingerprints,
            "preparation_seconds": inputs.timings,
        }
        if rt.distributed:
            out["distributed"] = rt.describe()
        return out

    torch.manual_seed(seed)
    np.random.seed(seed)
    data = inputs.data
    seqs = DeviceSequences(data, device)
    # built before the run folder exists: options only a model checks (model.extra) fail without leaving one
    model = build_model(cfg.model, data.n_items, cfg.data.max_len, inputs.assets).to(device)
    rt.on_main(lambda: rd.create(config, provenance(), resume=resume))
    rt.on_main(lambda: _log_start(rd, cfg, inputs, seed, device))
    model.setup(data)
    sd = None
    if model.uses_distillation and cfg.model.alpha > 0:
        assert inputs.neighbours is not None
        sd = SelfDistillation(
            seqs,
            inputs.neighbours,
            cfg.retrieval.n_similar,
            cfg.model.alpha,
            cfg.model.sd_loss,
            cfg.data.max_len,
            cfg.model.teacher_refresh,
        )
    valid_eval, test_eval = evaluators(cfg, data, seqs, seed, rt.evaluator_class())
    valid_eval.ranking_bonus = False  # epochs are selected on the model's own scores (model.neighbour_boost)
    protocols = tuple(dict.fromkeys([cfg.eval.valid_protocol]))

    def validate(m, epoch):
        return valid_eval.evaluate(m, protocols).metrics

    opts = trainer_options(cfg, seed, device)
    if not model.trainable:  # nothing to learn: evaluate once (e.g. the popularity baseline)
        opts.epochs = 0
    trainer = rt.trainer(model, seqs, opts, validate, rd, sd, progress=progress)
    t0 = time.perf_counter()
    state = trainer.fit(resume=resume)
    train_seconds = time.perf_counter() - t0
    if rt.on_main(rd.best.exists):
        rt.load_model(rd.best, model)
    t0 = time.perf_counter()
    cold: dict[str, Any] = {}
    valid_eval.ranking_bonus = True  # the reported metrics rank as serving does
    if inputs.cold is None:
        test = test_eval.evaluate(model, cfg.eval.protocols)
        valid = valid_eval.evaluate(model, cfg.eval.protocols)
    else:  # validate on the warm catalogue the model was selected on, then add the held-out items and test
        valid = valid_eval.evaluate(model, cfg.eval.protocols)
        support = add_cold_items(model, cfg, inputs, seed)
        test_eval = cold_evaluator(cfg, inputs.cold, device, seed, rt.evaluator_class())
        test = test_eval.evaluate(model, cfg.eval.protocols)
        cold = {
            "cold_items": {
                **inputs.cold.split.meta,
                "added_by": support,
                "test_users": int(inputs.cold.split.cold_target("test").sum()),
            }
        }
    eval_seconds = time.perf_counter() - t0
    epochs = [h for h in state.history]
    results = {
        "name": cfg.name,
        "seed": seed,
        "model": cfg.model.name,
        "backbone": cfg.model.backbone,
        "best_epoch": state.best_epoch,
        "best_valid_score": state.best_score,
        "watch": f"{cfg.eval.valid_protocol}:{opts.watch}",
        "epochs_run": state.epoch,
        "diverged_epoch": state.diverged_epoch if state.diverged_epoch >= 0 else None,
        "test": test.metrics,
        "valid": valid.metrics,
        "protocols": {
            "sampled": f"target + {cfg.eval.negatives} uniform negatives (paper protocol)",
            "full": "all items, input history excluded",
        },
        # "train" sums every epoch's training and validation, so a resumed run reports its whole cost;
        # "train_wall" is this process's share
        "seconds": {
            "train": _epochs_seconds(epochs) if epochs else train_seconds,
            "train_wall": train_seconds,
            "final_eval": eval_seconds,
            "per_epoch_train": float(np.mean([h["train_seconds"] for h in epochs])) if epochs else None,
            **inputs.timings,
        },
        "device": str(device),
        **cold,
    }
    ranks = {f"test_{p}": r for p, r in test.ranks.items()} | {
        f"valid_{p}": r for p, r in valid.ranks.items()
    }
    rt.on_main(lambda: rd.save_results(results, ranks))
    rt.on_main(lambda: rd.log(_test_line(results)))
    rt.on_main(rd.unlock)
    return results


def _log_start(rd: RunDir, cfg: RunConfig, inputs: RunInputs, seed: int, device: torch.device) -> None:
    data = inputs.data
    rd.log(
        f"seed {seed}: {cfg.model.name} ({cfg.model.backbone}) on {data.name}, {data.n_users:,} users, "
        f"{data.n_items:,} items, device {device}; epochs up to {cfg.train.epochs}, "
        f"patience {cfg.train.patience}"
    )
    for warning in inputs.warnings:  # said once per run on stderr (train), and in every seed's log
        rd.log(f"warning: {warning}", echo=False)


def _test_line(results: dict[str, Any]) -> str:
    parts = [
        f"[{p}] N@10 {g['overall']['ndcg@10']:.4f} H@10 {g['overall']['hr@10']:.4f}"
        for p, g in results["test"].items()
    ]
    return (
        f"test (best epoch {results['best_epoch']}, {results['seconds']['train']:.0f} s training): "
        + ", ".join(parts)
    )


# ---------------------------------------------------------------------------------------------- seeds
def run_dir_for(cfg: RunConfig, seed: int) -> Path:
    return Path(cfg.output_dir) / cfg.name / f"seed-{seed}"


def seed_config(cfg: RunConfig, seed: int) -> dict[str, Any]:
    """The config.json of one seed's run."""
    config = cfg.to_dict()
    config["train"]["seed"] = seed
    return config


def train(
    cfg: RunConfig, seeds: list[int] | None = None, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    seeds = seeds or [cfg.train.seed]
    rt = runtime()
    # a finished run, a refused resume or a damaged checkpoint stops here, before any data or embedding work
    rt.on_main(lambda: [RunDir(run_dir_for(cfg, s)).check_start(seed_config(cfg, s), resume) for s in seeds])
    inputs = rt.staged(
        lambda: prepare_inputs(cfg, progress and rt.is_main)
    )  # rank 0 first: it fills the caches
    if rt.is_main:  # on the progress logger at warning level: shown even when progress lines are not (-qq)
        for warning in inputs.warnings:
            PROGRESS.warning("[%s] warning: %s", cfg.name, warning)
    per_seed = [
        run_seed(cfg, inputs, s, run_dir_for(cfg, s), resume=resume, progress=progress) for s in seeds
    ]
    summary = summarise(per_seed)
    rt.on_main(lambda: atomic_write_json(Path(cfg.output_dir) / cfg.name / "summary.json", summary))
    return summary


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over seeds of every test metric, per protocol and group (a group that is empty,
    hence absent, in some seed's results is left out)."""
    out: dict[str, Any] = {
        "name": results[0]["name"],
        "seeds": [r["seed"] for r in results],
        "model": results[0]["model"],
        "backbone": results[0]["backbone"],
        "test": {},
    }
    for protocol, groups in results[0]["test"].items():
        out["test"][protocol] = {}
        for group, metrics in groups.items():
            if not all(group in r["test"][protocol] for r in results):
                continue
            out["test"][protocol][group] = {}
            for metric in metrics:
                vals = np.array([r["test"][protocol][group][metric] for r in results], dtype=float)
                out["test"][protocol][group][metric] = {
                    "mean": float(vals.mean()),
                    "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "values": vals.tolist(),
                }
    out["best_epochs"] = [r["best_epoch"] for r in results]
    out["best_valid_scores"] = [r["best_valid_score"] for r in results]
    return out


def _epochs_seconds(epochs: list[dict[str, Any]]) -> float:
    """Training plus validation time of every epoch in the history (it survives --resume)."""
    return float(sum(h.get("train_seconds", 0.0) + h.get("valid_seconds", 0.0) for h in epochs))
