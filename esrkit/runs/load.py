"""A trained run back in memory: its config, inputs and best checkpoint, for evaluation, serving and
figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import esrkit
from esrkit.config import RANKING_OPTIONS, ConfigError, RunConfig, config_from_dict, validate
from esrkit.data.sequences import SequenceData
from esrkit.data.tensors import DeviceSequences
from esrkit.evaluation.evaluator import Evaluator
from esrkit.models import build_model, model_class
from esrkit.runs.inputs import RunInputs, prepare_inputs
from esrkit.runs.train import add_cold_items, cold_evaluator, evaluators
from esrkit.training import checkpoint as ckpt
from esrkit.training.rundir import RunDir, git_commit
from esrkit.utils.io import read_json
from esrkit.utils.runtime import resolve_device


@dataclass
class LoadedRun:
    cfg: RunConfig
    inputs: RunInputs
    model: Any
    seqs: DeviceSequences  # sequences of ``data``
    run_dir: RunDir
    data: SequenceData  # the model's users and items (inputs.catalogue once cold items are added)


def with_ranking_options(cfg: RunConfig, ranking: dict[str, float], run_path: Path) -> None:
    """``cfg`` with the ranking-time model options in ``ranking`` replaced, re-validated; an error names the
    option as the command line spells it and the run."""
    unknown = sorted(set(ranking) - set(RANKING_OPTIONS))
    if unknown:
        raise ConfigError(
            f"not ranking-time options: {', '.join(unknown)} (they are {', '.join(RANKING_OPTIONS)})"
        )
    for name, value in ranking.items():
        setattr(cfg.model, name, value)
    try:
        validate(cfg)
    except ConfigError as exc:
        problem = str(exc).split("\n  ")[-1]
        given = " ".join(f"--{name.replace('_', '-')} {value:g}" for name, value in ranking.items())
        raise ConfigError(f"{given} does not fit {run_path}: {problem}") from None


def load_run(
    run_dir: str | Path,
    device: str = "auto",
    need_neighbours: bool = False,
    add_cold: bool = True,
    ranking: dict[str, float] | None = None,
) -> LoadedRun:
    """Rebuild a trained model from its run directory (config + best checkpoint); no LLM call is made when the
    embeddings are cached. Fingerprints are checked, so a changed dataset or embedding is an error. A
    cold-item run's held-out items are added as its test added them (``add_cold=False``: the warm model it
    validated). ``ranking`` replaces some of the run's ranking-time model options (``config.RANKING_OPTIONS``,
    e.g. ``{"neighbour_boost": 0.5}``), which training does not use, so they can be chosen on validation
    after training."""
    rd = RunDir(run_dir)
    if not (rd.path / "config.json").exists():
        raise FileNotFoundError(f"{rd.path} is not an esrkit run directory (no config.json)")
    cfg = run_config(rd)
    if ranking:
        with_ranking_options(cfg, ranking, rd.path)
    if not need_neighbours:
        cfg.model.alpha = 0.0 if model_class(cfg.model.name).uses_distillation else cfg.model.alpha
    # a family with nothing to learn (popularity) saves no checkpoint: it is fitted again from the data
    trained = model_class(cfg.model.name).trainable
    if trained and not rd.best.exists():
        raise FileNotFoundError(f"{rd.path} has no best checkpoint yet")
    if rd.best.exists():
        ckpt.verify_checkpoint(
            rd.best
        )  # before the inputs are rebuilt: a damaged file fails without that work
    inputs = prepare_inputs(cfg)
    recorded = read_json(rd.path / "provenance.json").get("fingerprints", {})
    if recorded.get("data") and recorded["data"] != inputs.fingerprints["data"]:
        raise ValueError(f"{rd.path}: the dataset changed since training (fingerprint mismatch)")
    dev = resolve_device(device)
    model = build_model(cfg.model, inputs.data.n_items, cfg.data.max_len, inputs.assets).to(dev)
    if rd.best.exists():
        ckpt.load_model(rd.best, model)
        model.restore_state(inputs.data)
    else:
        model.setup(inputs.data)
    model.eval()
    data = inputs.data
    if inputs.cold is not None and add_cold:
        add_cold_items(model, cfg, inputs, cfg.train.seed)
        data = inputs.catalogue
    return LoadedRun(cfg, inputs, model, DeviceSequences(data, dev), rd, data)


def run_config(rd: RunDir) -> RunConfig:
    """A run's config.json as a RunConfig; an error names the file and which esrkit wrote it (an unknown key
    usually means a newer one)."""
    try:
        return config_from_dict(rd.config())
    except ConfigError as exc:
        raise ConfigError(f"{rd.path / 'config.json'}: {exc}{_written_by(rd)}") from None


def _written_by(rd: RunDir) -> str:
    try:
        env = read_json(rd.path / "provenance.json").get("environment", {})
    except (OSError, ValueError):
        return ""
    then = f"{env.get('versions', {}).get('esrkit', '?')} (commit {env.get('git_commit') or '?'})"
    now = f"{esrkit.__version__} (commit {git_commit() or '?'})"
    return (
        f"\nthe run was written by esrkit {then}; this is esrkit {now}. A key this esrkit does not know "
        "means a newer esrkit wrote the run: evaluate it with that version (or update esrkit)."
    )


def run_evaluator(run: LoadedRun, split: str, new_items: bool = False) -> Evaluator:
    """The evaluator ``esrkit train`` used for ``split`` of this run (a cold-item run's test: the full
    data). ``new_items``: a cold-item run's validation with its held-out items added, as at test."""
    seed = run.cfg.train.seed
    if new_items and run.inputs.cold is None:
        raise ConfigError(
            f"{run.run_dir.path}: validating with new items needs a run trained with data.cold_items > 0"
        )
    if (split == "test" or new_items) and run.inputs.cold is not None:
        if run.data is not run.inputs.catalogue:
            raise ValueError(f"cold-item {split}: add the held-out items first (load_run(add_cold=True))")
        return cold_evaluator(run.cfg, run.inputs.cold, run.seqs.device, seed, split=split)
    if run.inputs.cold is not None and run.data is not run.inputs.data:
        raise ValueError("validation of a cold-item run uses the warm model (load_run(add_cold=False))")
    valid, test = evaluators(run.cfg, run.inputs.data, run.seqs, seed)
    return valid if split == "valid" else test
