"""A comparison study's report: named runs, each a recipe plus overrides, side by side with seed t-tests.

The plan is a TOML file (``recipes/studies/*.toml``)::

    description = "..."
    recipe = "beauty5-sasrec"            # every run's default recipe
    seeds = [42, 43, 44]
    set = ["eval.valid_protocol=full"]   # overrides of every run
    references = ["sasrec-ce"]           # every other run's gains are computed against these

    [runs.sasrec-ce]
    label = "SASRec-CE"
    set = ["model.name=id", "model.loss=ce"]

    [runs.best]
    recipe = "beauty5-best"              # a run may start from its own recipe

The report (``study.md``, ``study.csv``, ``study.json``, ``study.png``) has one table per protocol (every
group), the gains of every run over each reference with two-sided seed t-tests, and the stopping rule with
every seed's best and last epoch, because early stopping changes conclusions. ``study.json`` keeps every
seed's small files, exactly like the provider study's, so ``--record`` rebuilds or extends a published report
without run folders.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol

from esrkit.evaluation.significance import seed_ttest
from esrkit.reporting.collect import Run, RunRecords, has_finished_seed
from esrkit.reporting.study import (
    GAIN_GROUPS,
    diverged_seeds,
    figure_study,
    load_runs,
    protocol_tables,
    stages_markdown,
)
from esrkit.reporting.tables import default_columns, to_csv, to_markdown
from esrkit.resources import display_path
from esrkit.utils.io import atomic_write_json, atomic_write_text


class Comparison(Protocol):
    """What the report reads of a comparison plan (esrkit/runs/compare.py: ComparisonPlan)."""

    recipe: str
    seeds: list[int]
    references: list[str]
    description: str
    source: str

    @property
    def folder(self) -> Path: ...

    def runs(self) -> list[tuple[str, str, list[str]]]: ...


def report_names(plan: Comparison, finished_only: bool, recorded: set[str]) -> list[str]:
    """The plan's runs, then any other run with a finished seed in the study folder or its record."""
    planned = [name for name, _, _ in plan.runs()]
    found = (
        {d.name for d in plan.folder.iterdir() if d.is_dir() and has_finished_seed(d)}
        if plan.folder.is_dir()
        else set()
    )
    found |= set(recorded)
    if finished_only:
        planned = [n for n in planned if n in found]
    return planned + sorted(n for n in found if n not in planned)


def build_report(
    plan: Comparison,
    stages: dict[str, dict[str, float]],
    failures: dict[str, str],
    names: list[str],
    records: dict[str, RunRecords],
) -> dict[str, Any]:
    """Tables per protocol, gains over the references, the stopping rule of every run, stage times."""
    runs = load_runs(plan.folder, names, records)
    labels = {name: label for name, label, _ in plan.runs()}
    baseline = next((labels.get(ref, ref) for ref in plan.references if ref in {r.name for r in runs}), None)
    tables = protocol_tables(
        runs,
        plan.folder.name,
        default_columns(),
        label=lambda r: labels.get(r.name, r.name),
        is_reference=lambda r: r.name in plan.references,
        baseline=lambda rows: baseline,
    )
    return {
        "plan": display_path(plan.source) if plan.source else "",
        "recipe": plan.recipe,
        "description": plan.description,
        "seeds": plan.seeds,
        "references": plan.references,
        "labels": labels,
        "tables": tables,
        "gains": comparison_gains(runs, plan.references),
        "stopping": stopping_rows(runs),
        "stages": stages,
        "failures": failures,
        "runs": [r.name for r in runs],
        "records": {r.name: records[r.name] for r in runs},
    }


def write_report(plan: Comparison, report: dict[str, Any]) -> list[Path]:
    """study.md, study.csv, study.json and (when it draws) study.png in the study folder."""
    md = [f"# Comparison study: `{display_path(plan.source) if plan.source else plan.recipe}`", ""]
    if plan.description:
        md += [plan.description, ""]
    md += [
        (
            f"Seeds {plan.seeds} trained by this call"
            if report.get("trained", True)
            else "Nothing trained by this call (--report-only)"
        )
        + "; every row is the mean over all the seeds its run folder and the study's record hold. "
        f"References for the marks and gains: {', '.join(plan.references) or 'none'}.",
        "",
    ]
    for t in report["tables"]:
        base = next((r.label for r in t.blocks[0].rows if r.run in plan.references), None)
        md.append(to_markdown(t, baseline=base))
    md += [
        "## Gains over the references",
        "",
        comparison_gains_markdown(report["gains"], report["labels"]),
        "## Stopping",
        "",
        stopping_markdown(report["stopping"], report["labels"]),
        "## Wall time per stage (seconds, summed over seeds)",
        "",
        stages_markdown(report["stages"]),
    ]
    diverged = diverged_seeds(report.get("records", {}))
    if diverged:
        md += ["## Diverged training", ""] + diverged + [""]
    if report["failures"]:
        md += ["## Failed runs", ""] + [f"- {k}: {v}" for k, v in report["failures"].items()]
    folder = plan.folder
    paths = [folder / "study.md", folder / "study.csv", folder / "study.json"]
    atomic_write_text(paths[0], "\n".join(md) + "\n")
    atomic_write_text(paths[1], to_csv(report["tables"]))
    atomic_write_json(paths[2], {k: v for k, v in report.items() if k != "tables"})
    with contextlib.suppress(Exception):  # a figure problem must not lose the tables
        paths.append(figure_study(report, folder / "study.png"))
    return paths


