"""A sweep's results (the paper's Figure 3: alpha and N): every setting's validation and test numbers, read
from its run folder, the best setting chosen on **validation** only (mean over seeds, the model-selection
protocol; test numbers are reported next to it, never used to choose), ``sweep.json``, ``sweep.md`` and
``figure3.png``. The grid, its settings and their training are esrkit/runs/sweep.py.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Protocol

from esrkit.reporting.collect import read_run
from esrkit.reporting.figures import figure_sweep
from esrkit.reporting.tables import TABLE_GROUPS, format_value
from esrkit.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


class SweepPlan(Protocol):
    """What the report reads of a sweep (esrkit/runs/sweep.py builds it): the grid, its settings and names,
    where their runs are, the seeds and the validation metric that selects."""

    recipe: str
    prefix: str
    folder: Path
    grid: dict[str, list[Any]]
    base: dict[str, Any]
    mode: str
    seeds: list[int]
    sets: list[str]
    select: str

    @property
    def settings(self) -> list[dict[str, Any]]: ...

    def name(self, setting: dict[str, Any]) -> str: ...


def short_keys(keys: list[str]) -> dict[str, str]:
    """``model.alpha`` -> ``alpha`` unless two keys share their last part."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def is_finished(folder: Path, seeds: list[int]) -> bool:
    return (folder / "summary.json").exists() and all(
        (folder / f"seed-{s}" / "results.json").exists() for s in seeds
    )


# ---------------------------------------------------------------------------------------------- results
def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std}


def setting_entry(
    plan: SweepPlan, setting: dict[str, Any], failures: dict[str, str] | None = None
) -> dict[str, Any]:
    """Validation score (for selection) and test metrics (for reading) of one setting, or its status."""
    name = plan.name(setting)
    entry: dict[str, Any] = {"name": name, "params": setting, "status": "pending"}
    folder = plan.folder / name
    if failures and name in failures:
        entry["status"] = failures[name]
    if not is_finished(folder, plan.seeds):
        return entry
    run = read_run(folder)
    run.results = {s: r for s, r in run.results.items() if s in plan.seeds}
    protocol = run.config.get("eval", {}).get("valid_protocol", "sampled")
    valid = run.values(protocol, "overall", plan.select, split="valid")
    test: dict[str, Any] = {}
    for p in run.protocols("test"):
        test[p] = {}
        for g in TABLE_GROUPS:
            metrics = run.results[run.seeds[0]]["test"][p].get(g, {})
            test[p][g] = {m: _stats(vals) for m in metrics if m != "users" and (vals := run.values(p, g, m))}
    entry.update(
        status="done",
        seeds=run.seeds,
        valid={"protocol": protocol, "metric": plan.select, **(_stats(valid) if valid else {"mean": None})},
        test=test,
    )
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
        "recipe": plan.recipe,
        "prefix": plan.prefix,
        "mode": plan.mode,
        "grid": plan.grid,
        "base": plan.base,
        "seeds": plan.seeds,
        "sets": plan.sets,
        "select": {
            "split": "valid",
            "metric": plan.select,
            "protocol": best["valid"]["protocol"] if best else "sampled",
            "rule": "highest mean validation score over seeds; test numbers are never used",
        },
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
    lines = [
        f"### Sweep {sweep['prefix']} ({sweep['mode']}, seeds {sweep['seeds']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join([" ---: "] * (len(head) - 1) + [" --- "]) + "|",
    ]
    best = (sweep.get("best") or {}).get("name")
    for e in sweep["settings"]:
        v = e.get("valid", {}).get("mean")
        score = "–" if v is None else f"{v:.4f}"
        if e["name"] == best:
            score = f"**{score}**"
        row = [format_value(e["params"][k]) for k in keys] + [score]
        row += [_cell(e, p, m) for p in protocols for m in ("hr@10", "ndcg@10")] + [e["status"]]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        (
            f"Selected (**bold**): {best or 'none yet'}, on validation {metric} under the {sel['protocol']} "
            "protocol only. Test columns: sampled = paper protocol (target + sampled negatives), full = full "
            "ranking over all items."
        ),
    ]
    if not sweep["complete"]:
        pending = [e["name"] for e in sweep["settings"] if e["status"] != "done"]
        lines.append(f"Not complete: {len(pending)} setting(s) pending or failed.")
    return "\n".join(lines) + "\n"


def write_sweep(
    plan: SweepPlan, failures: dict[str, str] | None = None, figure: bool = True
) -> dict[str, Any]:
    """``sweep.json``, ``sweep.md`` and (when any setting finished) ``figure3.png`` in the sweep folder."""
    sweep = gather(plan, failures)
    plan.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.folder / "sweep.json", sweep)
    atomic_write_text(plan.folder / "sweep.md", sweep_markdown(sweep))
    if figure and any(e["status"] == "done" for e in sweep["settings"]):
        figure_sweep(sweep, plan.folder / "figure3.png")
    return sweep


def load_sweep(folder: str | Path) -> dict[str, Any]:
    path = Path(folder)
    path = path if path.name == "sweep.json" else path / "sweep.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `esrkit sweep` (or --report-only) first")
    return json.loads(path.read_text())
