"""load_run brings every family back, including those that save no checkpoint."""

from __future__ import annotations

from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.runs.load import load_run
from tests.conftest import TINY_RUN

TINY_ARGS = [arg for option in TINY_RUN for arg in ("--set", option)]


def test_a_popularity_run_loads_and_recommends(tmp_path, monkeypatch) -> None:
    """Popularity learns nothing and saves no checkpoint: loading fits it again from the data."""
    monkeypatch.chdir(tmp_path)
    args = [
        "train",
        "--recipe",
        "demo",
        "--name",
        "pop",
        "-q",
        *TINY_ARGS,
        "--set",
        "model.name=pop",
        "--set",
        "embedding.provider=none",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    run = load_run(tmp_path / "runs" / "pop" / "seed-42", "cpu")
    counts = run.model.scores[1:, 0].exp() - 1  # log1p of the training counts
    assert (
        counts.max() > 0 and abs(float(counts.sum()) - run.inputs.data.split_lengths("train")[0].sum()) < 1e-3
    )
    res = CliRunner().invoke(cli, ["recommend", str(tmp_path / "runs" / "pop" / "seed-42"), "--user", "#0"])
    assert res.exit_code == 0, res.output
    assert "1. item" in res.output
