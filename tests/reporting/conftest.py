"""Fake run directories with fixed numbers: the reporting code reads files, so tests write exactly those
files."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from esrkit.config import RunConfig

GROUPS = (
    "overall",
    "tail_item",
    "head_item",
    "tail_user",
    "head_user",
    "user_1-4",
    "user_5-9",
    "user_10-14",
    "user_15-19",
    "user_20+",
    "item_1-9",
    "item_10-29",
    "item_30-59",
    "item_60-99",
    "item_100+",
)
METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")


def metrics_block(value: Callable[[str, str], float | None]) -> dict[str, dict[str, float]]:
    """{group: {metric: value}}; a None value leaves the group out, a NaN value marks it empty."""
    out: dict[str, dict[str, float]] = {}
    for g in GROUPS:
        row = {m: value(g, m) for m in METRICS}
        if any(v is None for v in row.values()):
            continue
        out[g] = {**row, "users": 0 if any(math.isnan(v) for v in row.values()) else 10}
    return out


def write_run(
    root: Path,
    name: str,
    per_seed: dict[int, Any],
    model: str = "id",
    backbone: str = "sasrec",
    data_fp: str = "fp-data-1",
    data_name: str = "toy",
    model_cfg: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    protocols: tuple[str, ...] = ("sampled", "full"),
    valid: dict[int, float] | None = None,
    base_config: dict[str, Any] | None = None,
) -> Path:
    """``per_seed``: seed -> a number (every cell), a dict {(group, metric): value} over a default, or a
    callable (group, metric) -> value. ``valid``: seed -> validation overall ndcg@10. ``base_config``: the
    config to record (default: RunConfig defaults)."""
    if base_config:
        cfg = json.loads(json.dumps(base_config))
    else:
        cfg = RunConfig().to_dict()
        cfg["name"] = name
        cfg["data"]["name"] = data_name
        cfg["model"].update({"name": model, "backbone": backbone, **(model_cfg or {})})
        for section, values in (config or {}).items():
            cfg[section].update(values)
    folder = root / name
    for seed, spec in per_seed.items():
        fn = _value_fn(spec)
        d = folder / f"seed-{seed}"
        d.mkdir(parents=True, exist_ok=True)
        cfg["train"]["seed"] = seed
        v = (valid or {}).get(seed, 0.1)
        results = {
            "name": name,
            "seed": seed,
            "model": model,
            "backbone": backbone,
            "best_epoch": 1,
            "test": {p: metrics_block(fn) for p in protocols},
            "valid": {p: metrics_block(lambda g, m, v=v: v) for p in protocols},
        }
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "provenance.json").write_text(json.dumps({"fingerprints": {"data": data_fp}}))
        (d / "results.json").write_text(json.dumps(results))
    (folder / "summary.json").write_text(json.dumps({"name": name, "seeds": list(per_seed), "test": {}}))
    return folder


def _value_fn(spec: Any) -> Callable[[str, str], float | None]:
    if callable(spec):
        return spec
    if isinstance(spec, dict):
        default = spec.get("default", 0.1)
        return lambda g, m: spec.get((g, m), spec.get(g, default))
    return lambda g, m: float(spec)


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    root = tmp_path / "runs"

    def make(name: str, per_seed: dict[int, Any], **kw: Any) -> Path:
        return write_run(kw.pop("root", root), name, per_seed, **kw)

    make.root = root  # type: ignore[attr-defined]
    return make


@pytest.fixture
def run_writer() -> Callable[..., Path]:
    """``write_run`` itself, for fakes that write run folders where the code under test asks."""
    return write_run
