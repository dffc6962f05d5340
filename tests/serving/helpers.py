"""Served models built directly (no training): the serving properties hold for any weights, so most serving
tests need no training run. Item vectors come from a small offline (hashing) provider, as a run's would."""

from __future__ import annotations

import functools

import numpy as np

from esrkit.config import resolve_recipe
from esrkit.data.synthetic import SyntheticOptions, generate
from esrkit.embedding.pca import pca_fit
from esrkit.models import ModelAssets, build_model
from esrkit.prompts import build_item_prompts, load_templates
from esrkit.providers import build_provider
from esrkit.serving import ServedModel, UserHistories

PROVIDER_OPTIONS = {"dim": 32, "n_features": 4096}  # a tiny offline provider: fast, deterministic, offline
MAX_LEN = 12  # short, so tests cover histories longer than the window


@functools.lru_cache(maxsize=1)
def catalogue():
    return generate(SyntheticOptions(n_users=120, n_items=150, seed=3))


def tiny_provider():
    return build_provider("hashing", dict(PROVIDER_OPTIONS), name="offline")


@functools.lru_cache(maxsize=2)
def item_vectors(center: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    raw = tiny_provider().embed(build_item_prompts(catalogue(), load_templates("generic")))
    if not center:
        return raw, None
    mean = raw.mean(axis=0, dtype=np.float64).astype(np.float32)
    return raw - mean, mean


def config(*overrides: str):
    dim, features = PROVIDER_OPTIONS["dim"], PROVIDER_OPTIONS["n_features"]
    options = f"embedding.options={{dim={dim}, n_features={features}}}"
    return resolve_recipe(
        "demo", [f"data.max_len={MAX_LEN}", "model.hidden=16", "model.dropout=0.0", options, *overrides]
    )


def served_model(*overrides: str, seed: int = 0) -> ServedModel:
    """A ServedModel of the family in ``overrides`` (default LLM-ESR on SASRec) at its initial weights."""
    import torch

    cfg = config(*overrides)
    data = catalogue()
    llm, center = item_vectors(cfg.embedding.center_items)
    table, projection = pca_fit(llm, cfg.model.hidden)
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.n_items, cfg.data.max_len, ModelAssets(llm, table, projection))
    with torch.no_grad():  # initial weights give near-equal scores; spread them so rankings are well defined
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    titles = [a.get("title") or "" for a in data.item_attrs]
    return ServedModel(
        model,
        cfg,
        data.item_ids,
        titles,
        assets=ModelAssets(pca_projection=projection),
        llm_center=center,
        llm_dim=llm.shape[1],
        provider=tiny_provider().describe(),
        templates=load_templates("generic"),
        users=UserHistories.from_data(data),
    )
