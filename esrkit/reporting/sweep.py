"""Hyper-parameter sweeps (the paper's Figure 3: alpha and N), run sequentially, resumable and shardable.

* ``expand_grid``: ``each`` = one factor at a time around the recipe (every other key stays at the recipe value,
  as in Figure 3); ``product`` = the full grid. Every setting assigns *all* grid keys, so a setting is named
  ``<prefix>-alpha=0.5-n_similar=10`` in both modes: the recipe's own point is run once, and a ``product`` sweep
  reuses the runs of an ``each`` sweep.
* ``--shard i/n``: process ``i`` (0-based) of ``n`` takes settings ``i, i+n, i+2n, ...``; each process trains into
  the same folder and the last one to finish writes the complete ``sweep.json`` (or rerun with ``--report-only``).
* the best setting is chosen on **validation** N@10 only (mean over seeds, the model-selection protocol);
  test numbers are reported next to it, never used to choose.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esrkit.config import ConfigError, parse_override, resolve_recipe, watch_metric
from esrkit.reporting.collect import load_run
from esrkit.reporting.tables import TABLE_GROUPS
from esrkit.utils.errors import quote
from esrkit.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
MODES = ("each", "product")


# ---------------------------------------------------------------------------------------------- grid
def parse_grid(specs: list[str] | tuple[str, ...]) -> dict[str, list[Any]]:
    """``["model.alpha=1,0.5", "retrieval.n_similar=2,6"]`` -> {"model.alpha": [1, 0.5], ...} (TOML values)."""
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
    """Give a grid value the config's type (``1`` for a float field is ``1.0``) so equal settings compare equal."""
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


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a TOML basic string


def short_keys(keys: list[str]) -> dict[str, str]:
    """``model.alpha`` -> ``alpha`` unless two keys share their last part."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


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


def make_plan(recipe: str, grid: dict[str, list[Any]], mode: str = "each", seeds: list[int] | None = None,
              sets: list[str] | tuple[str, ...] = (), output_dir: str | None = None, prefix: str | None = None,
              workdir: str | None = None, select: str = "ndcg@10") -> SweepPlan:
    """Resolve the recipe once: the base values of the grid keys, the seeds and the sweep folder."""
    base_cfg = resolve_recipe(recipe, list(sets))
    tree = base_cfg.to_dict()
    base = {k: get_path(tree, k) for k in grid}
    prefix = prefix or base_cfg.name
    folder = Path(output_dir) if output_dir else Path(base_cfg.output_dir) / f"sweep-{prefix}"
    plan = SweepPlan(recipe, prefix, folder, grid, base, mode, seeds or [base_cfg.train.seed], list(sets), workdir,
                     select)
    for setting in plan.settings:  # also validates the mode
        plan.config(setting)  # a bad key or value in any setting fails before anything trains
    if problem := watch_metric(select, base_cfg):
        raise ConfigError(f"--select {quote(select)}: {problem}")
    return plan


def is_finished(folder: Path, seeds: list[int]) -> bool:
    return (folder / "summary.json").exists() and all((folder / f"seed-{s}" / "results.json").exists() for s in seeds)


def config_mismatch(folder: Path, cfg: Any, seeds: list[int]) -> bool:
    """A finished run whose recorded config differs from this sweep's (e.g. another --set): never reuse it."""
    from esrkit.training.rundir import _strip_volatile

    for seed in seeds:
        path = folder / f"seed-{seed}" / "config.json"
        if not path.exists():
            continue
        new = cfg.to_dict()
        new["train"]["seed"] = seed
        old = json.loads(path.read_text())
        if {**_strip_volatile(old), "workdir": None} != {**_strip_volatile(new), "workdir": None}:
            return True
    return False


TrainFn = Callable[..., Any]


def run_sweep(plan: SweepPlan, shard_index: int = 0, shard_count: int = 1, progress: bool = True,
              train_fn: TrainFn | None = None, echo: Callable[[str], None] = print) -> dict[str, str]:
    """Train this process's share of the grid in order; finished runs are skipped. Returns name -> status."""
    if train_fn is None:
        from esrkit.training.pipeline import train as train_fn
    status: dict[str, str] = {}
    mine = shard(plan.settings, shard_index, shard_count)
    for i, setting in enumerate(mine, 1):
        name = plan.name(setting)
        if is_finished(plan.folder / name, plan.seeds):
            if config_mismatch(plan.folder / name, plan.config(setting), plan.seeds):
                status[name] = "failed: a finished run of this name has another config (use --name or --output-dir)"
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


# ---------------------------------------------------------------------------------------------- results
def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std}


