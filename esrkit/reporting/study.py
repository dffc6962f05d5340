"""The provider-swap study's report (the paper's Appendix D limitation): one recipe, several embedding
providers.

For every provider the study (esrkit/runs/study.py) trains LLM-ESR and LLMInit next to two controls: the
backbone without LLM embeddings (``id``) and random embeddings of the provider's kind of dimension (the
``random`` provider). This module reads those runs and writes one table per protocol (rows = model x provider,
the paper's Table 1 columns, marks as in Table 1 with the backbone as the baseline), a gains table (LLM-ESR vs
its backbone and vs LLMInit per provider, with seed t-tests), a figure, and the wall time of every stage
(embedding, retrieval, training, evaluation). ``study.json`` also keeps every seed's small files
(esrkit/reporting/records.py), so the report survives its run folders and can be published and extended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from matplotlib.figure import Figure

from esrkit.evaluation.significance import seed_ttest
from esrkit.reporting.collect import (
    BACKBONE_LABELS,
    MODEL_LABELS,
    Run,
    RunRecords,
    has_finished_seed,
    run_from_records,
)
from esrkit.reporting.tables import (
    COLD_GROUP,
    Block,
    Cell,
    Row,
    Table,
    columns_for,
    mark_block,
    to_csv,
    to_markdown,
)
from esrkit.utils.io import atomic_write_json, atomic_write_text, read_json

GAIN_GROUPS = ("overall", "tail_item", "head_item", "tail_user", "head_user")


class ProviderStudy(Protocol):
    """What the report reads of a provider study (esrkit/runs/study.py: StudyPlan)."""

    recipe: str
    models: list[str]
    seeds: list[int]

    @property
    def folder(self) -> Path: ...

    def runs(self) -> list[tuple[str, str, list[str]]]: ...


def split_run_name(name: str) -> tuple[str, str]:
    """(model, provider) of a study run name ``<model>-<provider>``; the backbone control ``id`` has no
    provider."""
    model, _, provider = name.partition("-")
    return model, provider


def providers_of(run_names: list[str]) -> list[str]:
    """The providers of a study's runs, in the runs' order."""
    return list(dict.fromkeys(split_run_name(n)[1] for n in run_names if n != "id"))


def report_run_names(
    plan: ProviderStudy, finished_only: bool = False, recorded: Iterable[str] = ()
) -> list[str]:
    """The plan's runs plus every other run already in the study folder or its record (a provider studied by
    an earlier call), so ``--providers smollm2`` added to a finished study extends its report instead of
    replacing it. Order: the backbone, then each provider's models, the random control last.
    ``finished_only``: planned runs too only once a seed has finished (a report written without training)."""
    planned = [name for name, _, _ in plan.runs()]
    # (not a run another process is still training: it has no finished seed, hence no row in any table yet)
    found = (
        {d.name for d in plan.folder.iterdir() if d.is_dir() and has_finished_seed(d)}
        if plan.folder.is_dir()
        else set()
    )
    found = sorted(found | set(recorded))
    if finished_only:
        planned = [name for name in planned if name in found]
    names = planned + [n for n in found if n not in planned]
    providers = providers_of(names)
    models = list(
        dict.fromkeys(["llmesr", "llminit", *plan.models])
    )  # one order whichever call wrote the report

    def order(name: str) -> tuple[int, int, int]:
        if name == "id":
            return (0, 0, 0)
        model, provider = split_run_name(name)
        return (
            2 if provider == "random" else 1,
            providers.index(provider),
            models.index(model) if model in models else len(models),
        )

    return sorted(names, key=order)


def stage_times(records: RunRecords, previous: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds per stage, summed over seeds, from the seeds' results (embedding: the cold cost recorded in the
    embedding cache's metadata, since a cached rerun costs nothing; without that cache, e.g. a report rebuilt
    from a published record, the cold cost the previous report recorded)."""
    out: dict[str, float] = {}
    for rec in records.values():
        sec = rec.get("results", {}).get("seconds", {})
        for key in ("data_s", "embed_s", "pca_s", "retrieval_s", "train", "final_eval"):
            if sec.get(key) is not None:
                out[key] = out.get(key, 0.0) + float(sec[key])
        prov = rec.get("provenance", {}).get("fingerprints", {}).get("embeddings", {})
        for part, meta in prov.items():
            emb = Path(str(meta.get("source", ""))) / "embedding.json"
            if emb.is_file():
                info = read_json(emb).get("parts", {}).get(part, {})
                cold = info.get("cold", info)  # older metadata: the last run's own seconds
                if "seconds" in cold:
                    out[f"embed_{part}_cold_s"] = float(cold["seconds"])
    for key, value in (previous or {}).items():
        if key.startswith("embed_") and key.endswith("_cold_s"):
            out.setdefault(key, float(value))
    return out


def _row_label(run: Run) -> str:
    model = run.config.get("model", {})
    provider = run.config.get("embedding", {}).get("provider", "none")
    if model.get("name") == "id":
        return f"{BACKBONE_LABELS.get(model.get('backbone'), model.get('backbone'))} (no LLM)"
    return f"{MODEL_LABELS.get(model.get('name'), model.get('name'))} ({provider})"


