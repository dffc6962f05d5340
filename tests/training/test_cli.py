"""The train -> evaluate -> recommend commands on a tiny synthetic run (a real, short training)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from esrkit.cli.main import cli

TINY = [
    "--set",
    "data.synthetic={n_users=200, n_items=300}",
    "--set",
    "train.epochs=1",
    "--set",
    "train.max_batches_per_epoch=2",
    "--set",
    "eval.batch_size=128",
]


def test_train_evaluate_recommend(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(
        cli, ["train", "--recipe", "demo", "--name", "tiny", "--output-dir", "runs", "-q", *TINY]
    )
    assert res.exit_code == 0, res.output
    assert "paper protocol" in res.output and "full ranking" in res.output
    run = tmp_path / "runs" / "tiny" / "seed-42"
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "llmesr" and set(results["test"]) == {"sampled", "full"}
    assert (run / "checkpoints" / "best.safetensors").exists() and (run / "ranks" / "test_full.npy").exists()
    provenance = json.loads((run / "provenance.json").read_text())
    assert {"data", "embeddings", "pca", "neighbours"} <= set(provenance["fingerprints"])
    from esrkit.training.rundir import RunDir

    finished = RunDir(run).lock()  # the training let its finished run go (a study holds no lock per run)
    finished.unlock()

    res = runner.invoke(cli, ["evaluate", str(run), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.output)
    # the same checkpoint and negatives give the same test numbers as the training run
    assert (
        abs(again["sampled"]["overall"]["ndcg@10"] - results["test"]["sampled"]["overall"]["ndcg@10"]) < 1e-9
    )
    assert abs(again["full"]["overall"]["hr@10"] - results["test"]["full"]["overall"]["hr@10"]) < 1e-9

    res = runner.invoke(cli, ["recommend", str(run), "--user", "U000001", "-k", "5"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
    assert len(lines) == 5
    res = runner.invoke(cli, ["recommend", str(run), "--user", "nobody"])
    assert res.exit_code != 0 and "unknown user id" in res.output

    # rerunning a finished run is refused unless --resume (which skips it)
    res = runner.invoke(
        cli, ["train", "--recipe", "demo", "--name", "tiny", "--output-dir", "runs", "-q", *TINY]
    )
    assert res.exit_code != 0
    res = runner.invoke(
        cli, ["train", "--recipe", "demo", "--name", "tiny", "--output-dir", "runs", "-q", "--resume", *TINY]
    )
    assert res.exit_code == 0, res.output


def test_bad_override_names_the_key(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["train", "--recipe", "demo", "--set", "model.alpah=1"])
    assert res.exit_code != 0
    assert "alpah" in str(res.exception) + res.output


def test_a_run_directory_is_used_by_one_process_at_a_time(tmp_path) -> None:
    import subprocess
    import sys

    from esrkit.training.rundir import RunDir

    path = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from esrkit.training.rundir import RunDir; RunDir(sys.argv[1]).lock(); "
                "print('locked', flush=True); time.sleep(30)"
            ),
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        try:
            RunDir(path).lock()
            raise AssertionError("a second process could lock the same run directory")
        except RuntimeError as exc:
            assert "in use by another process" in str(exc)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    RunDir(path).lock().unlock()  # free again once the holder is gone


def test_neighbours_are_matched_by_user_id_not_position() -> None:
    import numpy as np
    import pytest

    from esrkit.data.sequences import SequenceData
    from esrkit.index import NeighbourTable
    from esrkit.runs.inputs import neighbour_rows

    data = SequenceData.from_sequences([[1, 2, 3]] * 4, n_items=3, user_ids=["a", "b", "c", "d"])
    # a table stored in another user order (b, a, c, d): b -> a, c;  a -> b, d;  c -> a, b;  d -> c, a
    table = NeighbourTable(
        rows=np.array([[1, 2], [0, 3], [1, 0], [2, 1]], dtype=np.int32), user_ids=["b", "a", "c", "d"]
    )
    got = neighbour_rows(table, data, 2)
    # in dataset rows (a=0, b=1, c=2, d=3): a -> b, d;  b -> a, c;  c -> a, b;  d -> c, a
    assert got.tolist() == [[1, 3], [0, 2], [0, 1], [2, 0]]
    assert got.tolist() != table.first(2).tolist()  # position alone would be wrong
    other = SequenceData.from_sequences([[1, 2, 3]] * 2, n_items=3, user_ids=["a", "z"])
    with pytest.raises(ValueError, match="no entry"):
        neighbour_rows(table, other, 2)


def test_demo_runs_on_one_thread_unless_the_user_chose() -> None:
    from esrkit.cli.demo import demo_threads

    assert demo_threads(None, {}) == 1  # small models: one thread is fastest (benchmarks/RESULTS.md)
    assert demo_threads(None, {"OMP_NUM_THREADS": "4"}) is None  # the user's environment wins
    assert demo_threads(3, {"OMP_NUM_THREADS": "4"}) == 3  # and the option wins over it
    assert demo_threads(0, {}) is None  # 0: torch's own default
    res = CliRunner().invoke(cli, ["demo", "--threads", "-1"])
    assert res.exit_code != 0 and "--threads" in res.output