def setting_entry(plan: SweepPlan, setting: dict[str, Any], failures: dict[str, str] | None = None) -> dict[str, Any]:
    """Validation score (for selection) and test metrics (for reading) of one setting, or its status."""
    name = plan.name(setting)
    entry: dict[str, Any] = {"name": name, "params": setting, "status": "pending"}
    folder = plan.folder / name
    if failures and name in failures:
        entry["status"] = failures[name]
    if not is_finished(folder, plan.seeds):
        return entry
    run = load_run(folder)
    run.results = {s: r for s, r in run.results.items() if s in plan.seeds}
    protocol = run.config.get("eval", {}).get("valid_protocol", "sampled")
    valid = run.values(protocol, "overall", plan.select, split="valid")
    test: dict[str, Any] = {}
    for p in run.protocols("test"):
        test[p] = {}
        for g in TABLE_GROUPS:
            metrics = run.results[run.seeds[0]]["test"][p].get(g, {})
            test[p][g] = {m: _stats(vals) for m in metrics if m != "users" and (vals := run.values(p, g, m))}
    entry.update(status="done", seeds=run.seeds, valid={"protocol": protocol, "metric": plan.select,
                                                        **(_stats(valid) if valid else {"mean": None})}, test=test)
    return entry


def select_best(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest validation mean among finished settings; ties go to the earlier setting (grid order)."""
    best = None
    for e in entries:
        score = e.get("valid", {}).get("mean") if e.get("status") == "done" else None
        if score is None or not math.isfinite(score):
            continue
        if best is None or score > best["valid"]["mean"]:
            best = e
    return best


def gather(plan: SweepPlan, failures: dict[str, str] | None = None) -> dict[str, Any]:
    entries = [setting_entry(plan, s, failures) for s in plan.settings]
    best = select_best(entries)
    return {
        "recipe": plan.recipe, "prefix": plan.prefix, "mode": plan.mode, "grid": plan.grid, "base": plan.base,
        "seeds": plan.seeds, "sets": plan.sets,
        "select": {"split": "valid", "metric": plan.select,
                   "protocol": best["valid"]["protocol"] if best else "sampled",
                   "rule": "highest mean validation score over seeds; test numbers are never used"},
        "complete": all(e["status"] == "done" for e in entries),
        "settings": entries,
        "best": None if best is None else {"name": best["name"], "params": best["params"]},
    }


def _cell(entry: dict[str, Any], protocol: str, metric: str) -> str:
    stats = entry.get("test", {}).get(protocol, {}).get("overall", {}).get(metric)
    return "–" if not stats else f"{stats['mean']:.4f}"


def sweep_markdown(sweep: dict[str, Any]) -> str:
    """One row per setting: validation score (selection) and test Overall H@10 / N@10 under both protocols."""
    sel = sweep["select"]
    metric = sel["metric"]
    keys = list(sweep["grid"])
    names = short_keys(keys)
    protocols = [p for p in ("sampled", "full") if any(p in e.get("test", {}) for e in sweep["settings"])]
    head = [names[k] for k in keys] + [f"valid {metric} ({sel['protocol']})"]
    head += [f"test {p} {m}" for p in protocols for m in ("hr@10", "ndcg@10")] + ["status"]
    lines = [f"### Sweep {sweep['prefix']} ({sweep['mode']}, seeds {sweep['seeds']})", "",
             "| " + " | ".join(head) + " |", "|" + "|".join([" ---: "] * (len(head) - 1) + [" --- "]) + "|"]
    best = (sweep.get("best") or {}).get("name")
    for e in sweep["settings"]:
        v = e.get("valid", {}).get("mean")
        score = "–" if v is None else f"{v:.4f}"
        if e["name"] == best:
            score = f"**{score}**"
        row = [format_value(e["params"][k]) for k in keys] + [score]
        row += [_cell(e, p, m) for p in protocols for m in ("hr@10", "ndcg@10")] + [e["status"]]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", (f"Selected (**bold**): {best or 'none yet'}, on validation {metric} under the {sel['protocol']} "
                   "protocol only. Test columns: sampled = paper protocol (target + sampled negatives), full = full "
                   "ranking over all items.")]
    if not sweep["complete"]:
        pending = [e["name"] for e in sweep["settings"] if e["status"] != "done"]
        lines.append(f"Not complete: {len(pending)} setting(s) pending or failed.")
    return "\n".join(lines) + "\n"


def write_sweep(plan: SweepPlan, failures: dict[str, str] | None = None, figure: bool = True) -> dict[str, Any]:
    """``sweep.json``, ``sweep.md`` and (when any setting finished) ``figure3.png`` in the sweep folder."""
    sweep = gather(plan, failures)
    plan.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.folder / "sweep.json", sweep)
    atomic_write_text(plan.folder / "sweep.md", sweep_markdown(sweep))
    if figure and any(e["status"] == "done" for e in sweep["settings"]):
        from esrkit.reporting.figures import figure_sweep

        figure_sweep(sweep, plan.folder / "figure3.png")
    return sweep


def load_sweep(folder: str | Path) -> dict[str, Any]:
    path = Path(folder)
    path = path if path.name == "sweep.json" else path / "sweep.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `esrkit sweep` (or --report-only) first")
    return json.loads(path.read_text())
