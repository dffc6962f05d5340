"""The paper's Table 1 (overall / long-tail comparison) and Table 2 (ablations), built from collected runs.

A ``Table`` is plain data (cells with mean, std, per-seed values and marks) rendered three ways: Markdown
(bold ``**x**``, underline ``<u>x</u>``, star ``\\*``), CSV (raw numbers and the marks as columns, so nothing
is lost) and the console. Marks are computed once, per column within a backbone block:

* best (bold) and second best (underlined) use dense ranking on the *displayed* precision, so ties are marked
  alike and a tie for best leaves the next distinct value as second;
* the star: the best row is compared to the reference baseline (``--baseline`` or, by default, the best
  non-LLM-ESR row of that column) with ``seed_ttest``; p < 0.05 and a higher mean give a star. No star is
  given when a baseline is (tied for) best, and fewer than two seeds on either side means no test (a note says
  so).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esrkit.evaluation.significance import seed_ttest
from esrkit.reporting.collect import BACKBONE_LABELS, Run, group_runs, unique_labels
from esrkit.utils.io import atomic_write_text

GROUP_TITLES = {
    "overall": "Overall",
    "tail_item": "Tail Item",
    "head_item": "Head Item",
    "tail_user": "Tail User",
    "head_user": "Head User",
    "cold_item": "Cold Item",
}
TABLE_GROUPS = ("overall", "tail_item", "head_item", "tail_user", "head_user")
COLD_GROUP = "cold_item"  # the cold-item protocol's test group (data.cold_items): a column when a run has it
METRIC_SHORT = {"hr": "H", "ndcg": "N", "mrr": "M"}
ALPHA = 0.05
DECIMALS = 4

# Table 2: ModelConfig switch -> (value that names the ablation, label), in the paper's row order
ABLATIONS: dict[str, tuple[Any, str]] = {
    "co_view": (False, "w/o Co-view"),
    "se_view": (False, "w/o Se-view"),
    "alpha": (0.0, "w/o SD"),
    "share_encoder": (False, "w/o Share"),
    "cross_attention": (False, "w/o CA"),
    "adapter_layers": (1, "1-layer adapter"),
    "id_init": ("random", "Random init"),
    "freeze_semantic": (False, "w/o F"),
}
FULL_MODEL = {
    "co_view": True,
    "se_view": True,
    "share_encoder": True,
    "cross_attention": True,
    "adapter_layers": 2,
    "id_init": "pca",
    "freeze_semantic": True,
}
IGNORED_MODEL_KEYS = {"name", "backbone", "extra"}
OTHER_KEYS = (("retrieval", "n_similar"), ("embedding", "provider"))


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Cell:
    values: list[float]
    bold: bool = False
    underline: bool = False
    star: bool = False
    p: float | None = None

    @property
    def missing(self) -> bool:
        return not self.values

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")

    @property
    def std(self) -> float:
        n = len(self.values)
        if n < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (n - 1))

    def shown(self, decimals: int = DECIMALS) -> float:
        return round(self.mean, decimals)


@dataclass
class Row:
    label: str
    run: str
    model: str
    baseline: bool  # counts as a baseline for the star (not LLM-ESR)
    cells: list[Cell]
    seeds: int = 0


@dataclass
class Block:
    backbone: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


@dataclass
class Table:
    layout: str
    dataset: str
    protocol: str
    title: str
    columns: list[tuple[str, str]]  # (group, metric)
    blocks: list[Block]
    notes: list[str] = field(default_factory=list)
    show_std: bool = False

    def column_titles(self) -> list[str]:
        return [column_title(g, m) for g, m in self.columns]

    @property
    def caption(self) -> str:
        name = {"table1": "Table 1", "table2": "Table 2 (ablations)"}.get(self.layout, self.layout)
        return f"{name}: {self.dataset} [{self.protocol}] {self.title}"


def backbone_label(name: str) -> str:
    return BACKBONE_LABELS.get(name, name)


def column_title(group: str, metric: str) -> str:
    name, _, k = metric.partition("@")
    return f"{GROUP_TITLES.get(group, group)} {METRIC_SHORT.get(name, name)}@{k}"


def default_columns(k: int = 10, groups: tuple[str, ...] = TABLE_GROUPS) -> list[tuple[str, str]]:
    return [(g, m) for g in groups for m in (f"hr@{k}", f"ndcg@{k}")]


def columns_for(runs: list[Run], k: int = 10) -> list[tuple[str, str]]:
    """The default columns, plus the cold-item group when any run reports it."""
    cold = any(r.values(p, COLD_GROUP, f"ndcg@{k}") for r in runs for p in r.protocols())
    return default_columns(k, TABLE_GROUPS + ((COLD_GROUP,) if cold else ()))


# ---------------------------------------------------------------------------------------------- marks
def _dense_top2(cells: list[Cell], decimals: int) -> tuple[float | None, float | None]:
    shown = sorted({c.shown(decimals) for c in cells if not c.missing}, reverse=True)
    return (shown[0] if shown else None), (shown[1] if len(shown) > 1 else None)


def _matches(row: Row, name: str) -> bool:
    name = name.lower()
    return name in (row.label.lower(), row.run.lower())


def mark_block(
    block: Block,
    columns: list[tuple[str, str]],
    baseline: str | None = None,
    stars: bool = True,
    decimals: int = DECIMALS,
    alpha: float = ALPHA,
) -> None:
    """Set bold / underline / star on every cell of ``block`` and add notes explaining missing tests."""
    notes: list[str] = []
    ref_fixed = None
    if baseline:
        ref_fixed = next((r for r in block.rows if _matches(r, baseline)), None)
        if ref_fixed is None and stars:
            notes.append(f"baseline {baseline!r} is not in the {block.backbone} block: no stars")
    for j, (group, metric) in enumerate(columns):
        cells = [r.cells[j] for r in block.rows]
        best, second = _dense_top2(cells, decimals)
        for c in cells:
            c.bold = not c.missing and c.shown(decimals) == best
            c.underline = not c.missing and second is not None and c.shown(decimals) == second
        if stars and best is not None and (ref_fixed is not None or not baseline):
            _star(block, j, column_title(group, metric), best, ref_fixed, decimals, alpha, notes)
    few = [r.label for r in block.rows if r.seeds < 2]
    if stars and few and not any(n.startswith("no t-test") for n in notes):
        notes.append(
            f"fewer than 2 seeds for {', '.join(few)}: no t-test is possible for those rows, "
            "so they can give or get no star"
        )
    for note in notes:
        if note not in block.notes:
            block.notes.append(note)


def _star(
    block: Block,
    j: int,
    title: str,
    best: float,
    ref: Row | None,
    decimals: int,
    alpha: float,
    notes: list[str],
) -> None:
    winners = [r for r in block.rows if not r.cells[j].missing and r.cells[j].shown(decimals) == best]
    if ref is None:
        pool = [r for r in block.rows if r.baseline and not r.cells[j].missing]
        if not pool:
            notes.append(f"no baseline row in the {block.backbone} block: no stars")
            return
        ref = max(pool, key=lambda r: r.cells[j].mean)
        if any(r.baseline for r in winners):
            return  # a baseline is (tied for) best: nothing to star
    if ref in winners or ref.cells[j].missing:
        return
    top = winners[0]
    cell, other = top.cells[j], ref.cells[j]
    p = seed_ttest(cell.values, other.values)
    cell.p = None if math.isnan(p) else p
    if math.isnan(p):
        notes.append(
            f"no t-test for {top.label} vs {ref.label}: fewer than 2 seeds "
            f"({len(cell.values)} vs {len(other.values)}), so no star"
        )
        return
    cell.star = p < alpha and cell.mean > other.mean


# ---------------------------------------------------------------------------------------------- Table 1
def _row(run: Run, label: str, protocol: str, columns: list[tuple[str, str]]) -> Row:
    cells = [Cell(run.values(protocol, g, m)) for g, m in columns]
    return Row(label, run.name, run.model, not run.is_proposed, cells, len(run.seeds))


def _unique_row_labels(rows: list[Row]) -> None:
    labels = [r.label for r in rows]
    for r in rows:
        if labels.count(r.label) > 1:
            r.label = f"{r.label} [{r.run}]"


def _missing_notes(block: Block, columns: list[tuple[str, str]]) -> None:
    for r in block.rows:
        gone = [column_title(g, m) for (g, m), c in zip(columns, r.cells) if c.missing]
        if gone:
            block.notes.append(f"{r.label}: no value for {', '.join(gone)} (group absent or empty)")


def _seed_note(block: Block) -> None:
    counts = {r.seeds for r in block.rows}
    if len(counts) > 1:
        block.notes.append("seeds differ: " + ", ".join(f"{r.label} {r.seeds}" for r in block.rows))


def build_table1(
    runs: list[Run],
    protocol: str,
    baseline: str | None = None,
    k: int = 10,
    show_std: bool = False,
    columns: list[tuple[str, str]] | None = None,
) -> list[Table]:
    """One table per dataset; a block per backbone; rows in the paper's order."""
    columns = columns or columns_for(runs, k)
    by_dataset: dict[str, list[Block]] = {}
    titles: dict[str, str] = {}
    for (dataset, _), block_runs in group_runs(runs).items():
        block_runs = [r for r in block_runs if protocol in r.protocols()]
        if not block_runs:
            continue
        rows = [_row(r, label, protocol, columns) for r, label in zip(block_runs, unique_labels(block_runs))]
        block = Block(backbone_label(block_runs[0].backbone), rows)
        mark_block(block, columns, baseline)
        _missing_notes(block, columns)
        _seed_note(block)
        by_dataset.setdefault(dataset, []).append(block)
        titles.setdefault(dataset, block_runs[0].protocol_title(protocol))
    return [
        Table("table1", d, protocol, titles[d], columns, blocks, show_std=show_std)
        for d, blocks in by_dataset.items()
    ]


