"""Nothing damaged is used silently: checkpoint hashes, resumable run folders, real items only in
recommendations."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.training import checkpoint as ckpt
from esrkit.training.rundir import RunDir
from tests.conftest import TINY_RUN, copy_tree

RUN = "runs/tiny/seed-42"
TINY_ARGS = [arg for option in TINY_RUN for arg in ("--set", option)]


def flip(path, n: int = 256) -> None:
    """Overwrite ``n`` bytes in the middle of a file (the tensor data, past the safetensors header)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + n] = bytes(255 - b for b in data[middle : middle + n])
    path.write_bytes(bytes(data))


@pytest.fixture
def run_tree(tiny_run_tree, tmp_path, monkeypatch):
    copy_tree(tiny_run_tree, tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_checkpoint_has_its_hash_recorded(run_tree) -> None:
    checkpoints = run_tree / RUN / "checkpoints"
    record = json.loads((checkpoints / "hashes.json").read_text())["files"]
    for name in ("best.safetensors", "last.safetensors"):
        data = (checkpoints / name).read_bytes()
        assert record[name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_evaluate_refuses_a_damaged_best_checkpoint(run_tree) -> None:
    best = run_tree / RUN / "checkpoints" / "best.safetensors"
    flip(best)
    res = CliRunner().invoke(cli, ["evaluate", RUN, "--json"])
    assert res.exit_code != 0
    message = str(res.exception)
    assert isinstance(res.exception, ckpt.CheckpointError), res.output
    assert str(best.relative_to(run_tree)) in message and "damaged" in message and "Retrain" in message


def test_recommend_refuses_a_damaged_best_checkpoint(run_tree) -> None:
    flip(run_tree / RUN / "checkpoints" / "best.safetensors", n=4)
    res = CliRunner().invoke(cli, ["recommend", RUN, "--user", "U000001"])
    assert res.exit_code != 0 and isinstance(res.exception, ckpt.CheckpointError)


def test_resume_refuses_a_damaged_last_checkpoint_and_changes_nothing(run_tree) -> None:
    run = run_tree / RUN
    (run / "results.json").unlink()  # an unfinished run
    flip(run / "checkpoints" / "last.safetensors")
    before = snapshot(run_tree)
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--recipe",
            "demo",
            "--name",
            "tiny",
            "-q",
            "--resume",
            *TINY_ARGS,
            "--set",
            "train.epochs=3",
        ],
    )
    assert res.exit_code != 0
    assert isinstance(res.exception, ckpt.CheckpointError) and "last.safetensors" in str(res.exception)
    assert "--resume cannot continue" in str(res.exception)
    assert snapshot(run_tree) == before  # no training on garbage, no rewritten config or metrics


def test_a_truncated_checkpoint_names_its_file(tmp_path) -> None:
    import torch

    path = tmp_path / "checkpoints" / "best.safetensors"
    ckpt.save_tensors(path, {"w": torch.ones(64, 8)})
    path.write_bytes(path.read_bytes()[:100])
    (path.parent / "hashes.json").unlink()  # only the format check is left to catch it
    with pytest.raises(ckpt.CheckpointError, match="not a readable safetensors") as exc:
        ckpt.load_tensors(path)
    assert str(path) in str(exc.value)


def test_a_write_interrupted_between_file_and_record_still_loads(tmp_path, monkeypatch) -> None:
    """The new hash is recorded as pending before the file is renamed into place, so a crash between the
    rename and the final record leaves a record that accepts the file on disk (and the old one)."""
    import torch

    path = tmp_path / "checkpoints" / "last.safetensors"
    ckpt.save_tensors(path, {"w": torch.zeros(4)})
    old = path.read_bytes()
    calls = []
    real = ckpt._record_hash

    def crash_after_pending(p, entry):
        calls.append(entry)
        if len(calls) == 2:  # the record that would follow the rename
            raise KeyboardInterrupt
        real(p, entry)

    monkeypatch.setattr(ckpt, "_record_hash", crash_after_pending)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_tensors(path, {"w": torch.ones(4)})
    monkeypatch.setattr(ckpt, "_record_hash", real)
    assert path.read_bytes() != old  # the new file is in place, its final record is not
    tensors, _ = ckpt.load_tensors(path)
    assert tensors["w"].tolist() == [1.0] * 4
    path.write_bytes(old)  # as if the crash had come before the rename
    assert ckpt.load_tensors(path)[0]["w"].tolist() == [0.0] * 4
    path.write_bytes(old[:-4] + b"\x00\x00\x80\x7f")  # anything else is still refused
    with pytest.raises(ckpt.CheckpointError, match="damaged"):
        ckpt.load_tensors(path)


def test_a_checkpoint_without_a_record_loads_with_a_warning(tmp_path, caplog) -> None:
    import torch

    path = tmp_path / "best.safetensors"
    ckpt.save_tensors(path, {"w": torch.arange(3.0)})
    (tmp_path / "hashes.json").unlink()  # written by an esrkit that recorded no hashes
    with caplog.at_level(logging.WARNING):
        tensors, _ = ckpt.load_tensors(path)
    assert tensors["w"].tolist() == [0.0, 1.0, 2.0] and "unverified" in caplog.text


def test_a_run_that_failed_before_its_first_epoch_does_not_block_the_same_command(run_tree) -> None:
    """A start that failed early leaves config.json and nothing trained; the same command starts afresh."""
    args = ["train", "--recipe", "demo", "--name", "early", "-q", *TINY_ARGS]
    run = run_tree / "runs" / "early" / "seed-42"
    RunDir(run).create({"name": "early", "train": {"seed": 42}}, {})  # the failed start: a different config
    (run / "metrics.jsonl").write_text("")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    config = json.loads((run / "config.json").read_text())
    assert (run / "results.json").exists() and config["name"] == "early"
    assert config["model"]["name"] == "llmesr"
    res = CliRunner().invoke(cli, args)  # a finished run is still protected
    assert res.exit_code != 0 and "finished run" in str(res.exception)


def test_recommend_never_lists_padding_or_history(run_tree) -> None:
    from esrkit.runs.load import load_run
    from esrkit.serving import ServedModel

    run = load_run(RUN, "cpu")
    data = run.inputs.data
    served = ServedModel.from_run(run)
    user = data.user_ids[0]
    history = set(data.sequence(0).tolist())
    items = served.recommend_known(user, k=10 * data.n_items)
    ids = [int(i) for i in served.item_index([r.item for r in items], where="result")]
    assert len(ids) == len(set(ids)) == data.n_items - len(history)
    assert min(ids) >= 1 and max(ids) <= data.n_items and not history & set(ids)
    assert np.isfinite([r.score for r in items]).all()
    assert len(served.recommend_known(user, k=10 * data.n_items, exclude_history=False)) == data.n_items
    res = CliRunner().invoke(cli, ["recommend", RUN, "--user", "#0", "-k", "100000"])
    assert res.exit_code == 0, res.output
    assert f"only {data.n_items - len(history)} items can be recommended" in res.output
    assert "-inf" not in res.output
