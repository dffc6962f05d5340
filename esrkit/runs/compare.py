"""A comparison study: named runs, each a recipe plus overrides, trained and reported side by side.

The plan is a TOML file (``recipes/studies/*.toml``, see esrkit/reporting/compare.py for the format and the
report); ``esrkit study compare PLAN`` trains its runs with ``run_study`` (esrkit/runs/study.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esrkit.config import ConfigError, RunConfig, resolve_recipe
from esrkit.reporting import compare as comparison_report
from esrkit.reporting.collect import RunRecords
from esrkit.resources import find_resource, load_toml
from esrkit.runs.study import train_command

_PLAN_KEYS = {"description", "recipe", "seeds", "set", "references", "runs", "name"}
_RUN_KEYS = {"recipe", "set", "label"}


@dataclass
class ComparisonRun:
    name: str
    recipe: str
    overrides: list[str]
    label: str


@dataclass
class ComparisonPlan:
    recipe: str
    runs_: list[ComparisonRun]
    seeds: list[int] = field(default_factory=lambda: [42])
    overrides: list[str] = field(default_factory=list)  # every run, before its own
    references: list[str] = field(default_factory=list)
    description: str = ""
    output_dir: str = "runs"
    name: str = ""
    source: str = ""  # the plan file

    @property
    def folder(self) -> Path:
        return Path(self.output_dir) / (self.name or f"study-{Path(self.source).stem or 'compare'}")

    def runs(self) -> list[tuple[str, str, list[str]]]:
        """(run name, label, overrides): the shape the study runner iterates over."""
        return [(r.name, r.label, list(r.overrides)) for r in self.runs_]

    def _run(self, name: str) -> ComparisonRun:
        return next(r for r in self.runs_ if r.name == name)

    def run_overrides(self, extra: list[str]) -> list[str]:
        return list(self.overrides) + list(extra)

    def config(self, run_name: str, extra: list[str]) -> RunConfig:
        cfg = resolve_recipe(self._run(run_name).recipe, self.run_overrides(extra))
        cfg.name = run_name
        cfg.output_dir = str(self.folder)
        return cfg

    def train_command(self, run_name: str, extra: list[str]) -> list[str]:
        run = self._run(run_name)
        return train_command(run.recipe, self.run_overrides(extra), run_name, self.folder, self.seeds)

    # -------------------------------------------------------------- the runner's hooks (esrkit/runs/study.py)
    def report_names(self, finished_only: bool, recorded: set[str]) -> list[str]:
        return comparison_report.report_names(self, finished_only, recorded)

    def build_report(
        self,
        stages: dict[str, dict[str, float]],
        failures: dict[str, str],
        names: list[str],
        records: dict[str, RunRecords],
    ) -> dict[str, Any]:
        return comparison_report.build_report(self, stages, failures, names, records)

    def write_report(self, report: dict[str, Any]) -> list[Path]:
        return comparison_report.write_report(self, report)


def load_plan(path: str | Path, output_dir: str = "runs", name: str = "") -> ComparisonPlan:
    """Read and check a plan file; every run's config is resolved here, so a bad key fails before training."""
    file = find_resource("study", str(path))
    tree = load_toml(file)
    unknown = set(tree) - _PLAN_KEYS
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_PLAN_KEYS)}")
    runs_tree = tree.get("runs")
    if not isinstance(runs_tree, dict) or not runs_tree:
        raise ConfigError(f"{file}: needs at least one [runs.NAME] table")
    recipe = tree.get("recipe", "")
    runs = []
    for run_name, spec in runs_tree.items():
        if not isinstance(spec, dict) or set(spec) - _RUN_KEYS:
            raise ConfigError(f"{file}: runs.{run_name}: allowed keys are {sorted(_RUN_KEYS)}")
        run_recipe = spec.get("recipe", recipe)
        if not run_recipe:
            raise ConfigError(f"{file}: runs.{run_name} has no recipe (set one at the top or in the run)")
        runs.append(
            ComparisonRun(run_name, run_recipe, list(spec.get("set", [])), spec.get("label", run_name))
        )
    references = list(tree.get("references", []))
    missing = [r for r in references if r not in runs_tree]
    if missing:
        raise ConfigError(f"{file}: references {missing} are not runs of the plan ({sorted(runs_tree)})")
    plan = ComparisonPlan(
        recipe=recipe,
        runs_=runs,
        seeds=[int(s) for s in tree.get("seeds", [42])],
        overrides=list(tree.get("set", [])),
        references=references,
        description=tree.get("description", ""),
        output_dir=output_dir,
        name=name or tree.get("name", ""),
        source=str(file),
    )
    for run_name, _, extra in plan.runs():
        try:
            plan.config(run_name, extra)
        except (ConfigError, KeyError, FileNotFoundError) as exc:
            raise ConfigError(f"{file}: runs.{run_name}: {exc}") from None
    return plan
