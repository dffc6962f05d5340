"""Hyper-parameter sweeps (the paper's Figure 3: alpha and N), run sequentially, resumable and shardable.

* ``expand_grid``: ``each`` = one factor at a time around the recipe (every other key stays at the recipe
  value, as in Figure 3); ``product`` = the full grid. Every setting assigns *all* grid keys, so a setting is
  named ``<prefix>-alpha=0.5-n_similar=10`` in both modes: the recipe's own point is run once, and a
  ``product`` sweep reuses the runs of an ``each`` sweep.
* ``--shard i/n``: process ``i`` (0-based) of ``n`` takes settings ``i, i+n, i+2n, ...``; each process trains
  into the same folder and the last one to finish writes the complete ``sweep.json`` (or rerun with
  ``--report-only``).
* the results, the choice of the best setting on validation and the report: esrkit/reporting/sweep.py.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esrkit.config import ConfigError, parse_override, resolve_recipe, watch_metric
from esrkit.reporting.sweep import is_finished, short_keys
from esrkit.reporting.tables import format_value
from esrkit.runs.train import train
from esrkit.training.rundir import comparable_config
from esrkit.utils.errors import quote

log = logging.getLogger(__name__)
MODES = ("each", "product")


# ---------------------------------------------------------------------------------------------- grid
def parse_grid(specs: list[str] | tuple[str, ...]) -> dict[str, list[Any]]:
    """``["model.alpha=1,0.5", "retrieval.n_similar=2,6"]`` -> {"model.alpha": [1, 0.5], ...} (TOML
    values)."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--grid {spec!r} must look like key=v1,v2,... (e.g. model.alpha=1,0.5,0.1)")
        key, raw = spec.split("=", 1)
        key = key.strip()
        values = [parse_override(f"{key}={v.strip()}")[1] for v in raw.split(",") if v.strip()]
        if not values:
            raise ValueError(f"--grid {spec!r} lists no values")
        if key in grid:
            raise ValueError(f"--grid {key} is given twice")
        grid[key] = values
    return grid


