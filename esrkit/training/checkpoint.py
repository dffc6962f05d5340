"""Checkpoints in safetensors + JSON (no pickle): model weights, and for resuming the optimizer state, RNG
states and trainer bookkeeping. Writes are atomic (temporary file, then rename).

Every checkpoint's SHA-256 is recorded in ``hashes.json`` beside it and checked on every load, so a damaged
file is an error naming it, never weights silently used (a flipped byte in a float still loads). The record is
written atomically around the file: first the new hash as ``pending`` (the old file stays valid), then the
file, then the new hash alone; a crash between the steps leaves a record that accepts whichever file is on
disk. Checkpoints written before hashes were recorded load unverified, with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from esrkit.utils.io import atomic_write_bytes, atomic_write_json, read_json, sha256_bytes

log = logging.getLogger(__name__)

HASHES = "hashes.json"  # per checkpoint folder: {"files": {name: {"sha256": ..., "bytes": ...[, "pending"]}}}
HASHES_FORMAT = "esrkit-checkpoint-hashes"


class CheckpointError(RuntimeError):
    """A checkpoint is damaged or does not match the hash recorded when it was written."""


# ---------------------------------------------------------------------------------------------- hashes
def hashes_path(path: str | Path) -> Path:
    return Path(path).parent / HASHES


def _read_hashes(path: Path) -> dict[str, Any]:
    record = hashes_path(path)
    if not record.is_file():
        return {}
    try:
        files = read_json(record).get("files", {})
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{record} is damaged ({exc}), so the checkpoints beside it cannot be "
            "verified; delete it to load them unverified, or retrain"
        ) from None
    return files if isinstance(files, dict) else {}


def _record_hash(path: Path, entry: dict[str, Any]) -> None:
    files = _read_hashes(path)
    files[path.name] = entry
    atomic_write_json(hashes_path(path), {"format": HASHES_FORMAT, "version": 1, "files": files})


def _pending(entry: dict[str, Any]) -> list[str]:
    pending = entry.get("pending", [])
    return [pending] if isinstance(pending, str) else list(pending)


def write_checkpoint_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` atomically and record its SHA-256 (see the module docstring for the order)."""
    path = Path(path)
    digest = sha256_bytes(data)
    old = _read_hashes(path).get(path.name, {})
    if old.get("sha256") and path.is_file():  # a write that crashed midway left pending hashes: kept
        _record_hash(path, {**old, "pending": [digest, *_pending(old)][:4]})
    atomic_write_bytes(path, data)
    _record_hash(path, {"sha256": digest, "bytes": len(data)})


def read_checkpoint_bytes(path: str | Path) -> bytes:
    """The bytes of a checkpoint, checked against the hash recorded when it was written."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: checkpoint not found; the run never finished an epoch, or the file "
            "was removed (retrain the run)"
        ) from None
    entry = _read_hashes(path).get(path.name)
    if entry is None:
        log.warning("%s has no recorded hash (written by an older esrkit); loading it unverified", path)
        return data
    digest = sha256_bytes(data)
    if digest != entry.get("sha256") and digest not in _pending(entry):
        raise CheckpointError(
            f"{path} is damaged: its SHA-256 {digest[:12]}… does not match {str(entry.get('sha256'))[:12]}… "
            f"recorded in {hashes_path(path).name} when it was written ({len(data):,} bytes now, "
            f"{entry.get('bytes', 0):,} then); nothing was loaded. {_what_to_do(path)}"
        )
    return data


def _what_to_do(path: Path) -> str:
    run = path.parent.parent
    retrain = f"delete {run} (or choose another --name) and train it again"
    if path.name.startswith("last"):
        return (
            f"--resume cannot continue from it: {retrain}; until then `esrkit evaluate` still works from "
            "checkpoints/best.safetensors if that file is intact."
        )
    return f"Retrain the run: {retrain}."


def verify_checkpoint(path: str | Path) -> None:
    """Check a checkpoint's hash and format without keeping it (before any work that depends on it)."""
    tensors_from_bytes(read_checkpoint_bytes(path), path)


# ---------------------------------------------------------------------------------------------- files
def tensors_from_bytes(
    data: bytes, path: str | Path = "<memory>"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and esrkit metadata of a safetensors file held in memory; damage is an error naming it."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        meta = json.loads((header.get("__metadata__") or {}).get("json", "{}"))
        return st_load(data), meta
    except (SafetensorError, ValueError, AttributeError, OverflowError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors checkpoint ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the file is truncated or damaged: retrain the run"
        ) from None


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None
) -> None:
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata or {})}
    write_checkpoint_bytes(path, st_save(flat, metadata=meta))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return tensors_from_bytes(read_checkpoint_bytes(path), path)


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in state["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


def save_training_state(
    path: str | Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """``extra``: more named tensors to resume from (the weight average's, ``ema.*``)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_to_tensors(opt)
    tensors.update(opt_tensors)
    tensors.update(rng_tensors())
    tensors.update(extra or {})
    save_tensors(path, tensors, {"optimizer": opt_meta, "trainer": trainer_state})


def load_training_state(
    path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restores the model, optimiser and RNG; returns the trainer's state and every tensor of the checkpoint
    (for what else was saved beside them)."""
    tensors, meta = load_tensors(path)
    device = next(model.parameters()).device
    model.load_state_dict({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")})
    optimizer_from_tensors(
        opt, {k: v.to(device) for k, v in tensors.items() if k.startswith("optimizer.")}, meta["optimizer"]
    )
    restore_rng(tensors)
    return meta["trainer"], tensors


def save_model(path: str | Path, model: torch.nn.Module, metadata: dict[str, Any] | None = None) -> None:
    save_tensors(path, dict(model.state_dict()), metadata)


def load_model(path: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    tensors, meta = load_tensors(path)
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in tensors.items()})
    return meta
