"""A self-contained export folder: a trained model that loads with no dataset, no cache and no LLM call.

``esrkit export RUN -o DIR`` writes (atomically: a temporary folder, then a rename)::

    DIR/
      manifest.json      format, version, and the sha256 and size of every other file
      config.json        the run's resolved configuration
      serving.json       catalogue size, model family, new-item path, LLM width, provider identity and options
                         (no secrets), the prompt template itself, where it came from (run, seed, git commit)
      model.safetensors  every model tensor: the state dict, the non-persistent buffers the model scores with
                         (LLM-ESR's frozen semantic table) and the item vectors it scores with (a check)
      assets.safetensors what new items need: the PCA projection (mean, components), the centring vector
      items.jsonl        one {"id", "title"} per item, in id order (line i = item i)
      users.safetensors  the training users' sequences (CSR offsets + items) and users.json their ids
                         (left out with --without-users)

Loading verifies every hash first and refuses a changed file by name; it then rebuilds the model from the
config and checks that it reproduces the exported item vectors. Writing checks the same round trip, so a model
family whose state does not travel with its tensors cannot be exported silently broken.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import esrkit
from esrkit.models import ModelAssets, build_model, model_class
from esrkit.models.recommender import SequentialRecommender
from esrkit.prompts.templates import templates_to_dict
from esrkit.training.checkpoint import save_tensors
from esrkit.utils.io import atomic_directory, atomic_write_json, atomic_write_text, sha256_file

if TYPE_CHECKING:  # annotations only: serving/model.py imports this module to save itself
    from esrkit.serving.model import ServedModel

FORMAT = "esrkit-export"
VERSION = 1
REQUIRED = ("config.json", "serving.json", "model.safetensors", "items.jsonl")
ITEM_VECTORS = "serving.item_vectors"


class ExportError(ValueError):
    """An export folder is missing, changed since export, or does not rebuild its model."""


# ---------------------------------------------------------------------------------------------- writing
def write_export(served: ServedModel, path: str | Path, overwrite: bool = False, users: bool = True) -> Path:
    path = Path(path)
    tensors = model_tensors(served.model)
    tensors[ITEM_VECTORS] = served.item_vectors().detach().float().cpu().clone()
    meta = serving_meta(served)
    check_round_trip(served, meta, tensors)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_tensors(tmp / "model.safetensors", tensors)
        extra = asset_tensors(served)
        if extra:
            save_tensors(tmp / "assets.safetensors", extra)
        lines = "".join(
            json.dumps({"id": i, "title": t}, ensure_ascii=False) + "\n"
            for i, t in zip(served.item_ids, served.titles)
        )
        atomic_write_text(tmp / "items.jsonl", lines)
        if users and served.users is not None:
            u = served.users
            save_tensors(
                tmp / "users.safetensors",
                {
                    "offsets": torch.as_tensor(u.offsets, dtype=torch.int64),
                    "items": torch.as_tensor(u.items, dtype=torch.int64),
                },
            )
            atomic_write_json(tmp / "users.json", u.user_ids, indent=None)
        atomic_write_json(tmp / "config.json", served.cfg.to_dict())
        atomic_write_json(tmp / "serving.json", meta)
        files = {
            f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
            for f in sorted(tmp.iterdir())
            if f.is_file()
        }
        atomic_write_json(tmp / "manifest.json", {"format": FORMAT, "version": VERSION, "files": files})
    return path


def model_tensors(model: SequentialRecommender) -> dict[str, torch.Tensor]:
    """The state dict (``state.``) plus every non-persistent buffer (``buffer.``), which checkpoints leave out
    because training rebuilds them from the dataset (LLM-ESR's frozen semantic table)."""
    state = model.state_dict()
    out = {f"state.{k}": v.detach().cpu() for k, v in state.items()}
    for name, buf in model.named_buffers():
        if name not in state:
            out[f"buffer.{name}"] = buf.detach().cpu()
    return out


def asset_tensors(served: ServedModel) -> dict[str, torch.Tensor]:
    out = {}
    projection = served.assets.pca_projection
    if projection is not None:
        out["pca.mean"] = torch.as_tensor(projection.mean)
        out["pca.components"] = torch.as_tensor(projection.components)
    if served.llm_center is not None:
        out["llm.center"] = torch.as_tensor(served.llm_center)
    return out


def serving_meta(served: ServedModel) -> dict[str, Any]:
    cfg = served.cfg
    return {
        "n_items": served.n_items,
        "model": cfg.model.name,
        "backbone": cfg.model.backbone,
        "objective": served.model.objective,
        "new_items": served.new_item_support,
        "llm_dim": served.llm_dim,
        "centered": served.llm_center is not None,
        "provider": served.provider_spec,
        "templates": templates_to_dict(served.templates) if served.templates is not None else None,
        "template_name": served.templates.name if served.templates is not None else None,
        "source": served.info,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "esrkit_version": esrkit.__version__,
    }


def check_round_trip(served: ServedModel, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Rebuild the model from what is about to be written; it must score like the live one."""
    try:
        twin = rebuild_model(served.cfg, meta, tensors, "cpu")
        check_item_vectors(twin, tensors[ITEM_VECTORS], "the export")
    except ExportError as exc:
        raise ExportError(f"model family {served.cfg.model.name!r} cannot be exported: {exc}") from None
    probe = [np.arange(1, min(served.n_items, 5) + 1)]
    if served.users is not None:
        probe += [served.users.history(r) for r in range(min(8, len(served.users)))]
    with torch.no_grad():
        live = served.user_vectors(probe).float().cpu()
        rebuilt = type(served)(twin, served.cfg, served.item_ids, served.titles).user_vectors(probe).float()
    if not torch.allclose(live, rebuilt, rtol=1e-4, atol=1e-5):
        gap = float((live - rebuilt).abs().max())
        raise ExportError(
            f"model family {served.cfg.model.name!r} cannot be exported: the rebuilt model "
            f"encodes histories differently (max difference {gap:.3g})"
        )


# ---------------------------------------------------------------------------------------------- rebuilding
def rebuild_model(
    cfg: Any, meta: dict[str, Any], tensors: dict[str, torch.Tensor], device: str
) -> SequentialRecommender:
    """The model family built from the config at the exported catalogue size (zero placeholders for the
    training-time assets, overwritten by the exported tensors), with every exported tensor loaded."""
    n_items = int(meta["n_items"])
    need = model_class(cfg.model.name).requirements(cfg.model)
    llm_dim = meta.get("llm_dim")
    if "llm_items" in need and not llm_dim:
        raise ExportError("serving.json: the model needs LLM item vectors but records no llm_dim")
    pca_dim = cfg.embedding.pca_dim or cfg.model.hidden
    assets = ModelAssets(
        llm_items=np.zeros((n_items, int(llm_dim)), dtype=np.float32) if "llm_items" in need else None,
        pca_table=np.zeros((n_items, pca_dim), dtype=np.float32) if "pca" in need else None,
    )
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; leave the caller's RNG alone
        model = build_model(cfg.model, n_items, cfg.data.max_len, assets)
    state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ExportError(
            f"model.safetensors does not fit the model built from config.json (missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    for key, value in tensors.items():
        if key.startswith("buffer."):
            _set_buffer(model, key[len("buffer.") :], value)
    return model.to(device).eval()


def _set_buffer(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    current = module._buffers.get(leaf)
    if current is None or current.shape != value.shape:
        shape = None if current is None else tuple(current.shape)
        raise ExportError(
            f"model.safetensors: buffer {name} has shape {tuple(value.shape)}; the model built "
            f"from config.json has {shape}"
        )
    module._buffers[leaf] = value.to(current.dtype)


def check_item_vectors(model: SequentialRecommender, expected: torch.Tensor, where: str) -> None:
    with torch.no_grad():
        got = model.all_item_vectors().float().cpu()
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-6):
        diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("nan")
        raise ExportError(
            f"{where}: the model rebuilt from its tensors does not reproduce the exported item "
            f"vectors (shape {tuple(got.shape)} vs {tuple(expected.shape)}, max difference "
            f"{diff:.3g})"
        )
