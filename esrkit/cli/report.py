"""``esrkit report``: the paper's tables (and figures) from run directories."""

from __future__ import annotations

from pathlib import Path

import click

FIGURE_NAMES = ("fig1", "fig3", "fig4", "fig5")


def _protocols(choice: str) -> tuple[str, ...]:
    return ("sampled", "full") if choice == "both" else (choice,)


def _sweeps(paths: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        candidates = [p / "sweep.json"] if (p / "sweep.json").exists() else sorted(p.glob("*/sweep.json"))
        found += [c for c in candidates if c not in found]
    return found


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--baseline", help="Row (label or run name) to star against; default: the best non-LLM-ESR row."
)
@click.option("--protocol", type=click.Choice(["sampled", "full", "both"]), default="both")
@click.option(
    "--layout",
    type=click.Choice(["table1", "table2"]),
    default="table1",
    help="table1: models x long-tail groups; table2: LLM-ESR ablations labelled from their configs.",
)
@click.option("-k", "k", default=10, help="Cut-off of the table's H@k / N@k.")
@click.option("--std", "show_std", is_flag=True, help="Show ± std over seeds.")
@click.option(
    "--out", "out", type=click.Path(file_okay=False), help="Write Markdown, CSV (and figures) here."
)
@click.option("--figures", is_flag=True, help="Also draw every figure that applies (fig1, fig3, fig4, fig5).")
@click.option(
    "--figure",
    "figures_named",
    multiple=True,
    type=click.Choice(FIGURE_NAMES),
    help="Draw only these figures (repeatable).",
)
@click.option(
    "--dataset",
    type=click.Path(exists=True, file_okay=False),
    help="fig1: a processed dataset folder (default: the runs' dataset).",
)
@click.option("--metric", default="ndcg@10", help="Metric of fig1 lines.")
@click.option(
    "--tsne-items", default=3000, help="fig5: at most this many items (same random subset per panel)."
)
@click.option("--device", default="cpu", help="fig5: device to load checkpoints on.")
def report(
    paths,
    baseline,
    protocol,
    layout,
    k,
    show_std,
    out,
    figures,
    figures_named,
    dataset,
    metric,
    tsne_items,
    device,
) -> None:
    """Tables (console, Markdown, CSV) and figures from run folders, seed folders or parents of many runs.

    \b
    Examples:
      esrkit report runs/ --out report/                       # Table 1, both protocols
      esrkit report runs/ablations --layout table2 --std      # Table 2
      esrkit report runs/ --baseline SASRec --protocol sampled
      esrkit report runs/ runs/sweep-beauty-sasrec --figures --out report/
    """
    from esrkit.reporting.collect import collect_runs  # lazy: the CLI starts fast (esrkit/cli/__init__.py)
    from esrkit.reporting.tables import build_tables, to_console, write_tables

    runs = collect_runs(paths) if paths else []
    wanted = set(FIGURE_NAMES) if figures else set(figures_named)
    if not runs and not wanted:
        raise click.ClickException(f"no finished runs under {', '.join(paths) or '(no path given)'}")
    tables = (
        build_tables(runs, layout, _protocols(protocol), baseline=baseline, k=k, show_std=show_std)
        if runs
        else []
    )
    for t in tables:
        click.echo(to_console(t, baseline))
        click.echo("")
    written: list[Path] = []
    if out and tables:
        written += write_tables(tables, out, baseline)
    if wanted:
        from esrkit.runs.figures import draw_figures  # lazy: the CLI starts fast

        for name, path_or_reason in draw_figures(
            sorted(wanted),
            runs,
            _sweeps(paths),
            Path(out or "report"),
            _protocols(protocol),
            dataset,
            metric,
            tsne_items,
            device,
        ):
            if isinstance(path_or_reason, Path):
                written.append(path_or_reason)
            else:
                click.echo(f"{name}: skipped ({path_or_reason})", err=True)
    for p in written:
        click.echo(f"wrote {p}")
