"""A run's inputs, from a resolved RunConfig: data, embeddings, PCA, similar users and the cold-item split.

Each step is cached in the workdir by content, so reruns and other seeds reuse it:

1. data: a processed dataset directory, or prepared on the fly (synthetic catalogue or any reader);
2. embeddings (only if the model needs them): explicit ``.npy`` files or a provider via the content-addressed
   cache; PCA of the item embeddings to the collaborative size;
3. similar users (only for LLM-ESR's self-distillation): an official-style ``.npy`` or built from the user
   embeddings (exact or hnswlib), cached by the embedding fingerprint.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from esrkit.config import ConfigError, RunConfig
from esrkit.data.cold import ColdSplit, check_cold_options, cold_split
from esrkit.data.groups import group_warnings
from esrkit.data.prepare import prepare_from_config
from esrkit.data.sequences import SequenceData
from esrkit.data.synthetic import SyntheticOptions, generate
from esrkit.embedding.pca import pca_fit
from esrkit.embedding.pipeline import embed_dataset
from esrkit.index import NeighbourTable, neighbours_for_config
from esrkit.models import ModelAssets, model_class
from esrkit.prompts import load_templates
from esrkit.providers import load_provider
from esrkit.resources import expand_path
from esrkit.utils.errors import error_text
from esrkit.utils.io import fingerprint_array, load_npy, stable_json_hash

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
    key = stable_json_hash(
        {
            "source": d.source,
            "inputs": inputs,
            "files": _file_stamps(inputs),
            "prepare": d.prepare,
            "synthetic": d.synthetic,
        }
    )[:16]
    cached = Path(cfg.workdir) / "datasets" / f"{d.name or d.source}-{key}"
    if (cached / "dataset.json").exists():
        return SequenceData.load(cached)
    if d.source == "synthetic":
        data = generate(SyntheticOptions(**d.synthetic))
    else:
        data = prepare_from_config(dataclasses.replace(d, inputs=inputs))
    data.save(cached, overwrite=True)
    return data


def _expanded(inputs: dict[str, Any]) -> dict[str, Any]:
    """Recipe paths may use $ESRKIT_SHARED / $ESRKIT_DATA / ~."""
    return {
        k: [str(expand_path(x)) for x in v] if isinstance(v, list) else str(expand_path(v))
        for k, v in inputs.items()
    }


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


# ----------------------------------------------------------------------------------------- step 2: embeddings
def load_embeddings(
    cfg: RunConfig, data: SequenceData, parts: tuple[str, ...], progress: bool = True, center: bool = True
) -> dict[str, Any]:
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
        options = e.options if name == e.provider else {}
        what = "both" if len(provider_parts) == 2 else provider_parts[0]
        result = embed_dataset(
            data,
            load_provider(name, **options),
            load_templates(e.templates),
            what,
            workdir=cfg.workdir,
            progress=progress,
        )
        for part in provider_parts:
            arr = getattr(result, part)
            out[part] = np.asarray(arr, dtype=np.float32)
            out["meta"][part] = {
                "source": str(result.directory),
                "provider": name,
                "templates": e.templates,
                "fingerprint": fingerprint_array(out[part]),
            }
    if center and e.center_items and out["items"] is not None:  # the fingerprint stays the raw table's
        out["center"] = item_center(out["items"])
        out["items"] = out["items"] - out["center"]
        out["meta"]["items"]["centered"] = True
    return out


def item_center(items: np.ndarray) -> np.ndarray:
    return items.mean(axis=0, dtype=np.float64).astype(np.float32)


def cold_embeddings(
    cfg: RunConfig, full: SequenceData, split: ColdSplit, parts: tuple[str, ...], progress: bool = True
) -> dict[str, Any]:
    """``load_embeddings`` under the cold-item protocol: item vectors of the whole catalogue (the held-out
    items' text is what they are added from), split into warm rows (training) and ``cold_items`` rows, both
    centred by the warm items' mean; user vectors from the training data only."""
    out: dict[str, Any] = {"items": None, "users": None, "center": None, "cold_items": None, "meta": {}}
    if "items" in parts:
        got = load_embeddings(cfg, full, ("items",), progress, center=False)
        table = got["items"][split.original_ids[1:] - 1]  # rows in the split's renumbered order
        warm, cold = table[: split.n_warm], table[split.n_warm :]
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
            raise ValueError(
                f"{cfg.embedding.pca_table}: expected ({items.shape[0]}, {dim}), got {table.shape}"
            )
        return table, None
    if dim > min(items.shape):
        option = "embedding.pca_dim" if cfg.embedding.pca_dim else "model.hidden"
        raise ConfigError(
            f"{option} = {dim}, but the item table starts from a PCA of the item embeddings, which has at "
            f"most min(items, embedding dimensions) = {min(items.shape)} components here: lower {option}"
        )
    return pca_fit(items, dim=dim)


# ----------------------------------------------------------------------------------------- step 3: neighbours
def load_neighbours(cfg: RunConfig, data: SequenceData, users: np.ndarray | None) -> tuple[np.ndarray, dict]:
    r = cfg.retrieval
    if r.neighbours:
        r = dataclasses.replace(r, neighbours=str(expand_path(r.neighbours)))
    if not r.neighbours and users is not None:
        key = stable_json_hash(
            {
                "users": fingerprint_array(users),
                "k": r.top_k,
                "method": r.method,
                "exact_below": r.exact_below,
                "m": r.hnsw_m,
                "efc": r.hnsw_ef_construction,
                "ef": r.hnsw_ef,
            }
        )[:16]
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
    """Each dataset user's first ``n`` similar users as dataset rows, matched through user ids: a table built
    for another user order (or another dataset) is re-keyed or refused, never silently misaligned."""
    table_ids = [str(u) for u in table.user_ids]
    data_ids = [str(u) for u in data.user_ids]
    if table_ids == data_ids:
        return table.first(n)
    data_row = {u: r for r, u in enumerate(data_ids)}
    in_table = set(table_ids)
    unknown = [u for u in data_ids if u not in in_table]
    if unknown:
        raise ValueError(
            f"the similar-user table has no entry for {len(unknown)} dataset users (e.g. {unknown[0]!r})"
        )
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
        raise ConfigError(f"data.cold_mode: {error_text(exc)}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not d.cold_items:
        return
    if not model_class(cfg.model.name).new_item_support(cfg.model):
        raise ConfigError(
            f"data.cold_items: model family {cfg.model.name!r} (with these switches) cannot "
            "add items after training, so it cannot be evaluated on held-out items"
        )
    fixed = [
        k
        for k, v in (
            ("embedding.user_embeddings", cfg.embedding.user_embeddings),
            ("embedding.pca_table", cfg.embedding.pca_table),
            ("retrieval.neighbours", cfg.retrieval.neighbours),
        )
        if v
    ]
    if fixed:
        raise ConfigError(
            f"data.cold_items: {', '.join(fixed)} were computed from the full data, held-out "
            "items included; leave them unset so they are computed from the training part"
        )


def _check_top_k(cfg: RunConfig, data: SequenceData) -> None:
    """Before anything is embedded: a small dataset cannot give every user retrieval.top_k other users."""
    r = cfg.retrieval
    if r.top_k >= data.n_users:
        raise ValueError(
            f"retrieval.top_k = {r.top_k} similar users per user, but {data.name!r} has "
            f"{data.n_users} users: set it to at most {data.n_users - 1} (--set retrieval.top_k="
            f"{data.n_users - 1}; retrieval.n_similar = {r.n_similar} of them are used)"
        )


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
    parts = tuple(
        p
        for p, wanted in (
            ("items", bool(need & {"llm_items", "pca"})),
            ("users", distill and not cfg.retrieval.neighbours),
        )
        if wanted
    )
    if "users" in parts:
        _check_top_k(cfg, data)
    fps: dict[str, Any] = {"data": data.fingerprint()}
    if split is not None:
        fps["cold_items"] = split.meta
    assets = ModelAssets()
    emb: dict[str, Any] = {"items": None, "users": None, "meta": {}}
    if parts:
        t0 = time.perf_counter()
        emb = (
            load_embeddings(cfg, data, parts, progress)
            if split is None
            else cold_embeddings(cfg, full, split, parts, progress)
        )
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
