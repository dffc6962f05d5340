"""Finding runs: run folders, seed folders, parents; unfinished seeds; empty groups."""

from __future__ import annotations

import math

from esrkit.reporting.collect import collect_runs, group_runs


def test_run_seed_and_parent_folders(make_run):
    folder = make_run("esr", {1: 0.3, 2: 0.4}, model="llmesr")
    make_run("sas", {1: 0.2}, model="id")
    (folder / "seed-3").mkdir()  # unfinished: config only
    (folder / "seed-3" / "config.json").write_text((folder / "seed-1" / "config.json").read_text())
    runs = collect_runs([make_run.root])
    assert [r.name for r in runs] == ["esr", "sas"]
    assert runs[0].seeds == [1, 2] and runs[0].label == "LLM-ESR" and runs[1].label == "SASRec"
    assert runs[0].values("sampled", "overall", "ndcg@10") == [0.3, 0.4]
    assert math.isclose(runs[0].mean("sampled", "overall", "ndcg@10"), 0.35)
    (single,) = collect_runs([folder / "seed-2"])
    assert single.seeds == [2]
    # the same run reached twice (seed folder and run folder) is reported once
    assert [r.name for r in collect_runs([folder / "seed-1", folder])] == ["esr"]


def test_missing_and_empty_groups(make_run):
    make_run("x", {1: {"default": 0.2, "tail_item": None, "item_100+": float("nan")}})
    (run,) = collect_runs([make_run.root])
    assert run.values("sampled", "tail_item", "ndcg@10") == []
    assert run.values("sampled", "item_100+", "ndcg@10") == []
    assert math.isnan(run.mean("sampled", "item_100+", "ndcg@10"))
    assert run.users("sampled", "overall") == 10


def test_grouped_by_data_fingerprint_and_backbone(make_run):
    make_run("a", {1: 0.1}, data_fp="f1")
    make_run("b", {1: 0.1}, data_fp="f2", data_name="other")
    make_run("c", {1: 0.1}, data_fp="f1", backbone="gru4rec")
    make_run("d", {1: 0.1}, data_fp="f1", model="llmesr")
    blocks = group_runs(collect_runs([make_run.root]))
    assert list(blocks) == [("toy", "sasrec"), ("toy", "gru4rec"), ("other", "sasrec")]
    assert [r.name for r in blocks[("toy", "sasrec")]] == ["a", "d"]
