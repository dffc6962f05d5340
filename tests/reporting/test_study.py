"""The provider study runs every arm, writes its table, gains and stage times (tiny, fast settings)."""

from __future__ import annotations

import json
import shutil

import pytest

from esrkit.runs.study import StudyPlan, run_study


@pytest.mark.slow
def test_provider_study_end_to_end(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plan = StudyPlan(
        recipe="demo",
        providers=["offline"],
        seeds=[42, 43],
        overrides=[
            "train.epochs=1",
            "train.max_batches_per_epoch=2",
            "data.synthetic={n_users=300, n_items=300}",
            "eval.batch_size=256",
        ],
        output_dir=str(tmp_path / "runs"),
        user_provider="offline",
    )
    names = [n for n, _, _ in plan.runs()]
    assert names == ["id", "llmesr-offline", "llminit-offline", "llmesr-random", "llminit-random"]
    report = run_study(plan, progress=False, log=lambda m: None)
    assert not report["failures"]
    assert set(report["runs"]) == set(names)
    md = (plan.folder / "study.md").read_text()
    assert "LLM-ESR (offline)" in md and "SASRec (no LLM)" in md and "full ranking" in md
    saved = json.loads((plan.folder / "study.json").read_text())
    gains = [g for g in saved["gains"] if g["provider"] == "offline" and g["versus"] == "id"]
    assert {g["protocol"] for g in gains} == {"sampled", "full"}
    assert all(len(g["seeds"]) == 2 for g in gains)
    assert saved["stages"]["llmesr-offline"]["train"] > 0
    assert (plan.folder / "study.png").stat().st_size > 1000
    # the random control really used random item vectors while retrieval stayed on the fixed user provider
    cfg = json.loads((plan.folder / "llmesr-random" / "seed-42" / "config.json").read_text())
    assert cfg["embedding"]["provider"] == "random" and cfg["embedding"]["user_provider"] == "offline"

    # a later call with other providers (here: only the finished LLMInit-random arm, so nothing trains)
    # extends the study's report with its own rows instead of replacing the earlier providers' rows
    # a run another process is still training (no finished seed): left out of every table, stage rows included
    (plan.folder / "llmesr-other" / "seed-42").mkdir(parents=True)
    (plan.folder / "llmesr-other" / "seed-42" / "config.json").write_text("{}")
    later = StudyPlan(
        recipe="demo",
        providers=["random"],
        models=["llminit"],
        controls=False,
        seeds=[42],
        overrides=plan.overrides,
        output_dir=plan.output_dir,
        user_provider="offline",
    )
    again = run_study(later, progress=False, log=lambda m: None)
    assert again["runs"] == names  # every row, in the study's order: backbone, providers, random control last
    assert set(again["stages"]) == set(names)  # not the unfinished llmesr-other
    assert again["providers"] == ["offline", "random"]
    assert "study_wall_s" in again["stages"]["llminit-random"]  # this call's run: its wall time in this call
    assert (
        "study_wall_s" not in again["stages"]["llmesr-offline"]
    )  # an earlier call's: its recorded costs only
    assert again["stages"]["llmesr-offline"]["train"] == saved["stages"]["llmesr-offline"]["train"]
    md = (plan.folder / "study.md").read_text()
    assert "LLM-ESR (offline)" in md and "SASRec (no LLM)" in md
    assert "Providers: offline; controls: the backbone without LLM embeddings and random embeddings." in md

    # --report-only: a provider nobody trained and the unfinished run get no row, and nothing is trained
    folders = sorted(d.name for d in plan.folder.iterdir())
    report_only = StudyPlan(
        recipe="demo",
        providers=["offline", "minilm"],
        seeds=[42],
        overrides=plan.overrides,
        output_dir=plan.output_dir,
        user_provider="offline",
    )
    third = run_study(report_only, progress=False, log=lambda m: None, train_runs=False)
    assert sorted(d.name for d in plan.folder.iterdir()) == folders  # no run folder was created
    assert third["runs"] == names and set(third["stages"]) == set(names) and not third["failures"]
    assert all("study_wall_s" not in s for s in third["stages"].values())
    assert "Nothing trained by this call (--report-only)" in (plan.folder / "study.md").read_text()
    assert len(json.loads((plan.folder / "study.json").read_text())["gains"]) == len(saved["gains"])

    # the record: study.json keeps every seed's small files, so the report outlives its run folders...
    tables = (plan.folder / "study.csv").read_text()
    shutil.rmtree(plan.folder / "llminit-offline")
    run_study(report_only, progress=False, log=lambda m: None, train_runs=False)
    assert (plan.folder / "study.csv").read_text() == tables
    published = tmp_path / "published-study.json"
    shutil.copy(plan.folder / "study.json", published)
    assert set(json.loads(published.read_text())["records"]["llmesr-offline"]) == {"42", "43"}

    # ...rebuilds without any of them from a published copy (stage costs included)...
    shutil.rmtree(plan.folder)
    rebuilt = run_study(
        report_only, progress=False, log=lambda m: None, train_runs=False, record_files=[published]
    )
    assert (plan.folder / "study.csv").read_text() == tables and rebuilt["runs"] == names
    assert rebuilt["stages"]["llmesr-offline"]["train"] == saved["stages"]["llmesr-offline"]["train"]
    assert len(rebuilt["gains"]) == len(saved["gains"])

    # ...and is extended by a seed trained elsewhere, later, with the same experiment
    shutil.rmtree(plan.folder)
    more = StudyPlan(
        recipe="demo",
        providers=["random"],
        models=["llminit"],
        controls=False,
        seeds=[44],
        overrides=plan.overrides,
        output_dir=plan.output_dir,
        user_provider="offline",
    )
    extended = run_study(more, progress=False, log=lambda m: None, record_files=[published])
    assert extended["runs"] == names
    assert set(extended["records"]["llminit-random"]) == {"42", "43", "44"}
    assert set(extended["records"]["llmesr-random"]) == {"42", "43"}
    gain = next(g for g in extended["gains"] if g["provider"] == "random" and g["versus"] == "llminit-random")
    assert gain["seeds"] == [2, 3]
    # a seed of another experiment under the same name is refused before anything trains
    other = StudyPlan(
        recipe="demo",
        providers=["random"],
        models=["llminit"],
        controls=False,
        seeds=[45],
        overrides=[*plan.overrides, "model.dropout=0.1"],
        output_dir=str(tmp_path / "other"),
        user_provider="offline",
    )
    with pytest.raises(
        ValueError, match=r"run 'llminit-random': its recorded seeds \(42, 43\) .* model\.dropout"
    ):
        run_study(other, progress=False, log=lambda m: None, record_files=[published])
    assert not (tmp_path / "other").exists()


def test_random_control_width_follows_random_dim_and_only_the_random_runs() -> None:
    def options(plan: StudyPlan) -> dict[str, dict]:
        return {name: plan.config(name, extra).embedding.options for name, _, extra in plan.runs()}

    default = options(StudyPlan(recipe="demo", providers=["offline"]))
    assert all(o == {} for o in default.values())  # unchanged configs: earlier studies still resume
    matched = options(StudyPlan(recipe="demo", providers=["offline"], random_dim=384))
    assert matched["llmesr-random"] == {"dim": 384} and matched["llminit-random"] == {"dim": 384}
    assert matched["llmesr-offline"] == {} and matched["id"] == {}

    from esrkit.providers import load_provider

    provider = load_provider("random", **matched["llmesr-random"])  # as the training pipeline builds it
    assert provider.embed(["a", "b"]).shape == (2, 384)


def test_dry_run_prints_train_commands_that_rebuild_each_runs_exact_config(tmp_path) -> None:
    import shlex

    from click.testing import CliRunner

    from esrkit.cli.main import cli
    from esrkit.cli.train import _resolve, train

    args = [
        "study",
        "providers",
        "-r",
        "demo",
        "-p",
        "offline",
        "--user-provider",
        "offline",
        "--seeds",
        "42,44",
        "--set",
        "train.patience=5",
        "--set",
        "data.synthetic={n_users=300, n_items=300}",
        "--random-dim",
        "384",
        "--output-dir",
        str(tmp_path / "runs"),
        "--dry-run",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    plan = StudyPlan(
        recipe="demo",
        providers=["offline"],
        seeds=[42, 44],
        user_provider="offline",
        random_dim=384,
        overrides=["train.patience=5", "data.synthetic={n_users=300, n_items=300}"],
        output_dir=str(tmp_path / "runs"),
    )
    assert len(lines) == len(plan.runs()) == 5
    for line, (run_name, _, extra) in zip(lines, plan.runs()):
        argv = shlex.split(line)
        assert argv[:2] == ["esrkit", "train"] and argv[-3:] == ["--seeds", "42,44", "--resume"]
        params = train.make_context("train", argv[2:]).params
        cfg = _resolve(
            params["recipe"],
            params["provider"],
            params["sets"],
            params["name"],
            params["output_dir"],
            params["workdir"],
        )
        assert cfg.to_dict() == plan.config(run_name, extra).to_dict()
    assert not (tmp_path / "runs").exists()  # nothing trained, no folder


def test_a_study_of_llmesr_alone_says_why_it_has_no_gains() -> None:
    from pathlib import Path

    from esrkit.reporting.collect import run_from_records
    from esrkit.reporting.study import gains_markdown, gains_table

    def run(name: str, model: str, ndcg: float):
        results = {"test": {"sampled": {"overall": {"ndcg@10": ndcg, "hr@10": 2 * ndcg}}}}
        return run_from_records(
            name, Path(name), {"44": {"results": results, "config": {"model": {"name": model}}}}
        )

    alone = gains_table([run("llmesr-random", "llmesr", 0.30)])
    assert alone == [] and gains_markdown(alone).startswith("No gains to show")
    paired = gains_table([run("llmesr-random", "llmesr", 0.30), run("id", "id", 0.25)])
    assert [(g["versus"], g["metric"], round(g["gain_pct"], 6)) for g in paired] == [
        ("id", "ndcg@10", 20.0),
        ("id", "hr@10", 20.0),
    ]
    assert "| random | id | sampled | +20.0% | – | – | +20.0% |" in gains_markdown(paired)
    zero = gains_table([run("llmesr-random", "llmesr", 0.30), run("id", "id", 0.0)])
    assert "| random | id | sampled | 0.3000 vs 0 | – | – | 0.6000 vs 0 |" in gains_markdown(
        zero
    )  # not "+nan%"


def test_diverged_seeds_are_listed() -> None:
    from esrkit.reporting.study import diverged_seeds

    records = {
        "llminit-random": {
            "42": {"results": {"diverged_epoch": 8, "best_epoch": 7}},
            "43": {"results": {"diverged_epoch": None, "best_epoch": 9}},
        },
        "id": {"42": {"results": {"best_epoch": 5}}},
    }  # written before diverged_epoch existed
    assert diverged_seeds(records) == ["- llminit-random seed 42: diverged at epoch 8, best epoch 7"]
