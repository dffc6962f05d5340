"""Table 1 / Table 2 marks and formats on fixed numbers."""

from __future__ import annotations

import math

from esrkit.reporting.collect import collect_runs
from esrkit.reporting.tables import (
    Block,
    Cell,
    Row,
    build_table1,
    build_table2,
    mark_block,
    markdown_cell,
    read_csv,
    to_console,
    to_csv,
    to_markdown,
    write_tables,
)

COLS = [("overall", "ndcg@10")]


def _block(*rows: tuple[str, bool, list[float]]) -> Block:
    return Block(
        "SASRec",
        [Row(label, label, "x", baseline, [Cell(vals)], len(vals)) for label, baseline, vals in rows],
    )


def _marks(block: Block) -> dict[str, str]:
    out = {}
    for r in block.rows:
        c = r.cells[0]
        out[r.label] = ("B" if c.bold else "") + ("U" if c.underline else "") + ("*" if c.star else "")
    return out


def test_bold_underline_and_star_against_best_baseline():
    block = _block(
        ("SASRec", True, [0.20, 0.21, 0.22]),
        ("LLMInit", True, [0.25, 0.26, 0.24]),
        ("LLM-ESR", False, [0.30, 0.31, 0.32]),
    )
    mark_block(block, COLS)
    assert _marks(block) == {"SASRec": "", "LLMInit": "U", "LLM-ESR": "B*"}
    assert block.rows[2].cells[0].p < 0.05


def test_no_star_when_not_significant_or_when_a_baseline_wins():
    noisy = _block(("SASRec", True, [0.25, 0.26, 0.24]), ("LLM-ESR", False, [0.30, 0.20, 0.40]))
    mark_block(noisy, COLS)
    assert _marks(noisy) == {"SASRec": "U", "LLM-ESR": "B"}
    assert noisy.rows[1].cells[0].p > 0.05
    base_wins = _block(("SASRec", True, [0.40, 0.41, 0.42]), ("LLM-ESR", False, [0.30, 0.31, 0.32]))
    mark_block(base_wins, COLS)
    assert _marks(base_wins) == {"SASRec": "B", "LLM-ESR": "U"}


def test_ties_are_marked_alike_with_dense_second():
    block = _block(
        ("A", True, [0.30001, 0.29999]),
        ("B", False, [0.3, 0.3]),
        ("C", True, [0.2, 0.2]),
        ("D", False, [0.2, 0.2]),
        ("E", True, [0.1, 0.1]),
    )
    mark_block(block, COLS)
    # A and B are equal at 4 decimals: both bold; C and D share the second-best value
    assert _marks(block) == {"A": "B", "B": "B", "C": "U", "D": "U", "E": ""}


def test_tie_between_proposed_and_baseline_gives_no_star():
    block = _block(("SASRec", True, [0.3, 0.3, 0.3]), ("LLM-ESR", False, [0.3, 0.3, 0.3]))
    mark_block(block, COLS)
    assert _marks(block) == {"SASRec": "B", "LLM-ESR": "B"}


def test_single_seed_no_star_and_a_note():
    block = _block(("SASRec", True, [0.2]), ("LLM-ESR", False, [0.9]))
    mark_block(block, COLS)
    assert _marks(block) == {"SASRec": "U", "LLM-ESR": "B"}
    assert block.rows[1].cells[0].p is None
    assert any("fewer than 2 seeds" in n for n in block.notes)


def test_explicit_baseline_and_unknown_baseline():
    rows = (
        ("SASRec", True, [0.20, 0.21, 0.22]),
        ("LLMInit", True, [0.29, 0.30, 0.31]),
        ("LLM-ESR", False, [0.30, 0.31, 0.32]),
    )
    best_base = _block(*rows)
    mark_block(best_base, COLS)
    assert not best_base.rows[2].cells[0].star  # 0.31 vs 0.30: not significant
    vs_sasrec = _block(*rows)
    mark_block(vs_sasrec, COLS, baseline="sasrec")
    assert vs_sasrec.rows[2].cells[0].star
    unknown = _block(*rows)
    mark_block(unknown, COLS, baseline="MELT")
    assert not any(r.cells[0].star for r in unknown.rows)
    assert any("'MELT'" in n for n in unknown.notes)


