"""``esrkit export`` and ``esrkit.load``: a run folder to an export folder, and an export folder back to a
ServedModel (the folder's layout and its checks: esrkit/serving/folder.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from esrkit.config import config_from_dict
from esrkit.embedding.pca import PCAProjection
from esrkit.models import ModelAssets
from esrkit.prompts.templates import templates_from_dict
from esrkit.runs.load import load_run
from esrkit.serving.folder import (
    FORMAT,
    ITEM_VECTORS,
    REQUIRED,
    VERSION,
    ExportError,
    check_item_vectors,
    rebuild_model,
    write_export,
)
from esrkit.serving.model import ServedModel, UserHistories
from esrkit.training.checkpoint import load_tensors
from esrkit.utils.io import read_json, sha256_file

__all__ = ["ExportError", "export_run", "load", "verify_export", "write_export"]


# ---------------------------------------------------------------------------------------------- writing
def export_run(
    run_dir: str | Path,
    out: str | Path,
    users: bool = True,
    overwrite: bool = False,
    device: str = "cpu",
    ranking: dict[str, float] | None = None,
) -> Path:
    """``esrkit export``: the run's best checkpoint (a cold-item run: with its held-out items added);
    ``ranking`` replaces some of the run's ranking-time options (e.g. ``{"neighbour_boost": 0.5}``; recorded
    in the export's config)."""
    served = ServedModel.from_run(load_run(run_dir, device, ranking=ranking))
    return write_export(served, out, overwrite=overwrite, users=users)


# ---------------------------------------------------------------------------------------------- reading
def verify_export(path: str | Path) -> dict[str, Any]:
    """The manifest, after checking the format and every listed file's sha256; a clear error otherwise."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise ExportError(
            f"{path} is not an esrkit export (no manifest.json); make one with `esrkit export RUN -o DIR`"
        )
    try:
        manifest = read_json(manifest_path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{manifest_path}: not valid JSON ({exc}); export the run again") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise ExportError(f"{manifest_path}: not an {FORMAT} manifest")
    if int(manifest.get("version", 0)) > VERSION:
        raise ExportError(
            f"{manifest_path}: version {manifest['version']} is newer than this esrkit ({VERSION})"
        )
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
            raise ExportError(
                f"{file}: changed since export (sha256 {digest[:16]}..., manifest.json says "
                f"{str(info.get('sha256'))[:16]}...); refusing to use it, export the run again"
            )
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
        model,
        cfg,
        item_ids,
        titles,
        assets=assets,
        llm_center=center,
        llm_dim=meta.get("llm_dim"),
        provider=meta.get("provider"),
        users=users,
        info=dict(meta.get("source") or {}, export=str(path)),
        templates=templates_from_dict(
            templates, name=meta.get("template_name") or "export", source=str(path / "serving.json")
        )
        if templates
        else None,
    )


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
        raise ExportError(
            f"{path / 'users.safetensors'}: offsets do not fit {len(user_ids)} users and {len(items)} items"
        )
    return UserHistories(list(map(str, user_ids)), offsets, items)
