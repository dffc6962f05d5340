"""Checkpoints in safetensors + JSON (no pickle): model weights, and for resuming the optimizer state, RNG
states and trainer bookkeeping. Writes are atomic (temporary file, then rename)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from esrkit.utils.io import atomic_write_bytes


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata or {})}
    atomic_write_bytes(path, st_save(flat, metadata=meta))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    data = Path(path).read_bytes()
    tensors = st_load(data)
    from safetensors import safe_open  # metadata via the header

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {}).get("json", "{}"))
    return tensors, meta


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


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
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
    path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer, trainer_state: dict[str, Any]
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_to_tensors(opt)
    tensors.update(opt_tensors)
    tensors.update(rng_tensors())
    save_tensors(path, tensors, {"optimizer": opt_meta, "trainer": trainer_state})


def load_training_state(path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    tensors, meta = load_tensors(path)
    device = next(model.parameters()).device
    model.load_state_dict({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")})
    optimizer_from_tensors(opt, {k: v.to(device) for k, v in tensors.items() if k.startswith("optimizer.")}, meta["optimizer"])
    restore_rng(tensors)
    return meta["trainer"]


def save_model(path: str | Path, model: torch.nn.Module, metadata: dict[str, Any] | None = None) -> None:
    save_tensors(path, dict(model.state_dict()), metadata)


def load_model(path: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    tensors, meta = load_tensors(path)
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in tensors.items()})
    return meta