def test_missing_cells_are_skipped_and_shown_as_dash():
    block = _block(("SASRec", True, []), ("LLMInit", True, [0.2, 0.2]), ("LLM-ESR", False, [0.1, 0.1]))
    mark_block(block, COLS)
    assert _marks(block) == {"SASRec": "", "LLMInit": "B", "LLM-ESR": "U"}
    assert markdown_cell(block.rows[0].cells[0]) == "–"


def test_markdown_format():
    c = Cell([0.30, 0.32], bold=True, star=True)
    assert markdown_cell(c) == "**0.3100**\\*"
    assert markdown_cell(c, show_std=True) == f"**0.3100 ± {math.sqrt(0.0002):.4f}**\\*"
    assert markdown_cell(Cell([0.2], underline=True)) == "<u>0.2000</u>"


def _three_models(make_run, seeds=(1, 2, 3)):
    lift = {1: 0.0, 2: 0.01, 3: 0.02}
    make_run("sas", {s: 0.20 + lift[s] for s in seeds}, model="id")
    make_run("init", {s: {"default": 0.25 + lift[s], "tail_item": None} for s in seeds}, model="llminit")
    make_run(
        "esr",
        {s: {"default": 0.40 + lift[s], ("head_user", "hr@10"): float("nan")} for s in seeds},
        model="llmesr",
    )
    return collect_runs([make_run.root])


def test_table1_from_runs(make_run):
    runs = _three_models(make_run)
    (table,) = build_table1(runs, "sampled")
    assert table.dataset == "toy" and "100 sampled negatives" in table.title
    labels = [r.label for r in table.blocks[0].rows]
    assert labels == ["SASRec", "LLMInit", "LLM-ESR"]
    esr = table.blocks[0].rows[2]
    assert all(c.bold and c.star for c in esr.cells if not c.missing)
    cols = table.column_titles()
    assert cols[:2] == ["Overall H@10", "Overall N@10"] and len(cols) == 10
    init = table.blocks[0].rows[1]
    assert init.cells[cols.index("Tail Item N@10")].missing  # group absent
    assert esr.cells[cols.index("Head User H@10")].missing  # empty group (NaN)
    md = to_markdown(table)
    assert "| SASRec | LLMInit |" not in md and "**0.4100**\\*" in md and "<u>0.2600</u>" in md
    assert "paper protocol" in md
    text = to_console(table)
    assert "[0.4100]*" in text and "_0.2600_" in text
    (full,) = build_table1(runs, "full")
    assert "full ranking" in full.title


def test_csv_round_trip(make_run, tmp_path):
    runs = _three_models(make_run)
    tables = build_table1(runs, "sampled") + build_table1(runs, "full")
    recs = read_csv(to_csv(tables))
    cells = [(t, b, r, c) for t in tables for b in t.blocks for r in b.rows for c in r.cells]
    assert len(recs) == len(cells)
    for rec, (t, _, row, cell) in zip(recs, cells):
        assert rec["protocol"] == t.protocol and rec["label"] == row.label
        if cell.missing:
            assert rec["mean"] is None and rec["values"] == []
        else:
            assert rec["mean"] == cell.mean and rec["std"] == cell.std and rec["values"] == cell.values
        assert (rec["bold"], rec["underline"], rec["star"]) == (cell.bold, cell.underline, cell.star)
        assert rec["p_value"] == cell.p
    written = write_tables(tables, tmp_path / "out")
    assert {p.name for p in written} == {
        "table1-toy-sampled.md",
        "table1-toy-full.md",
        "table1.csv",
        "tables.md",
    }
    assert read_csv(tmp_path / "out" / "table1.csv") == recs


