"""The provider-swap study (the paper's Appendix D limitation): one recipe, several embedding providers.

For every provider the same recipe trains LLM-ESR and LLMInit (embeddings come from the content-addressed
cache, so each provider embeds once), next to two controls: the backbone without LLM embeddings (``id``) and
random embeddings of the provider's kind of dimension (the ``random`` provider). ``run_study`` trains what a
plan lacks and writes the report (esrkit/reporting/study.py for this plan, esrkit/reporting/compare.py for a
comparison plan, esrkit/runs/compare.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esrkit.config import RunConfig, resolve_recipe
from esrkit.reporting.collect import RunRecords, folder_records
from esrkit.reporting.records import differences, merge_records, read_record_file, records_of
from esrkit.reporting.study import build_report, report_run_names, stage_times, write_report
from esrkit.runs.train import train
from esrkit.utils.io import read_json


@dataclass
class StudyPlan:
    recipe: str
    providers: list[str]
    models: list[str] = field(default_factory=lambda: ["llmesr", "llminit"])
    controls: bool = True
    seeds: list[int] = field(default_factory=lambda: [42])
    overrides: list[str] = field(default_factory=list)
    baseline_hidden: int = 128  # the paper's single-view baselines (LLM-ESR: 64 per view)
    user_provider: str = ""  # hold similar-user retrieval fixed across providers (items-only swap)
    random_dim: int | None = (
        None  # width of the random control (None: the provider's own default, ada-002's 1536)
    )
    output_dir: str = "runs"
    name: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.output_dir) / (self.name or f"study-{Path(self.recipe).stem}")

    def runs(self) -> list[tuple[str, str, list[str]]]:
        """(run name, provider or "-", overrides) for every run of the study, controls first."""
        out = []
        if self.controls:
            out.append(
                (
                    "id",
                    "-",
                    ["model.name=id", f"model.hidden={self.baseline_hidden}", "embedding.provider=none"],
                )
            )
        providers = list(self.providers) + (
            ["random"] if self.controls and "random" not in self.providers else []
        )
        for p in providers:
            for m in self.models:
                extra = [f"model.name={m}", f"embedding.provider={p}"]
                if p == "random" and self.random_dim:
                    extra.append(f"embedding.options.dim={self.random_dim}")
                if m != "llmesr":
                    extra.append(f"model.hidden={self.baseline_hidden}")
                out.append((f"{m}-{p}", p, extra))
        return out

    def run_overrides(self, extra: list[str]) -> list[str]:
        fixed = [f"embedding.user_provider={self.user_provider}"] if self.user_provider else []
        return list(self.overrides) + fixed + extra

    def config(self, run_name: str, extra: list[str]) -> RunConfig:
        cfg = resolve_recipe(self.recipe, self.run_overrides(extra))
        cfg.name = run_name
        cfg.output_dir = str(self.folder)
        return cfg

    # the runner's hooks (run_study drives any plan with these; esrkit/runs/compare.py has the other kind)
    def report_names(self, finished_only: bool, recorded: set[str]) -> list[str]:
        return report_run_names(self, finished_only=finished_only, recorded=recorded)

    def build_report(self, stages, failures, names, records) -> dict[str, Any]:
        return build_report(self, stages, failures, names, records)

    def write_report(self, report: dict[str, Any]) -> list[Path]:
        return write_report(self, report)

    def train_command(self, run_name: str, extra: list[str]) -> list[str]:
        """The ``esrkit train`` arguments that train this one run alone with the study's exact config (for
        another machine or a scheduler; its seeds come back into the report through the run folder or
        ``--record``)."""
        return train_command(self.recipe, self.run_overrides(extra), run_name, self.folder, self.seeds)


def train_command(
    recipe: str, overrides: list[str], run_name: str, folder: Path, seeds: list[int]
) -> list[str]:
    """``esrkit train`` arguments that resume one named run of a study in its folder (every kind of study)."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    return [
        "esrkit",
        "train",
        "-r",
        recipe,
        *sets,
        "--name",
        run_name,
        "--output-dir",
        str(folder),
        "--seeds",
        ",".join(map(str, seeds)),
        "--resume",
    ]


def run_study(
    plan, progress: bool = True, log=print, train_runs: bool = True, record_files: Iterable[str | Path] = ()
) -> dict[str, Any]:
    """Train what the plan lacks (resuming), then write the report. ``train_runs=False`` trains nothing and
    reports the finished runs in the study folder, e.g. while other processes are still training some of them.
    ``record_files``: published study.json files whose seeds join the report (the folder's own seeds win)."""
    # read before anything is trained or written: a bad record file fails the call at once, not after hours
    layers = [(str(f), read_record_file(Path(f))) for f in record_files]
    own = plan.folder / "study.json"
    own_report = read_json(own) if own.is_file() else {}
    if own_report:
        layers.append((str(own), records_of(own_report, own)))
    previous_stages = own_report.get("stages", {})
    if train_runs:
        check_plan_against_records(plan, layers)
    plan.folder.mkdir(parents=True, exist_ok=True)
    stages: dict[str, dict[str, float]] = {}
    failures: dict[str, str] = {}
    for run_name, detail, extra in plan.runs() if train_runs else []:
        cfg = plan.config(run_name, extra)
        log(f"== {run_name}: {cfg.model.name} ({cfg.model.backbone}), {detail}")
        t0 = time.perf_counter()
        try:
            train(cfg, plan.seeds, resume=True, progress=progress)
        except Exception as exc:  # noqa: BLE001 - one failed provider must not lose the others
            failures[run_name] = f"{type(exc).__name__}: {exc}"
            log(f"   failed: {failures[run_name]}")
            continue
        stages[run_name] = {"study_wall_s": time.perf_counter() - t0}
    recorded = {name for _, records in layers for name, seeds in records.items() if seeds}
    names = plan.report_names(not train_runs, recorded)
    records = {
        name: merge_records(
            name,
            [
                *((w, r.get(name, {})) for w, r in layers),
                (str(plan.folder / name), folder_records(plan.folder / name)),
            ],
        )
        for name in names
    }
    # every row in the report's order; runs an earlier call trained: their recorded costs, no wall time of
    # this call
    stages = {
        name: {**stages.get(name, {}), **stage_times(records[name], previous_stages.get(name, {}))}
        for name in names
        if name not in failures
    }
    report = plan.build_report(stages, failures, names, records)
    report["trained"] = train_runs
    plan.write_report(report)
    return report


def check_plan_against_records(plan, layers: list[tuple[str, dict[str, RunRecords]]]) -> None:
    """Refuse, before hours of training, to add seeds to a recorded run that was trained with other settings
    (its table row would average two experiments)."""
    for run_name, _, extra in plan.runs():
        recorded = merge_records(run_name, [(where, records.get(run_name, {})) for where, records in layers])
        if not recorded:
            continue
        diff = differences(next(iter(recorded.values())), {"config": plan.config(run_name, extra).to_dict()})
        if diff:
            raise ValueError(
                f"run {run_name!r}: its recorded seeds ({', '.join(recorded)}) were trained with other "
                f"settings (they differ in {', '.join(diff[:6])}); use another study --name"
            )