def load_runs(folder: Path, names: list[str], records: dict[str, RunRecords]) -> list[Run]:
    """The named runs that have results, from their folders or the study's records."""
    runs = (run_from_records(name, folder / name, records.get(name, {})) for name in names)
    return [r for r in runs if r is not None]


def protocol_tables(
    runs: list[Run],
    study_name: str,
    columns: list,
    label: Callable[[Run], str],
    is_reference: Callable[[Run], bool],
    baseline: Callable[[list[Row]], str | None],
) -> list[Table]:
    """One table per protocol the runs were evaluated under: a single backbone block, marked against the row
    ``baseline`` picks (every kind of study reports this way)."""
    tables = []
    for protocol in ("sampled", "full"):
        rows = [
            Row(
                label(r),
                r.name,
                r.model,
                is_reference(r),
                [Cell(r.values(protocol, g, m)) for g, m in columns],
                len(r.seeds),
            )
            for r in runs
            if protocol in r.protocols()
        ]
        if not rows:
            continue
        block = Block(BACKBONE_LABELS.get(runs[0].backbone, runs[0].backbone), rows)
        mark_block(block, columns, baseline(rows))
        title = runs[0].protocol_title(protocol)
        tables.append(Table("study", study_name, protocol, title, columns, [block]))
    return tables


def build_report(
    plan: ProviderStudy,
    stages: dict[str, dict[str, float]],
    failures: dict[str, str],
    names: list[str],
    records: dict[str, RunRecords],
) -> dict[str, Any]:
    runs = load_runs(plan.folder, names, records)
    columns = columns_for(runs)
    tables = protocol_tables(
        runs,
        plan.folder.name,
        columns,
        label=_row_label,
        is_reference=lambda r: r.model != "llmesr",
        baseline=lambda rows: next((row.label for row in rows if row.run == "id"), None),
    )
    gains = gains_table(runs)
    return {
        "recipe": plan.recipe,
        "providers": providers_of([r.name for r in runs]),
        "models": plan.models,
        "seeds": plan.seeds,
        "tables": tables,
        "gains": gains,
        "stages": stages,
        "failures": failures,
        "runs": [r.name for r in runs],
        "records": {r.name: records[r.name] for r in runs},
    }


def gains_table(runs: list[Run]) -> list[dict[str, Any]]:
    """LLM-ESR vs the backbone and vs LLMInit with the same provider: relative gain and seed t-test p."""
    by_name = {r.name: r for r in runs}
    out = []
    for r in runs:
        if r.model != "llmesr":
            continue
        provider = split_run_name(r.name)[1]
        for ref_name in ("id", f"llminit-{provider}"):
            ref = by_name.get(ref_name)
            if ref is None:
                continue
            for protocol in ("sampled", "full"):
                if protocol not in r.protocols() or protocol not in ref.protocols():
                    continue
                for group in (*GAIN_GROUPS, COLD_GROUP):  # a group a run does not report is skipped
                    for metric in ("ndcg@10", "hr@10"):
                        a, b = r.values(protocol, group, metric), ref.values(protocol, group, metric)
                        if not a or not b:
                            continue
                        ma, mb = sum(a) / len(a), sum(b) / len(b)
                        out.append(
                            {
                                "provider": provider,
                                "versus": ref_name,
                                "protocol": protocol,
                                "group": group,
                                "metric": metric,
                                "llmesr": ma,
                                "reference": mb,
                                "gain_pct": (ma - mb) / mb * 100 if mb else float("nan"),
                                "p_value": seed_ttest(a, b),
                                "seeds": [len(a), len(b)],
                            }
                        )
    return out


