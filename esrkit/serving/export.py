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
from typing import Any

import numpy as np
import torch

import esrkit
from esrkit.config import config_from_dict
from esrkit.embedding.pca import PCAProjection
from esrkit.models import ModelAssets, build_model, model_class
from esrkit.models.recommender import SequentialRecommender
from esrkit.prompts.templates import templates_from_dict, templates_to_dict
from esrkit.serving.model import ServedModel, UserHistories
from esrkit.training.checkpoint import load_tensors, save_tensors
from esrkit.training.pipeline import load_run
from esrkit.utils.io import atomic_directory, atomic_write_json, atomic_write_text, read_json, sha256_file

FORMAT = "esrkit-export"
VERSION = 1
REQUIRED = ("config.json", "serving.json", "model.safetensors", "items.jsonl")
ITEM_VECTORS = "serving.item_vectors"


class ExportError(ValueError):
    """An export folder is missing, changed since export, or does not rebuild its model."""


# ---------------------------------------------------------------------------------------------- writing
def export_run(run_dir: str | Path, out: str | Path, users: bool = True, overwrite: bool = False,
               device: str = "cpu") -> Path:
    """``esrkit export``: the run's best checkpoint (a cold-item run: with its held-out items added)."""
    served = ServedModel.from_run(load_run(run_dir, device))
    return write_export(served, out, overwrite=overwrite, users=users)


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
        lines = "".join(json.dumps({"id": i, "title": t}, ensure_ascii=False) + "\n"
                        for i, t in zip(served.item_ids, served.titles))
        atomic_write_text(tmp / "items.jsonl", lines)
        if users and served.users is not None:
            u = served.users
            save_tensors(tmp / "users.safetensors", {"offsets": torch.as_tensor(u.offsets, dtype=torch.int64),
                                                     "items": torch.as_tensor(u.items, dtype=torch.int64)})
            atomic_write_json(tmp / "users.json", u.user_ids, indent=None)
        atomic_write_json(tmp / "config.json", served.cfg.to_dict())
        atomic_write_json(tmp / "serving.json", meta)
        files = {f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
                 for f in sorted(tmp.iterdir()) if f.is_file()}
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
        rebuilt = ServedModel(twin, served.cfg, served.item_ids, served.titles).user_vectors(probe).float()
    if not torch.allclose(live, rebuilt, rtol=1e-4, atol=1e-5):
        gap = float((live - rebuilt).abs().max())
        raise ExportError(f"model family {served.cfg.model.name!r} cannot be exported: the rebuilt model "
                          f"encodes histories differently (max difference {gap:.3g})")


