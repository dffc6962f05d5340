"""``esrkit report`` end to end on fake run folders."""

from __future__ import annotations

from click.testing import CliRunner

from esrkit.cli.report import report


def _runs(make_run):
    for name, model, base in (("sas", "id", 0.2), ("init", "llminit", 0.3), ("esr", "llmesr", 0.4)):
        make_run(name, {s: base + s / 100 for s in (1, 2, 3)}, model=model)
    make_run("esr-nosd", {1: 0.35, 2: 0.36}, model="llmesr", model_cfg={"alpha": 0.0})


def test_report_writes_tables_and_figure(make_run, tmp_path):
    _runs(make_run)
    out = tmp_path / "report"
    res = CliRunner().invoke(report, [str(make_run.root), "--out", str(out), "--figure", "fig4", "--std"])
    assert res.exit_code == 0, res.output
    assert "paper protocol: target + 100 sampled negatives" in res.output and "full ranking" in res.output
    names = {p.name for p in out.iterdir()}
    assert {
        "table1-toy-sampled.md",
        "table1-toy-full.md",
        "table1.csv",
        "tables.md",
        "figure4-toy-sasrec-sampled.png",
        "figure4-toy-sasrec-full.png",
    } <= names
    md = (out / "table1-toy-sampled.md").read_text()
    assert "**0.4200 ± 0.0100**\\*" in md and "LLM-ESR [esr-nosd]" in md


def test_report_table2_and_protocol(make_run, tmp_path):
    _runs(make_run)
    res = CliRunner().invoke(report, [str(make_run.root), "--layout", "table2", "--protocol", "full"])
    assert res.exit_code == 0, res.output
    assert "Table 2" in res.output and "w/o SD" in res.output and "[sampled]" not in res.output


def test_report_without_runs_fails(tmp_path):
    res = CliRunner().invoke(report, [str(tmp_path)])
    assert res.exit_code != 0 and "no finished runs" in res.output