def comparison_gains(runs: list[Run], references: list[str]) -> list[dict[str, Any]]:
    """Every run against every reference: relative gain of the means and the seed t-test p.

    Two references are compared once, the later one against the earlier (the reverse row says nothing new)."""
    by_name = {r.name: r for r in runs}
    out = []
    for r in runs:
        for ref_name in references:
            ref = by_name.get(ref_name)
            if ref is None or ref is r or _is_earlier_reference(r.name, ref_name, references):
                continue
            for protocol in ("sampled", "full"):
                if protocol not in r.protocols() or protocol not in ref.protocols():
                    continue
                for group in GAIN_GROUPS:
                    for metric in ("ndcg@10", "hr@10"):
                        a, b = r.values(protocol, group, metric), ref.values(protocol, group, metric)
                        if not a or not b:
                            continue
                        ma, mb = sum(a) / len(a), sum(b) / len(b)
                        out.append(
                            {
                                "run": r.name,
                                "versus": ref_name,
                                "protocol": protocol,
                                "group": group,
                                "metric": metric,
                                "value": ma,
                                "reference": mb,
                                "gain_pct": (ma - mb) / mb * 100 if mb else float("nan"),
                                "p_value": seed_ttest(a, b),
                                "seeds": [len(a), len(b)],
                            }
                        )
    return out


def _is_earlier_reference(run: str, reference: str, references: list[str]) -> bool:
    return run in references and references.index(run) < references.index(reference)


def comparison_gains_markdown(gains: list[dict[str, Any]], labels: dict[str, str]) -> str:
    if not gains:
        return "No gains to show: the plan names no reference run with finished seeds.\n"
    cols = [
        ("overall", "ndcg@10"),
        ("tail_item", "ndcg@10"),
        ("head_item", "ndcg@10"),
        ("tail_user", "ndcg@10"),
        ("overall", "hr@10"),
    ]
    lines = [
        "| run | versus | protocol | N@10 overall | N@10 tail item | N@10 head item | N@10 tail user | "
        "H@10 overall |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    index = {(g["run"], g["versus"], g["protocol"], g["group"], g["metric"]): g for g in gains}
    for run, versus, protocol in dict.fromkeys((g["run"], g["versus"], g["protocol"]) for g in gains):
        cells = []
        for group, metric in cols:
            g = index.get((run, versus, protocol, group, metric))
            if g is None:
                cells.append("–")
            elif g["gain_pct"] != g["gain_pct"]:
                cells.append(f"{g['value']:.4f} vs 0")
            else:
                p = "" if g["p_value"] != g["p_value"] else f" (p={g['p_value']:.2g})"
                cells.append(f"{g['gain_pct']:+.1f}%{p}")
        lines.append(
            f"| {labels.get(run, run)} | {labels.get(versus, versus)} | {protocol} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def stopping_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Per run: what selected the epoch (protocol, metric, patience, epoch cap) and each seed's best/last
    epoch."""
    out = []
    for r in runs:
        train, ev = r.config.get("train", {}), r.config.get("eval", {})
        seeds = {
            s: {
                "best_epoch": res.get("best_epoch"),
                "epochs_run": res.get("epochs_run"),
                "best_valid_score": res.get("best_valid_score"),
            }
            for s, res in sorted(r.results.items())
        }
        out.append(
            {
                "run": r.name,
                "watch": f"{ev.get('valid_protocol', 'sampled')} {train.get('watch', 'ndcg@10')}",
                "patience": train.get("patience"),
                "max_epochs": train.get("epochs"),
                "seeds": seeds,
            }
        )
    return out


def stopping_markdown(rows: list[dict[str, Any]], labels: dict[str, str]) -> str:
    lines = [
        "Epochs are selected on the validation split only; training stops after `patience` epochs without a "
        "strictly better validation score, or at the cap. Per seed: best epoch / epochs run (0-based best).",
        "",
        "| run | selected on (validation) | patience | cap | seeds: best / run |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for row in rows:
        seeds = ", ".join(f"{s}: {v['best_epoch']} / {v['epochs_run']}" for s, v in row["seeds"].items())
        lines.append(
            f"| {labels.get(row['run'], row['run'])} | {row['watch']} | {row['patience']} | "
            f"{row['max_epochs']} | {seeds} |"
        )
    return "\n".join(lines) + "\n"