# ---------------------------------------------------------------------------------------------- reading
def verify_export(path: str | Path) -> dict[str, Any]:
    """The manifest, after checking the format and every listed file's sha256; a clear error otherwise."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise ExportError(f"{path} is not an esrkit export (no manifest.json); make one with `esrkit export "
                          "RUN -o DIR`")
    try:
        manifest = read_json(manifest_path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{manifest_path}: not valid JSON ({exc}); export the run again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise ExportError(f"{manifest_path}: not an {FORMAT} manifest")
    if int(manifest.get("version", 0)) > VERSION:
        raise ExportError(f"{manifest_path}: version {manifest['version']} is newer than this esrkit "
                          f"({VERSION})")
    files = manifest["files"]
    for name in REQUIRED:
        if name not in files:
            raise ExportError(f"{manifest_path}: lists no {name}")
    for name, info in files.items():
        if Path(name).name != name or name.startswith(".") or name == "manifest.json":
            raise ExportError(f"{manifest_path}: invalid file name {name!r}")
        file = path / name
        if not file.is_file():
            raise ExportError(f"{file}: missing (manifest.json lists it); export the run again")
        digest = sha256_file(file)
        if digest != info.get("sha256"):
            raise ExportError(f"{file}: changed since export (sha256 {digest[:16]}..., manifest.json says "
                              f"{str(info.get('sha256'))[:16]}...); refusing to use it, export the run again")
    return manifest


def load(path: str | Path, device: str = "cpu") -> ServedModel:
    """``esrkit.load(DIR)``: a verified export folder as a ServedModel (see the module docstring)."""
    path = Path(path)
    manifest = verify_export(path)
    cfg = config_from_dict(read_json(path / "config.json"))
    meta = read_json(path / "serving.json")
    tensors, _ = load_tensors(path / "model.safetensors")
    if ITEM_VECTORS not in tensors:
        raise ExportError(f"{path / 'model.safetensors'}: no {ITEM_VECTORS}")
    model = rebuild_model(cfg, meta, tensors, device)
    check_item_vectors(model, tensors[ITEM_VECTORS], str(path))
    item_ids, titles = read_items(path / "items.jsonl", model.n_items)
    assets, center = ModelAssets(), None
    if "assets.safetensors" in manifest["files"]:
        extra, _ = load_tensors(path / "assets.safetensors")
        if "pca.mean" in extra:
            assets.pca_projection = PCAProjection(extra["pca.mean"].numpy(), extra["pca.components"].numpy())
        if "llm.center" in extra:
            center = extra["llm.center"].numpy()
    users = read_users(path) if "users.safetensors" in manifest["files"] else None
    templates = meta.get("templates")
    return ServedModel(
        model, cfg, item_ids, titles, assets=assets, llm_center=center, llm_dim=meta.get("llm_dim"),
        provider=meta.get("provider"), users=users, info=dict(meta.get("source") or {}, export=str(path)),
        templates=templates_from_dict(templates, name=meta.get("template_name") or "export",
                                      source=str(path / "serving.json")) if templates else None)


def rebuild_model(cfg: Any, meta: dict[str, Any], tensors: dict[str, torch.Tensor], device: str
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
        pca_table=np.zeros((n_items, pca_dim), dtype=np.float32) if "pca" in need else None)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; leave the caller's RNG alone
        model = build_model(cfg.model, n_items, cfg.data.max_len, assets)
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ExportError(f"model.safetensors does not fit the model built from config.json (missing "
                          f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
    for key, value in tensors.items():
        if key.startswith("buffer."):
            _set_buffer(model, key[len("buffer."):], value)
    return model.to(device).eval()


def _set_buffer(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    current = module._buffers.get(leaf)
    if current is None or current.shape != value.shape:
        shape = None if current is None else tuple(current.shape)
        raise ExportError(f"model.safetensors: buffer {name} has shape {tuple(value.shape)}; the model built "
                          f"from config.json has {shape}")
    module._buffers[leaf] = value.to(current.dtype)


def check_item_vectors(model: SequentialRecommender, expected: torch.Tensor, where: str) -> None:
    with torch.no_grad():
        got = model.all_item_vectors().float().cpu()
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-6):
        diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("nan")
        raise ExportError(f"{where}: the model rebuilt from its tensors does not reproduce the exported item "
                          f"vectors (shape {tuple(got.shape)} vs {tuple(expected.shape)}, max difference "
                          f"{diff:.3g})")


def read_items(path: Path, n_items: int) -> tuple[list[str], list[str]]:
    ids, titles = [], []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                ids.append(str(row["id"]))
                titles.append(str(row.get("title") or ""))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ExportError(f"{path}:{lineno}: expected a JSON object with an 'id'") from None
    if len(ids) != n_items:
        raise ExportError(f"{path}: {len(ids)} items for a model of {n_items}")
    return ids, titles


def read_users(path: Path) -> UserHistories:
    tensors, _ = load_tensors(path / "users.safetensors")
    user_ids = read_json(path / "users.json")
    offsets, items = tensors["offsets"].numpy(), tensors["items"].numpy()
    if len(offsets) != len(user_ids) + 1 or int(offsets[-1]) != len(items):
        raise ExportError(f"{path / 'users.safetensors'}: offsets do not fit {len(user_ids)} users and "
                          f"{len(items)} items")
    return UserHistories(list(map(str, user_ids)), offsets, items)
