"""A study's per-seed record: seeds merge by run name, later sources win, different experiments never
merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esrkit.reporting.collect import folder_records, read_run, run_from_records
from esrkit.reporting.records import differences, merge_records, read_record_file


def seed_record(
    seed: int, ndcg: float, hidden: int = 64, data_fp: str = "d1", pca_fp: str = "p1", neighbours: str = ""
) -> dict:
    return {
        "results": {"test": {"sampled": {"overall": {"ndcg@10": ndcg}}}, "seconds": {"train": 10.0}},
        "config": {
            "name": "llmesr-x",
            "output_dir": f"/machine-{seed}/runs",
            "model": {"hidden": hidden},
            "train": {"seed": seed, "device": "cuda" if seed == 44 else "cpu", "lr": 0.001},
            "retrieval": {"neighbours": neighbours, "n_similar": 10},
        },
        "provenance": {
            "fingerprints": {
                "data": data_fp,
                "pca": pca_fp,
                "embeddings": {"items": {"fingerprint": "e1", "source": "x"}},
            }
        },
    }


def test_later_sources_win_per_seed_and_seeds_come_out_in_numeric_order() -> None:
    published = {"42": seed_record(42, 0.30), "43": seed_record(43, 0.31)}
    folder = {"43": seed_record(43, 0.35), "100": seed_record(100, 0.32)}
    merged = merge_records("llmesr-x", [("published", published), ("folder", folder)])
    assert list(merged) == ["42", "43", "100"]
    run = run_from_records("llmesr-x", Path("x"), merged)
    assert run.seeds == [42, 43, 100]
    assert run.values("sampled", "overall", "ndcg@10") == [
        0.30,
        0.35,
        0.32,
    ]  # the folder's seed 43, not the record's


def test_where_a_seed_ran_is_not_a_difference_but_what_it_trained_is() -> None:
    # another machine, device, output folder, neighbour-file path and PCA last bits: the same experiment
    assert (
        differences(seed_record(42, 0.3), seed_record(44, 0.3, pca_fp="p2", neighbours="/gpu/nb.npy")) == []
    )
    assert differences(seed_record(42, 0.3), seed_record(43, 0.3, hidden=128)) == ["model.hidden"]
    assert differences(seed_record(42, 0.3), seed_record(43, 0.3, data_fp="d2")) == ["fingerprint.data"]
    newer = seed_record(43, 0.3)
    newer["config"]["model"]["added_later"] = True  # a setting a newer esrkit records with its default
    assert differences(seed_record(42, 0.3), newer) == []


def test_merging_different_experiments_names_the_run_the_seeds_and_the_setting() -> None:
    with pytest.raises(
        ValueError,
        match=r"run 'llmesr-x': seed 43 from folder and seed 42 from published .*"
        r"model\.hidden",
    ):
        merge_records(
            "llmesr-x",
            [
                ("published", {"42": seed_record(42, 0.3)}),
                ("folder", {"43": seed_record(43, 0.3, hidden=128)}),
            ],
        )
    # replacing a seed by a different experiment is caught against the seeds it would be averaged with
    with pytest.raises(ValueError, match="seed 42 from folder"):
        merge_records(
            "llmesr-x",
            [
                ("published", {"42": seed_record(42, 0.3), "43": seed_record(43, 0.3)}),
                ("folder", {"42": seed_record(42, 0.3, data_fp="other")}),
            ],
        )


def test_folder_records_skip_a_seed_still_training(tmp_path) -> None:
    for seed, finished in ((42, True), (43, False), (100, True), (7, True)):
        d = tmp_path / "run" / f"seed-{seed}"
        d.mkdir(parents=True)
        rec = seed_record(seed, 0.3)
        (d / "config.json").write_text(json.dumps(rec["config"]))
        (d / "provenance.json").write_text(json.dumps(rec["provenance"]))
        if finished:
            (d / "results.json").write_text(json.dumps(rec["results"]))
    (tmp_path / "run" / "checkpoints").mkdir()
    assert list(folder_records(tmp_path / "run")) == ["7", "42", "100"]  # numeric order, not the folders'
    assert folder_records(tmp_path / "run")["42"]["config"]["train"]["seed"] == 42
    assert list(folder_records(tmp_path / "run", only_seed=100)) == ["100"]
    assert folder_records(tmp_path / "run", only_seed=43) == {}
    assert read_run(tmp_path / "run").seeds == [7, 42, 100]
    assert read_run(tmp_path / "run", only_seed=43) is None
    assert folder_records(tmp_path / "missing") == {}


def test_a_bad_record_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such study record"):
        read_record_file(tmp_path / "nope.json")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"gains": []}))  # a study.json from before records: nothing to add
    assert read_record_file(old) == {}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"records": {"llmesr-x": {"42": {"config": {}}}}}))
    with pytest.raises(ValueError, match=r"bad\.json: records\.llmesr-x\.42: .*'results'"):
        read_record_file(bad)
    bad.write_text(json.dumps({"records": {"llmesr-x": {"seed-42": {"results": {}}}}}))
    with pytest.raises(ValueError, match="seed number"):
        read_record_file(bad)


def test_cli_names_a_conflicting_record_and_trains_nothing(tmp_path) -> None:
    from click.testing import CliRunner

    from esrkit.cli.main import cli

    published = tmp_path / "study.json"
    published.write_text(
        json.dumps({"records": {"llminit-random": {"42": seed_record(42, 0.3, hidden=512)}}})
    )
    result = CliRunner().invoke(
        cli,
        [
            "study",
            "providers",
            "-r",
            "demo",
            "-p",
            "random",
            "--models",
            "llminit",
            "--no-controls",
            "--record",
            str(published),
            "--output-dir",
            str(tmp_path / "runs"),
            "-q",
        ],
    )
    assert result.exit_code != 0
    assert (
        "run 'llminit-random': its recorded seeds (42)" in result.output and "model.hidden" in result.output
    )
    assert not (tmp_path / "runs").exists()
    missing = CliRunner().invoke(
        cli,
        [
            "study",
            "providers",
            "-r",
            "demo",
            "-p",
            "random",
            "--record",
            str(tmp_path / "nope.json"),
            "--report-only",
        ],
    )
    assert missing.exit_code == 2 and "nope.json" in missing.output