def gains_markdown(gains: list[dict[str, Any]]) -> str:
    if not gains:  # say why, rather than print a header over nothing
        return (
            "No gains to show: each LLM-ESR row needs the backbone (run `id`) or LLMInit with the same "
            "provider "
            "in the study to be compared with.\n"
        )
    cold = any(g["group"] == COLD_GROUP for g in gains)  # the cold-item protocol: one more column
    header = (
        "| provider | versus | protocol | N@10 overall | N@10 tail item | N@10 tail user | H@10 overall |"
    )
    lines = [
        header + (" N@10 cold item |" if cold else ""),
        "| --- | --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if cold else ""),
    ]
    keys = list(dict.fromkeys((g["provider"], g["versus"], g["protocol"]) for g in gains))

    def cell(p, v, pr, group, metric):
        g = next(
            (
                g
                for g in gains
                if (g["provider"], g["versus"], g["protocol"], g["group"], g["metric"])
                == (p, v, pr, group, metric)
            ),
            None,
        )
        if g is None:
            return "–"
        if g["gain_pct"] != g["gain_pct"]:  # the reference scored 0: no relative gain exists
            return f"{g['llmesr']:.4f} vs 0"
        p_txt = "" if g["p_value"] != g["p_value"] else f" (p={g['p_value']:.2g})"
        return f"{g['gain_pct']:+.1f}%{p_txt}"

    for p, v, pr in keys:
        lines.append(
            f"| {p} | {v} | {pr} | "
            + " | ".join(
                [
                    cell(p, v, pr, "overall", "ndcg@10"),
                    cell(p, v, pr, "tail_item", "ndcg@10"),
                    cell(p, v, pr, "tail_user", "ndcg@10"),
                    cell(p, v, pr, "overall", "hr@10"),
                ]
                + ([cell(p, v, pr, COLD_GROUP, "ndcg@10")] if cold else [])
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def stages_markdown(stages: dict[str, dict[str, float]]) -> str:
    cols = ["embed_items_cold_s", "embed_users_cold_s", "retrieval_s", "train", "final_eval", "study_wall_s"]
    lines = ["| run | " + " | ".join(cols) + " |", "| --- | " + " | ".join(["---:"] * len(cols)) + " |"]
    for name, st in stages.items():
        lines.append(f"| {name} | " + " | ".join(f"{st[c]:.1f}" if c in st else "–" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def diverged_seeds(records: dict[str, RunRecords]) -> list[str]:
    """One line per seed that stopped on a non-finite loss (results.json ``diverged_epoch``)."""
    return [
        f"- {name} seed {seed}: diverged at epoch {rec['results']['diverged_epoch']}, best epoch "
        f"{rec['results'].get('best_epoch')}"
        for name, seeds in records.items()
        for seed, rec in seeds.items()
        if rec.get("results", {}).get("diverged_epoch") is not None
    ]


def write_report(plan: ProviderStudy, report: dict[str, Any]) -> list[Path]:
    folder = plan.folder
    present = {
        *report["runs"],
        *report["providers"],
    }  # the backbone control is run "id"; random is a provider
    controls = [
        text
        for name, text in (("id", "the backbone without LLM embeddings"), ("random", "random embeddings"))
        if name in present
    ]
    md = [
        f"# Provider study: recipe `{plan.recipe}`",
        "",
        (
            f"Seeds {plan.seeds} trained by this call"
            if report.get("trained", True)
            else "Nothing trained by this call (--report-only)"
        )
        + "; every row is the mean over all the seeds its run folder and the study's record hold "
        "(study.csv lists them). Providers: "
        f"{', '.join(p for p in report['providers'] if p != 'random') or 'none'}; "
        f"controls: {' and '.join(controls) or 'none'}. "
        "Rows are marked as in the paper's Table 1 with the backbone as the baseline.",
        "",
    ]
    for t in report["tables"]:
        md.append(to_markdown(t, baseline=next((r.label for r in t.blocks[0].rows if r.run == "id"), None)))
    md += [
        "## LLM-ESR gains",
        "",
        gains_markdown(report["gains"]),
        "## Wall time per stage (seconds, summed over seeds)",
        "",
        stages_markdown(report["stages"]),
    ]
    diverged = diverged_seeds(report.get("records", {}))
    if diverged:
        md += (
            [
                "## Diverged training",
                "",
                "These seeds' training loss became NaN or infinite; training stopped "
                "there and the row uses the best validated epoch before it:",
                "",
            ]
            + diverged
            + [""]
        )
    if report["failures"]:
        md += ["## Failed runs", ""] + [f"- {k}: {v}" for k, v in report["failures"].items()]
    paths = [folder / "study.md", folder / "study.csv", folder / "study.json"]
    atomic_write_text(paths[0], "\n".join(md) + "\n")
    atomic_write_text(paths[1], to_csv(report["tables"]))
    atomic_write_json(paths[2], {k: v for k, v in report.items() if k != "tables"})
    with contextlib.suppress(Exception):  # a figure problem must not lose the tables
        paths.append(figure_study(report, folder / "study.png"))
    return paths


def figure_study(report: dict[str, Any], path: Path) -> Path:
    tables = report["tables"]
    fig = Figure(figsize=(6 * len(tables), 4.2))
    groups = [t for t in GAIN_GROUPS]
    for i, table in enumerate(tables):
        ax = fig.add_subplot(1, len(tables), i + 1)
        rows = table.blocks[0].rows
        width = 0.8 / max(len(rows), 1)
        col = {g: j for j, (g, m) in enumerate(table.columns) if m == "ndcg@10"}
        for k, row in enumerate(rows):
            heights = [row.cells[col[g]].mean if not row.cells[col[g]].missing else 0.0 for g in groups]
            ax.bar([x + k * width for x in range(len(groups))], heights, width, label=row.label)
        ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(groups))])
        ax.set_xticklabels([g.replace("_", " ") for g in groups], fontsize=8)
        ax.set_ylabel("N@10")
        ax.set_title(f"{table.protocol}: {table.title}", fontsize=9)
    if tables:  # one legend under both panels, where it cannot cover a bar however many rows there are
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.06 * ((len(labels) + 4) // 5), 1, 1))
    fig.savefig(path, dpi=120)
    return path