def get_path(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{key} is not a config key")
        node = node[part]
    return node


def coerce_like(value: Any, base: Any) -> Any:
    """Give a grid value the config's type (``1`` for a float field is ``1.0``) so equal settings compare
    equal."""
    if isinstance(base, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def expand_grid(grid: dict[str, list[Any]], base: dict[str, Any], mode: str = "each") -> list[dict[str, Any]]:
    """Settings (every grid key assigned), deduplicated, in a stable order."""
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}, not {mode!r}")
    keys = list(grid)
    values = {k: [coerce_like(v, base.get(k)) for v in grid[k]] for k in keys}
    if mode == "product":
        settings = [dict(zip(keys, combo)) for combo in itertools.product(*(values[k] for k in keys))]
    else:
        settings = [{**{k: base[k] for k in keys}, key: v} for key in keys for v in values[key]]
    out, seen = [], set()
    for s in settings:
        marker = json.dumps([s[k] for k in keys])
        if marker not in seen:
            seen.add(marker)
            out.append(s)
    return out


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4); process indices are 0-based."""
    if not text:
        return 0, 1
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), not {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n (process indices are 0-based)")
    return i, n


def shard(settings: list[dict[str, Any]], index: int, count: int) -> list[dict[str, Any]]:
    """Round-robin split: settings of similar cost (neighbouring values) land on different processes."""
    return settings[index::count]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a TOML basic string


def setting_name(prefix: str, setting: dict[str, Any]) -> str:
    names = short_keys(list(setting))
    return prefix + "".join(f"-{names[k]}={format_value(v)}" for k, v in setting.items())


def overrides(setting: dict[str, Any]) -> list[str]:
    return [f"{k}={toml_value(v)}" for k, v in setting.items()]


# ---------------------------------------------------------------------------------------------- plan
@dataclass
class SweepPlan:
    recipe: str
    prefix: str
    folder: Path
    grid: dict[str, list[Any]]
    base: dict[str, Any]
    mode: str
    seeds: list[int]
    sets: list[str] = field(default_factory=list)
    workdir: str | None = None
    select: str = "ndcg@10"

    @property
    def settings(self) -> list[dict[str, Any]]:
        return expand_grid(self.grid, self.base, self.mode)

    def name(self, setting: dict[str, Any]) -> str:
        return setting_name(self.prefix, setting)

    def config(self, setting: dict[str, Any]):
        cfg = resolve_recipe(self.recipe, list(self.sets) + overrides(setting))
        cfg.name = self.name(setting)
        cfg.output_dir = str(self.folder)
        if self.workdir:
            cfg.workdir = self.workdir
        return cfg


def make_plan(
    recipe: str,
    grid: dict[str, list[Any]],
    mode: str = "each",
    seeds: list[int] | None = None,
    sets: list[str] | tuple[str, ...] = (),
    output_dir: str | None = None,
    prefix: str | None = None,
    workdir: str | None = None,
    select: str = "ndcg@10",
) -> SweepPlan:
    """Resolve the recipe once: the base values of the grid keys, the seeds and the sweep folder."""
    base_cfg = resolve_recipe(recipe, list(sets))
    tree = base_cfg.to_dict()
    base = {k: get_path(tree, k) for k in grid}
    prefix = prefix or base_cfg.name
    folder = Path(output_dir) if output_dir else Path(base_cfg.output_dir) / f"sweep-{prefix}"
    plan = SweepPlan(
        recipe, prefix, folder, grid, base, mode, seeds or [base_cfg.train.seed], list(sets), workdir, select
    )
    for setting in plan.settings:  # also validates the mode
        plan.config(setting)  # a bad key or value in any setting fails before anything trains
    if problem := watch_metric(select, base_cfg):
        raise ConfigError(f"--select {quote(select)}: {problem}")
    return plan


def config_mismatch(folder: Path, cfg: Any, seeds: list[int]) -> bool:
    """A finished run whose recorded config differs from this sweep's (e.g. another --set): never reuse it."""
    for seed in seeds:
        path = folder / f"seed-{seed}" / "config.json"
        if not path.exists():
            continue
        new = cfg.to_dict()
        new["train"]["seed"] = seed
        old = json.loads(path.read_text())
        if {**comparable_config(old), "workdir": None} != {**comparable_config(new), "workdir": None}:
            return True
    return False


TrainFn = Callable[..., Any]


def run_sweep(
    plan: SweepPlan,
    shard_index: int = 0,
    shard_count: int = 1,
    progress: bool = True,
    train_fn: TrainFn | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, str]:
    """Train this process's share of the grid in order; finished runs are skipped. Returns name -> status."""
    train_fn = train_fn or train
    status: dict[str, str] = {}
    mine = shard(plan.settings, shard_index, shard_count)
    for i, setting in enumerate(mine, 1):
        name = plan.name(setting)
        if is_finished(plan.folder / name, plan.seeds):
            if config_mismatch(plan.folder / name, plan.config(setting), plan.seeds):
                status[name] = (
                    "failed: a finished run of this name has another config (use --name or --output-dir)"
                )
                echo(f"[{i}/{len(mine)}] {name}: {status[name][8:]}")
                continue
            status[name] = "skipped (finished)"
            echo(f"[{i}/{len(mine)}] {name}: finished, skipped")
            continue
        echo(f"[{i}/{len(mine)}] {name}: training seeds {plan.seeds}")
        try:
            train_fn(plan.config(setting), plan.seeds, resume=True, progress=progress)
            status[name] = "trained"
        except Exception as exc:
            log.exception("sweep setting %s failed", name)
            status[name] = f"failed: {exc}"
            echo(f"[{i}/{len(mine)}] {name}: FAILED ({exc})")
    return status