# ---------------------------------------------------------------------------------------------- Table 2
def _settings(config: dict[str, Any]) -> dict[str, Any]:
    model = {k: v for k, v in config.get("model", {}).items() if k not in IGNORED_MODEL_KEYS}
    for section, key in OTHER_KEYS:
        if key in config.get(section, {}):
            model[f"{section}.{key}"] = config[section][key]
    return model


def is_full_model(config: dict[str, Any]) -> bool:
    model = config.get("model", {})
    return all(model.get(k, v) == v for k, v in FULL_MODEL.items()) and float(model.get("alpha", 0.1)) > 0


def _differences(settings: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    return [k for k in settings if k in ref and settings[k] != ref[k]]


def format_value(value: Any) -> str:
    """A config value as a label (a sweep setting's name, a figure's tick): ``true``, ``0.5``, ``1e-05``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return format(v, "g")
    return str(v)


def ablation_label(config: dict[str, Any], reference: dict[str, Any]) -> tuple[str, int]:
    """(label, sort key) of a run relative to the full model's config: ``w/o SD``, ``w/o CA + w/o Share``,
    ``alpha=0.5`` for a non-ablation difference; ``LLM-ESR`` when nothing differs."""
    mine, ref = _settings(config), _settings(reference)
    parts: list[str] = []
    order = len(ABLATIONS)
    names = list(ABLATIONS)
    for key in _differences(mine, ref):
        if key in ABLATIONS and mine[key] == ABLATIONS[key][0]:
            parts.append(ABLATIONS[key][1])
            order = min(order, names.index(key))
        else:
            parts.append(f"{key.split('.')[-1]}={_fmt_value(mine[key])}")
    if not parts:
        return "LLM-ESR", len(ABLATIONS) + 1
    return " + ".join(parts), order


def pick_reference(runs: list[Run]) -> Run | None:
    """The full model; among several (e.g. sweep points), the one closest to all others."""
    full = [r for r in runs if is_full_model(r.config)]
    if not full:
        return None
    return min(
        full,
        key=lambda r: (
            sum(len(_differences(_settings(r.config), _settings(o.config))) for o in runs),
            r.name,
        ),
    )


def build_table2(
    runs: list[Run],
    protocol: str,
    k: int = 10,
    show_std: bool = False,
    columns: list[tuple[str, str]] | None = None,
) -> list[Table]:
    """Rows = LLM-ESR variants labelled from their configs relative to the full model (last row)."""
    columns = columns or columns_for(runs, k)
    by_dataset: dict[str, list[Block]] = {}
    titles: dict[str, str] = {}
    for (dataset, _), block_runs in group_runs(runs).items():
        variants = [r for r in block_runs if r.is_proposed and protocol in r.protocols()]
        if not variants:
            continue
        ref = pick_reference(variants)
        notes = [] if ref else ["no full LLM-ESR run: variants labelled against the first run's config"]
        ref_cfg = (ref or variants[0]).config
        labelled = []
        for run in variants:
            label, order = ablation_label(run.config, ref_cfg)
            if run is not ref and label == "LLM-ESR" and ref is not None:
                label = f"LLM-ESR [{run.name}]"
            labelled.append((order, label, run))
        labelled.sort(key=lambda t: (t[0], t[1]))
        rows = [_row(run, label, protocol, columns) for _, label, run in labelled]
        _unique_row_labels(rows)
        block = Block(backbone_label(variants[0].backbone), rows, notes)
        mark_block(block, columns, stars=False)
        _missing_notes(block, columns)
        _seed_note(block)
        others = len(block_runs) - len(variants)
        if others:
            block.notes.append(f"{others} non-LLM-ESR run(s) left out of the ablation table")
        by_dataset.setdefault(dataset, []).append(block)
        titles.setdefault(dataset, variants[0].protocol_title(protocol))
    return [
        Table("table2", d, protocol, titles[d], columns, blocks, show_std=show_std)
        for d, blocks in by_dataset.items()
    ]


LAYOUTS: dict[str, Callable[..., list[Table]]] = {"table1": build_table1, "table2": build_table2}


def build_tables(
    runs: list[Run],
    layout: str = "table1",
    protocols: tuple[str, ...] = ("sampled", "full"),
    baseline: str | None = None,
    k: int = 10,
    show_std: bool = False,
) -> list[Table]:
    out: list[Table] = []
    for protocol in protocols:
        if layout == "table1":
            out += build_table1(runs, protocol, baseline=baseline, k=k, show_std=show_std)
        elif layout == "table2":
            out += build_table2(runs, protocol, k=k, show_std=show_std)
        else:
            raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    return out


# ---------------------------------------------------------------------------------------------- rendering
def _number(cell: Cell, show_std: bool, decimals: int = DECIMALS) -> str:
    if cell.missing:
        return "–"
    text = f"{cell.mean:.{decimals}f}"
    if show_std and len(cell.values) > 1:
        text += f" ± {cell.std:.{decimals}f}"
    return text


def markdown_cell(cell: Cell, show_std: bool = False) -> str:
    text = _number(cell, show_std)
    if cell.bold:
        text = f"**{text}**"
    elif cell.underline:
        text = f"<u>{text}</u>"
    return text + ("\\*" if cell.star else "")


LEGEND_T1 = (
    "**bold** = best, <u>underline</u> = second best per column within a backbone block (ties marked "
    "alike); \\* = the best row beats {ref} (two-sided t-test over seeds, p < 0.05). Mean over seeds."
)
LEGEND_T2 = (
    "**bold** = best, <u>underline</u> = second best per column; labels are the differences to the full "
    "LLM-ESR config. Mean over seeds."
)


def _legend(table: Table, baseline: str | None) -> str:
    if table.layout == "table2":
        return LEGEND_T2
    return LEGEND_T1.format(
        ref=f"the baseline {baseline!r}" if baseline else "the best baseline (non-LLM-ESR row)"
    )


def to_markdown(table: Table, baseline: str | None = None) -> str:
    header = ["Backbone", "Model"] + table.column_titles()
    lines = [
        f"### {table.caption}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join([" --- "] * 2 + [" ---: "] * len(table.columns)) + "|",
    ]
    for block in table.blocks:
        for i, row in enumerate(block.rows):
            first = block.backbone if i == 0 else ""
            cells = [markdown_cell(c, table.show_std) for c in row.cells]
            lines.append("| " + " | ".join([first, row.label] + cells) + " |")
    lines += ["", _legend(table, baseline)]
    notes = table.notes + [f"{b.backbone}: {n}" for b in table.blocks for n in b.notes]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


CSV_FIELDS = [
    "layout",
    "dataset",
    "protocol",
    "protocol_title",
    "backbone",
    "label",
    "run",
    "model",
    "group",
    "metric",
    "mean",
    "std",
    "n_seeds",
    "values",
    "bold",
    "underline",
    "star",
    "p_value",
]


def to_csv(tables: list[Table]) -> str:
    """Long format: one line per cell, full float precision (``repr``) so numbers round-trip exactly."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for t in tables:
        for block in t.blocks:
            for row in block.rows:
                for (group, metric), c in zip(t.columns, row.cells):
                    writer.writerow(
                        {
                            "layout": t.layout,
                            "dataset": t.dataset,
                            "protocol": t.protocol,
                            "protocol_title": t.title,
                            "backbone": block.backbone,
                            "label": row.label,
                            "run": row.run,
                            "model": row.model,
                            "group": group,
                            "metric": metric,
                            "mean": "" if c.missing else repr(c.mean),
                            "std": "" if c.missing else repr(c.std),
                            "n_seeds": len(c.values),
                            "values": ";".join(repr(v) for v in c.values),
                            "bold": int(c.bold),
                            "underline": int(c.underline),
                            "star": int(c.star),
                            "p_value": "" if c.p is None else repr(c.p),
                        }
                    )
    return buf.getvalue()


def read_csv(path_or_text: str | Path) -> list[dict[str, Any]]:
    """The CSV back as typed dicts (floats, ints, bools, value lists)."""
    text = Path(path_or_text).read_text() if isinstance(path_or_text, Path) else path_or_text
    out = []
    for rec in csv.DictReader(io.StringIO(text)):
        rec = dict(rec)
        for key in ("mean", "std", "p_value"):
            rec[key] = float(rec[key]) if rec[key] else None
        rec["n_seeds"] = int(rec["n_seeds"])
        rec["values"] = [float(v) for v in rec["values"].split(";") if v]
        for key in ("bold", "underline", "star"):
            rec[key] = rec[key] == "1"
        out.append(rec)
    return out


def console_cell(cell: Cell, show_std: bool = False) -> str:
    """Plain text marks (no ANSI): [best], _second_, trailing * for significance."""
    text = _number(cell, show_std)
    if cell.bold:
        text = f"[{text}]"
    elif cell.underline:
        text = f"_{text}_"
    return text + ("*" if cell.star else " ")


def to_console(table: Table, baseline: str | None = None) -> str:
    header = ["backbone", "model"] + table.column_titles() + ["seeds"]
    lines = [header]
    for block in table.blocks:
        for i, row in enumerate(block.rows):
            lines.append(
                [block.backbone if i == 0 else "", row.label]
                + [console_cell(c, table.show_std) for c in row.cells]
                + [str(row.seeds)]
            )
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    out = [table.caption, fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines[1:]]
    ref = f"baseline {baseline!r}" if baseline else "best baseline"
    out.append(
        "[x] best, _x_ second best" + ("" if table.layout == "table2" else f", * p < 0.05 vs the {ref}")
    )
    out += [f"note ({b.backbone}): {n}" for b in table.blocks for n in b.notes]
    return "\n".join(out)


def write_tables(tables: list[Table], out_dir: str | Path, baseline: str | None = None) -> list[Path]:
    """``<layout>-<dataset>-<protocol>.md`` per table, one ``<layout>.csv`` with every cell, ``tables.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in tables:
        path = out / f"{t.layout}-{slug(t.dataset)}-{t.protocol}.md"
        atomic_write_text(path, to_markdown(t, baseline))
        written.append(path)
    for layout in dict.fromkeys(t.layout for t in tables):
        path = out / f"{layout}.csv"
        atomic_write_text(path, to_csv([t for t in tables if t.layout == layout]))
        written.append(path)
    atomic_write_text(out / "tables.md", "\n".join(to_markdown(t, baseline) for t in tables))
    written.append(out / "tables.md")
    return written


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text).strip("-") or "x"
