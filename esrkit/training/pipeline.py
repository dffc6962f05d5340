"""From a resolved RunConfig to trained, evaluated run directories: the library behind ``esrkit train``.

Steps, each cached in the workdir by content so reruns and other seeds reuse them:

1. data: a processed dataset directory, or prepared on the fly (synthetic catalogue or any reader);
2. embeddings (only if the model needs them): explicit ``.npy`` files or a provider via the content-addressed
   cache; PCA of the item embeddings to the collaborative size;
3. similar users (only for LLM-ESR's self-distillation): an official-style ``.npy`` or built from the user
   embeddings (exact or hnswlib), cached by the embedding fingerprint;
4. per seed: model, trainer, validation every epoch, early stopping, test of the best checkpoint under both
   protocols, results and per-user ranks written to ``<output_dir>/<name>/seed-<seed>/``;
5. across seeds: ``summary.json`` with mean and std of every metric.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import esrkit
from esrkit.config import ConfigError, RunConfig, config_from_dict
from esrkit.data.cold import ColdSplit, check_cold_options, cold_split
from esrkit.data.groups import compute_groups, group_warnings
from esrkit.data.sequences import SequenceData
from esrkit.data.tensors import DeviceSequences
from esrkit.evaluation.evaluator import Evaluator
from esrkit.models import ModelAssets, SequentialRecommender, build_model, model_class
from esrkit.resources import expand_path
from esrkit.training import checkpoint as ckpt
from esrkit.training.distributed import runtime
from esrkit.training.losses import LossSpec
from esrkit.training.objectives import SelfDistillation
from esrkit.training.rundir import PROGRESS, RunDir, environment, git_commit
from esrkit.training.trainer import TrainerOptions
from esrkit.utils.io import atomic_write_json, fingerprint_array, load_npy, read_json, stable_json_hash
from esrkit.utils.runtime import resolve_device

log = logging.getLogger(__name__)


@dataclass
class ColdItems:
    """The cold-item protocol's held-out items (``data.cold_items``): the split, and their LLM vectors
    preprocessed as the training table was (None when the model uses no LLM vectors)."""

    split: ColdSplit
    llm_vectors: np.ndarray | None = None


@dataclass
class RunInputs:
    data: SequenceData  # what the model trains on (the warm catalogue under the cold-item protocol)
    assets: ModelAssets
    neighbours: np.ndarray | None = None
    fingerprints: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    llm_center: np.ndarray | None = None  # subtracted from every LLM item vector (embedding.center_items)
    cold: ColdItems | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. long-tail groups the chosen rule leaves empty

    @property
    def catalogue(self) -> SequenceData:
        """Every user and item the trained model serves: the full dataset under the cold-item protocol (once
        the cold items are added), the training data otherwise."""
        return self.cold.split.full if self.cold is not None else self.data


# ---------------------------------------------------------------------------------------------- step 1: data
def load_data(cfg: RunConfig) -> SequenceData:
    d = cfg.data
    if d.path:
        return SequenceData.load(expand_path(d.path))
    if not d.source:
        raise ValueError("set data.path (a processed dataset) or data.source (synthetic or a reader name)")
    inputs = _expanded(d.inputs)
    key = stable_json_hash({"source": d.source, "inputs": inputs, "files": _file_stamps(inputs), "prepare": d.prepare,
                            "synthetic": d.synthetic})[:16]
    cached = Path(cfg.workdir) / "datasets" / f"{d.name or d.source}-{key}"
    if (cached / "dataset.json").exists():
        return SequenceData.load(cached)
    if d.source == "synthetic":
        from esrkit.data.synthetic import SyntheticOptions, generate

        data = generate(SyntheticOptions(**d.synthetic))
    else:
        from esrkit.data.prepare import prepare_from_config

        data = prepare_from_config(dataclasses.replace(d, inputs=inputs))
    data.save(cached, overwrite=True)
    return data


def _expanded(inputs: dict[str, Any]) -> dict[str, Any]:
    """Recipe paths may use $ESRKIT_SHARED / $ESRKIT_DATA / ~."""
    return {k: [str(expand_path(x)) for x in v] if isinstance(v, list) else str(expand_path(v))
            for k, v in inputs.items()}


def _file_stamps(inputs: dict[str, Any]) -> list[Any]:
    """(path, size, mtime) of every input file: a changed raw file invalidates the prepared-data cache."""
    paths = [p for v in inputs.values() for p in (v if isinstance(v, list) else [v])]
    stamps = []
    for p in sorted(paths):
        try:
            st = Path(p).stat()
            stamps.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            stamps.append([p, None, None])
    return stamps


# ---------------------------------------------------------------------------------------------- step 2: embeddings
def load_embeddings(cfg: RunConfig, data: SequenceData, parts: tuple[str, ...], progress: bool = True,
                    center: bool = True) -> dict[str, Any]:
    """{"items": array|None, "users": array|None, "center": array|None, "meta": {...}} from explicit files or
    a provider; ``center=False`` leaves ``embedding.center_items`` to the caller."""
    e = cfg.embedding
    out: dict[str, Any] = {"items": None, "users": None, "center": None, "meta": {}}
    explicit = {"items": e.item_embeddings, "users": e.user_embeddings}
    needed_from_provider = []
    for part in parts:
        if explicit[part]:
            path = expand_path(explicit[part])
            arr = load_npy(path).astype(np.float32, copy=False)
            rows = data.n_items if part == "items" else data.n_users
            if arr.ndim != 2 or arr.shape[0] != rows:
                raise ValueError(f"{path}: expected ({rows}, d) {part} embeddings, got {arr.shape}")
            out[part] = arr
            out["meta"][part] = {"source": str(path), "fingerprint": fingerprint_array(arr)}
        else:
            needed_from_provider.append(part)
    by_provider: dict[str, list[str]] = {}
    for part in needed_from_provider:  # user prompts may use another provider (retrieval held fixed)
        name = e.user_provider if part == "users" and e.user_provider else e.provider
        by_provider.setdefault(name, []).append(part)
    for name, provider_parts in by_provider.items():
        if name in ("", "none"):
            raise ValueError(f"the model needs {provider_parts} embeddings but the provider is 'none'")
        from esrkit.embedding.pipeline import embed_dataset
        from esrkit.prompts import load_templates
        from esrkit.providers import load_provider

        options = e.options if name == e.provider else {}
        what = "both" if len(provider_parts) == 2 else provider_parts[0]
        result = embed_dataset(data, load_provider(name, **options), load_templates(e.templates), what,
                               workdir=cfg.workdir, progress=progress)
        for part in provider_parts:
            arr = getattr(result, part)
            out[part] = np.asarray(arr, dtype=np.float32)
            out["meta"][part] = {"source": str(result.directory), "provider": name,
                                 "templates": e.templates, "fingerprint": fingerprint_array(out[part])}
    if center and e.center_items and out["items"] is not None:  # the fingerprint stays the raw table's
        out["center"] = item_center(out["items"])
        out["items"] = out["items"] - out["center"]
        out["meta"]["items"]["centered"] = True
    return out


def item_center(items: np.ndarray) -> np.ndarray:
    return items.mean(axis=0, dtype=np.float64).astype(np.float32)


def cold_embeddings(cfg: RunConfig, full: SequenceData, split: ColdSplit, parts: tuple[str, ...],
                    progress: bool = True) -> dict[str, Any]:
    """``load_embeddings`` under the cold-item protocol: item vectors of the whole catalogue (the held-out
    items' text is what they are added from), split into warm rows (training) and ``cold_items`` rows, both
    centred by the warm items' mean; user vectors from the training data only."""
    out: dict[str, Any] = {"items": None, "users": None, "center": None, "cold_items": None, "meta": {}}
    if "items" in parts:
        got = load_embeddings(cfg, full, ("items",), progress, center=False)
        table = got["items"][split.original_ids[1:] - 1]  # rows in the split's renumbered order
        warm, cold = table[: split.n_warm], table[split.n_warm:]
        out["meta"]["items"] = got["meta"]["items"]
        if cfg.embedding.center_items:
            out["center"] = item_center(warm)
            warm, cold = warm - out["center"], cold - out["center"]
            out["meta"]["items"]["centered"] = True
        out["items"], out["cold_items"] = np.ascontiguousarray(warm), np.ascontiguousarray(cold)
    if "users" in parts:
        got = load_embeddings(cfg, split.train, ("users",), progress)
        out["users"], out["meta"]["users"] = got["users"], got["meta"]["users"]
    return out


def pca_for(cfg: RunConfig, items: np.ndarray, dim: int) -> tuple[np.ndarray, Any]:
    """The PCA table and the projection that made it (None for an explicit table: ``projection_from_table``
    recovers it when it is needed)."""
    if cfg.embedding.pca_table:
        table = load_npy(expand_path(cfg.embedding.pca_table)).astype(np.float32)
        if table.shape != (items.shape[0], dim):
            raise ValueError(f"{cfg.embedding.pca_table}: expected ({items.shape[0]}, {dim}), got {table.shape}")
        return table, None
    from esrkit.embedding.pca import pca_fit

    return pca_fit(items, dim=dim)


# ---------------------------------------------------------------------------------------------- step 3: neighbours
def load_neighbours(cfg: RunConfig, data: SequenceData, users: np.ndarray | None) -> tuple[np.ndarray, dict]:
    from esrkit.index import NeighbourTable, neighbours_for_config

    r = cfg.retrieval
    if r.neighbours:
        r = dataclasses.replace(r, neighbours=str(expand_path(r.neighbours)))
    if not r.neighbours and users is not None:
        key = stable_json_hash({"users": fingerprint_array(users), "k": r.top_k, "method": r.method,
                                "exact_below": r.exact_below, "m": r.hnsw_m, "efc": r.hnsw_ef_construction,
                                "ef": r.hnsw_ef})[:16]
        cached = Path(cfg.workdir) / "neighbours" / key
        if (cached / "neighbours.json").exists() or any(cached.glob("*.json")):
            try:
                table = NeighbourTable.load(cached)
                return neighbour_rows(table, data, r.n_similar), {"source": str(cached), **_nb_meta(table)}
            except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt
                log.warning("rebuilding the neighbour cache %s", cached)
        table = neighbours_for_config(r, users, user_ids=data.user_ids)
        table.save(cached, overwrite=True)
        return neighbour_rows(table, data, r.n_similar), {"source": str(cached), **_nb_meta(table)}
    table = neighbours_for_config(r, users, user_ids=data.user_ids)
    return neighbour_rows(table, data, r.n_similar), {"source": r.neighbours or "built", **_nb_meta(table)}


def neighbour_rows(table, data: SequenceData, n: int) -> np.ndarray:
    """Each dataset user's first ``n`` similar users as dataset rows, matched through user ids: a table built for
    another user order (or another dataset) is re-keyed or refused, never silently misaligned."""
    table_ids = [str(u) for u in table.user_ids]
    data_ids = [str(u) for u in data.user_ids]
    if table_ids == data_ids:
        return table.first(n)
    data_row = {u: r for r, u in enumerate(data_ids)}
    in_table = set(table_ids)
    unknown = [u for u in data_ids if u not in in_table]
    if unknown:
        raise ValueError(f"the similar-user table has no entry for {len(unknown)} dataset users (e.g. {unknown[0]!r})")
    table_to_data = np.array([data_row.get(u, -1) for u in table_ids], dtype=np.int64)
    rows = table.first(n)[np.array([table.row_of(u) for u in data_ids])]
    mapped = table_to_data[rows]
    if (mapped < 0).any():
        raise ValueError("the similar-user table lists neighbours that are not users of this dataset")
    return mapped


def _nb_meta(table) -> dict:
    rows = np.asarray(table.rows)
    return {"k": int(rows.shape[1]), "fingerprint": fingerprint_array(rows)}


# ---------------------------------------------------------------------------------------------- inputs
def check_cold_config(cfg: RunConfig) -> None:
    """The cold-item options, checked before any work: a family that cannot add items, or inputs computed from
    the full data (they would have seen the held-out items), are errors."""
    d = cfg.data
    try:
        check_cold_options(d.cold_items, d.cold_mode)
    except KeyError as exc:
        raise ConfigError(f"data.cold_mode: {exc.args[0]}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not d.cold_items:
        return
    if not model_class(cfg.model.name).new_item_support(cfg.model):
        raise ConfigError(f"data.cold_items: model family {cfg.model.name!r} (with these switches) cannot "
                          "add items after training, so it cannot be evaluated on held-out items")
    fixed = [k for k, v in (("embedding.user_embeddings", cfg.embedding.user_embeddings),
                            ("embedding.pca_table", cfg.embedding.pca_table),
                            ("retrieval.neighbours", cfg.retrieval.neighbours)) if v]
    if fixed:
        raise ConfigError(f"data.cold_items: {', '.join(fixed)} were computed from the full data, held-out "
                          "items included; leave them unset so they are computed from the training part")
def _check_top_k(cfg: RunConfig, data: SequenceData) -> None:
    """Before anything is embedded: a small dataset cannot give every user retrieval.top_k other users."""
    r = cfg.retrieval
    if r.top_k >= data.n_users:
        raise ValueError(f"retrieval.top_k = {r.top_k} similar users per user, but {data.name!r} has "
                         f"{data.n_users} users: set it to at most {data.n_users - 1} (--set retrieval.top_k="
                         f"{data.n_users - 1}; retrieval.n_similar = {r.n_similar} of them are used)")


def prepare_inputs(cfg: RunConfig, progress: bool = True) -> RunInputs:
    check_cold_config(cfg)
    t0 = time.perf_counter()
    full = load_data(cfg)
    d = cfg.data
    split = cold_split(full, d.cold_items, d.cold_mode, d.cold_seed) if d.cold_items else None
    data = split.train if split is not None else full
    timings = {"data_s": time.perf_counter() - t0}
    cls = model_class(cfg.model.name)
    need = cls.requirements(cfg.model)
    distill = cls.uses_distillation and cfg.model.alpha > 0
    parts = tuple(p for p, wanted in (("items", bool(need & {"llm_items", "pca"})), ("users", distill and not cfg.retrieval.neighbours)) if wanted)
    if "users" in parts:
        _check_top_k(cfg, data)
    fps: dict[str, Any] = {"data": data.fingerprint()}
    if split is not None:
        fps["cold_items"] = split.meta
    assets = ModelAssets()
    emb: dict[str, Any] = {"items": None, "users": None, "meta": {}}
    if parts:
        t0 = time.perf_counter()
        emb = load_embeddings(cfg, data, parts, progress) if split is None else \
            cold_embeddings(cfg, full, split, parts, progress)
        timings["embed_s"] = time.perf_counter() - t0
        fps["embeddings"] = emb["meta"]
    if "llm_items" in need or "pca" in need:
        assets.llm_items = emb["items"]
    if "pca" in need:
        t0 = time.perf_counter()
        dim = cfg.embedding.pca_dim or cfg.model.hidden
        assets.pca_table, assets.pca_projection = pca_for(cfg, emb["items"], dim)
        timings["pca_s"] = time.perf_counter() - t0
        fps["pca"] = fingerprint_array(assets.pca_table)
    neighbours = None
    if distill:
        t0 = time.perf_counter()
        neighbours, meta = load_neighbours(cfg, data, emb["users"])
        timings["retrieval_s"] = time.perf_counter() - t0
        fps["neighbours"] = meta
    cold = ColdItems(split, emb.get("cold_items")) if split is not None else None
    d = cfg.data
    warnings = group_warnings(data, "test", d.ts_user, d.ts_item, d.group_rule, d.max_len)
    return RunInputs(data, assets, neighbours, fps, timings, emb.get("center"), cold, warnings)


# ---------------------------------------------------------------------------------------------- one seed
def _evaluator_options(cfg: RunConfig, seed: int) -> dict[str, Any]:
    d, e = cfg.data, cfg.eval
    return {"max_len": d.max_len, "negatives": e.negatives, "seed": seed, "ks": tuple(e.ks), "ties": e.ties,
            "exclude_history": e.exclude_history, "batch_size": e.batch_size, "ts_user": d.ts_user,
            "ts_item": d.ts_item, "group_rule": d.group_rule}


def cold_test_evaluator(cfg: RunConfig, cold: ColdItems, device: torch.device, seed: int,
                        cls: type[Evaluator] = Evaluator) -> Evaluator:
    """The test of the cold-item protocol: every user of the full dataset, every item (the cold ones added),
    the usual groups plus ``cold_item`` (the target is a held-out item) and ``warm_item``."""
    full, d = cold.split.full, cfg.data
    groups = compute_groups(full, "test", d.ts_user, d.ts_item, d.group_rule, d.max_len)
    is_cold = cold.split.cold_target("test")
    groups = dataclasses.replace(groups, extra={"cold_item": is_cold, "warm_item": ~is_cold})
    return cls(full, "test", DeviceSequences(full, device), groups=groups, **_evaluator_options(cfg, seed))


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


def evaluators(cfg: RunConfig, data: SequenceData, seqs: DeviceSequences, seed: int,
               cls: type[Evaluator] = Evaluator) -> tuple[Evaluator, Evaluator]:
    e = cfg.eval
    kw = _evaluator_options(cfg, seed)
    valid = cls(data, "valid", seqs, resample_negatives=e.validation_negatives == "resample", **kw)
    test = cls(data, "test", seqs, **kw)
    return valid, test


def loss_spec(cfg: RunConfig) -> LossSpec:
    m = cfg.model
    return LossSpec(name=m.loss, negatives=cfg.train.negatives, sampler=m.loss_sampler, gbce_t=m.gbce_t,
                    view_losses=m.view_losses)


def trainer_options(cfg: RunConfig, seed: int, device: torch.device) -> TrainerOptions:
    t = cfg.train
    return TrainerOptions(
        lr=t.lr, weight_decay=t.weight_decay, batch_size=t.batch_size, epochs=t.epochs, patience=t.patience,
        seed=seed, loss=loss_spec(cfg), mask_prob=cfg.model.mask_prob, max_len=cfg.data.max_len,
        buckets=t.buckets if t.buckets else (2 if device.type == "cuda" else 4),
        max_batches_per_epoch=t.max_batches_per_epoch, watch=t.watch.lower(), watch_protocol=cfg.eval.valid_protocol,
    )


def run_seed(cfg: RunConfig, inputs: RunInputs, seed: int, run_dir: Path, resume: bool = False,
             progress: bool = True) -> dict[str, Any]:
    rt = runtime()  # under torchrun: this rank's device, rank-0-only files, sharded evaluation (training/distributed.py)
    device = rt.device(cfg.train.device)
    rd = RunDir(run_dir)
    if resume and rt.on_main(lambda: (rd.path / "results.json").exists()):
        log.info("%s is finished; skipping", rd.path)
        return rt.on_main(rd.results)
    config = seed_config(cfg, seed)

    def provenance() -> dict[str, Any]:  # computed by the process that writes it (environment() takes seconds)
        out = {"environment": environment(), "device": str(device), "fingerprints": inputs.fingerprints,
               "preparation_seconds": inputs.timings}
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
        sd = SelfDistillation(seqs, inputs.neighbours, cfg.retrieval.n_similar, cfg.model.alpha, cfg.model.sd_loss,
                              cfg.data.max_len, cfg.model.teacher_refresh)
    valid_eval, test_eval = evaluators(cfg, data, seqs, seed, rt.evaluator_class())
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
    if inputs.cold is None:
        test = test_eval.evaluate(model, cfg.eval.protocols)
        valid = valid_eval.evaluate(model, cfg.eval.protocols)
    else:  # validate on the warm catalogue the model was selected on, then add the held-out items and test
        valid = valid_eval.evaluate(model, cfg.eval.protocols)
        support = add_cold_items(model, cfg, inputs, seed)
        test_eval = cold_test_evaluator(cfg, inputs.cold, device, seed, rt.evaluator_class())
        test = test_eval.evaluate(model, cfg.eval.protocols)
        cold = {"cold_items": {**inputs.cold.split.meta, "added_by": support,
                               "test_users": int(inputs.cold.split.cold_target("test").sum())}}
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
        "protocols": {"sampled": f"target + {cfg.eval.negatives} uniform negatives (paper protocol)",
                      "full": "all items, input history excluded"},
        # "train" sums every epoch's training and validation, so a resumed run reports its whole cost;
        # "train_wall" is this process's share
        "seconds": {"train": _epochs_seconds(epochs) if epochs else train_seconds, "train_wall": train_seconds,
                    "final_eval": eval_seconds,
                    "per_epoch_train": float(np.mean([h["train_seconds"] for h in epochs])) if epochs else None,
                    **inputs.timings},
        "device": str(device),
        **cold,
    }
    ranks = {f"test_{p}": r for p, r in test.ranks.items()} | {f"valid_{p}": r for p, r in valid.ranks.items()}
    rt.on_main(lambda: rd.save_results(results, ranks))
    rt.on_main(lambda: rd.log(_test_line(results)))
    return results


def _log_start(rd: RunDir, cfg: RunConfig, inputs: RunInputs, seed: int, device: torch.device) -> None:
    data = inputs.data
    rd.log(f"seed {seed}: {cfg.model.name} ({cfg.model.backbone}) on {data.name}, {data.n_users:,} users, "
           f"{data.n_items:,} items, device {device}; epochs up to {cfg.train.epochs}, "
           f"patience {cfg.train.patience}")
    for warning in inputs.warnings:  # said once per run on stderr (train), and in every seed's log
        rd.log(f"warning: {warning}", echo=False)


def _test_line(results: dict[str, Any]) -> str:
    parts = [f"[{p}] N@10 {g['overall']['ndcg@10']:.4f} H@10 {g['overall']['hr@10']:.4f}"
             for p, g in results["test"].items()]
    return (f"test (best epoch {results['best_epoch']}, {results['seconds']['train']:.0f} s training): "
            + ", ".join(parts))


# ---------------------------------------------------------------------------------------------- seeds
def run_dir_for(cfg: RunConfig, seed: int) -> Path:
    return Path(cfg.output_dir) / cfg.name / f"seed-{seed}"


def seed_config(cfg: RunConfig, seed: int) -> dict[str, Any]:
    """The config.json of one seed's run."""
    config = cfg.to_dict()
    config["train"]["seed"] = seed
    return config


def train(cfg: RunConfig, seeds: list[int] | None = None, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    seeds = seeds or [cfg.train.seed]
    rt = runtime()
    # a finished run, a refused resume or a damaged checkpoint stops here, before any data or embedding work
    rt.on_main(lambda: [RunDir(run_dir_for(cfg, s)).check_start(seed_config(cfg, s), resume) for s in seeds])
    inputs = rt.staged(lambda: prepare_inputs(cfg, progress and rt.is_main))  # rank 0 first: it fills the caches
    if rt.is_main:  # on the progress logger at warning level: shown even when progress lines are not (-qq)
        for warning in inputs.warnings:
            PROGRESS.warning("[%s] warning: %s", cfg.name, warning)
    per_seed = [run_seed(cfg, inputs, s, run_dir_for(cfg, s), resume=resume, progress=progress) for s in seeds]
    summary = summarise(per_seed)
    rt.on_main(lambda: atomic_write_json(Path(cfg.output_dir) / cfg.name / "summary.json", summary))
    return summary


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over seeds of every test metric, per protocol and group (a group that is empty,
    hence absent, in some seed's results is left out)."""
    out: dict[str, Any] = {"name": results[0]["name"], "seeds": [r["seed"] for r in results],
                           "model": results[0]["model"], "backbone": results[0]["backbone"], "test": {}}
    for protocol, groups in results[0]["test"].items():
        out["test"][protocol] = {}
        for group, metrics in groups.items():
            if not all(group in r["test"][protocol] for r in results):
                continue
            out["test"][protocol][group] = {}
            for metric in metrics:
                vals = np.array([r["test"][protocol][group][metric] for r in results], dtype=float)
                out["test"][protocol][group][metric] = {
                    "mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "values": vals.tolist()}
    out["best_epochs"] = [r["best_epoch"] for r in results]
    out["best_valid_scores"] = [r["best_valid_score"] for r in results]
    return out


# ---------------------------------------------------------------------------------------------- reuse a run
@dataclass
class LoadedRun:
    cfg: RunConfig
    inputs: RunInputs
    model: Any
    seqs: DeviceSequences  # sequences of ``data``
    run_dir: RunDir
    data: SequenceData  # the model's users and items (inputs.catalogue once cold items are added)


def load_run(run_dir: str | Path, device: str = "auto", need_neighbours: bool = False,
             add_cold: bool = True) -> LoadedRun:
    """Rebuild a trained model from its run directory (config + best checkpoint); no LLM call is made when the
    embeddings are cached. Fingerprints are checked, so a changed dataset or embedding is an error. A
    cold-item run's held-out items are added as its test added them (``add_cold=False``: the warm model it
    validated)."""
    rd = RunDir(run_dir)
    if not (rd.path / "config.json").exists():
        raise FileNotFoundError(f"{rd.path} is not an esrkit run directory (no config.json)")
    cfg = run_config(rd)
    if not need_neighbours:
        cfg.model.alpha = 0.0 if model_class(cfg.model.name).uses_distillation else cfg.model.alpha
    if not rd.best.exists():
        raise FileNotFoundError(f"{rd.path} has no best checkpoint yet")
    ckpt.verify_checkpoint(rd.best)  # before the inputs are rebuilt: a damaged file fails without that work
    inputs = prepare_inputs(cfg)
    recorded = read_json(rd.path / "provenance.json").get("fingerprints", {})
    if recorded.get("data") and recorded["data"] != inputs.fingerprints["data"]:
        raise ValueError(f"{rd.path}: the dataset changed since training (fingerprint mismatch)")
    dev = resolve_device(device)
    model = build_model(cfg.model, inputs.data.n_items, cfg.data.max_len, inputs.assets).to(dev)
    if rd.best.exists():
        ckpt.load_model(rd.best, model)
    elif not model.trainable:  # nothing was learned, so nothing was saved: fit it again (e.g. popularity)
        model.setup(inputs.data)
    else:
        raise FileNotFoundError(f"{rd.path} has no best checkpoint yet")
    model.eval()
    data = inputs.data
    if inputs.cold is not None and add_cold:
        add_cold_items(model, cfg, inputs, cfg.train.seed)
        data = inputs.catalogue
    return LoadedRun(cfg, inputs, model, DeviceSequences(data, dev), rd, data)


def run_config(rd: RunDir) -> RunConfig:
    """A run's config.json as a RunConfig; an error names the file and which esrkit wrote it (an unknown key
    usually means a newer one)."""
    try:
        return config_from_dict(rd.config())
    except ConfigError as exc:
        raise ConfigError(f"{rd.path / 'config.json'}: {exc}{_written_by(rd)}") from None


def _written_by(rd: RunDir) -> str:
    try:
        env = read_json(rd.path / "provenance.json").get("environment", {})
    except (OSError, ValueError):
        return ""
    then = f"{env.get('versions', {}).get('esrkit', '?')} (commit {env.get('git_commit') or '?'})"
    now = f"{esrkit.__version__} (commit {git_commit() or '?'})"
    return (f"\nthe run was written by esrkit {then}; this is esrkit {now}. A key this esrkit does not know "
            "means a newer esrkit wrote the run: evaluate it with that version (or update esrkit).")


def run_evaluator(run: LoadedRun, split: str) -> Evaluator:
    """The evaluator ``esrkit train`` used for ``split`` of this run (a cold-item run's test: the full
    data)."""
    seed = run.cfg.train.seed
    if split == "test" and run.inputs.cold is not None:
        if run.data is not run.inputs.catalogue:
            raise ValueError("the cold-item test needs the held-out items added (load_run(add_cold=True))")
        return cold_test_evaluator(run.cfg, run.inputs.cold, run.seqs.device, seed)
    if run.inputs.cold is not None and run.data is not run.inputs.data:
        raise ValueError("validation of a cold-item run uses the warm model (load_run(add_cold=False))")
    valid, test = evaluators(run.cfg, run.inputs.data, run.seqs, seed)
    return valid if split == "valid" else test


def _epochs_seconds(epochs: list[dict[str, Any]]) -> float:
    """Training plus validation time of every epoch in the history (it survives --resume)."""
    return float(sum(h.get("train_seconds", 0.0) + h.get("valid_seconds", 0.0) for h in epochs))