def test_blocks_per_backbone_and_tables_per_dataset(make_run):
    make_run("sas", {1: 0.2}, model="id")
    make_run("bert", {1: 0.3}, model="id", backbone="bert4rec")
    make_run("other", {1: 0.3}, model="id", data_fp="fp-data-2", data_name="toy")
    tables = build_table1(collect_runs([make_run.root]), "sampled")
    assert sorted(t.dataset for t in tables) == ["toy (fp-data-1)", "toy (fp-data-2)"]
    first = next(t for t in tables if len(t.blocks) == 2)
    assert [b.backbone for b in first.blocks] == ["SASRec", "Bert4Rec"]
    # each backbone block is ranked on its own
    assert all(r.cells[0].bold for b in first.blocks for r in b.rows)


ABLATIONS = {
    "full": {},
    "nocv": {"co_view": False},
    "nose": {"se_view": False},
    "nosd": {"alpha": 0.0},
    "noshare": {"share_encoder": False},
    "noca": {"cross_attention": False},
    "ad1": {"adapter_layers": 1},
    "rand": {"id_init": "random"},
    "nof": {"freeze_semantic": False},
    "both": {"cross_attention": False, "share_encoder": False},
    "a05": {"alpha": 0.5},
}


def test_table2_labels_from_configs(make_run):
    for i, (name, cfg) in enumerate(ABLATIONS.items()):
        make_run(name, {1: 0.1 + i / 100, 2: 0.1 + i / 100}, model="llmesr", model_cfg=cfg)
    make_run("sas", {1: 0.5}, model="id")
    (table,) = build_table2(collect_runs([make_run.root]), "sampled")
    labels = {r.run: r.label for r in table.blocks[0].rows}
    assert labels == {
        "full": "LLM-ESR",
        "nocv": "w/o Co-view",
        "nose": "w/o Se-view",
        "nosd": "w/o SD",
        "noshare": "w/o Share",
        "noca": "w/o CA",
        "ad1": "1-layer adapter",
        "rand": "Random init",
        "nof": "w/o F",
        "both": "w/o Share + w/o CA",
        "a05": "alpha=0.5",
    }
    order = [r.label for r in table.blocks[0].rows]
    assert order[:5] == ["w/o Co-view", "w/o Se-view", "w/o SD", "w/o Share", "w/o Share + w/o CA"]
    assert order[-1] == "LLM-ESR"
    assert any("non-LLM-ESR" in n for n in table.blocks[0].notes)
    assert table.layout == "table2" and "Table 2" in to_markdown(table)
    assert not any(c.star for r in table.blocks[0].rows for c in r.cells)


def test_a_cold_item_column_appears_when_a_run_reports_the_group(make_run):
    import json

    from esrkit.reporting.console import results_table

    folder = make_run("llmesr", {42: 0.3, 43: 0.32}, model="llmesr")
    make_run("id", {42: 0.2, 43: 0.21})
    for seed in (42, 43):
        path = folder / f"seed-{seed}" / "results.json"
        results = json.loads(path.read_text())
        for groups in results["test"].values():
            groups["cold_item"] = {"hr@10": 0.1, "ndcg@10": 0.05 + seed / 1e4, "users": 3}
        path.write_text(json.dumps(results))
    (table,) = build_table1(collect_runs([make_run.root]), "full")
    cols = table.column_titles()
    assert cols[-2:] == ["Cold Item H@10", "Cold Item N@10"] and len(cols) == 12
    cells = {r.label: r.cells[-1] for r in table.blocks[0].rows}
    assert cells["SASRec"].missing and math.isclose(cells["LLM-ESR"].mean, 0.05425)
    (plain,) = build_table1(collect_runs([make_run.root / "id"]), "full")
    assert "Cold Item N@10" not in plain.column_titles()
    text = results_table([("llmesr", results["test"]["full"])], "full")
    assert "Cold item H@10" in text.splitlines()[1]
