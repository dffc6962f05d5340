"""What ``esrkit report --figures`` draws, from run folders: the figures that need a dataset or trained
models.

The drawing itself is esrkit/reporting/figures.py; this module loads what it needs (a run's dataset for
Figure 1, the best checkpoints' item vectors for Figure 5), which reporting, reading run folders only, never
does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from esrkit.config import config_from_dict
from esrkit.data.sequences import SequenceData
from esrkit.reporting.collect import BACKBONE_LABELS, MODEL_LABELS, Run, dataset_names, group_runs
from esrkit.reporting.figures import figure_groups, figure_longtail, figure_sweep, figure_tsne
from esrkit.reporting.sweep import load_sweep
from esrkit.reporting.tables import backbone_label, pick_reference, slug
from esrkit.runs.inputs import load_data
from esrkit.runs.load import load_run


def tsne_panels(
    run_dirs: list[str | Path], device: str = "cpu"
) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """(panels, popularity) from seed folders: each run's ``all_item_vectors()`` of its best checkpoint, then
    the raw LLM item embeddings (once) when a run loaded them. Runs must share a dataset."""
    panels: list[tuple[str, np.ndarray]] = []
    llm, popularity, fingerprint = None, None, None
    for run_dir in run_dirs:
        run = load_run(run_dir, device, add_cold=False)
        fp = run.inputs.fingerprints.get("data")
        if fingerprint is not None and fp != fingerprint:
            raise ValueError(f"{run_dir}: another dataset than {run_dirs[0]}; one t-SNE figure per dataset")
        fingerprint = fp
        with torch.no_grad():
            vectors = run.model.all_item_vectors()[1 : run.inputs.data.n_items + 1].float().cpu().numpy()
        m = run.cfg.model
        label = (
            BACKBONE_LABELS.get(m.backbone, m.backbone)
            if m.name == "id"
            else MODEL_LABELS.get(m.name, m.name)
        )
        panels.append((f"{label} ({run.cfg.name}) d={vectors.shape[1]}", vectors))
        if llm is None and run.inputs.assets.llm_items is not None:
            llm = np.asarray(run.inputs.assets.llm_items)
        popularity = run.inputs.data.item_popularity()[1:]
    if llm is not None:
        panels.append((f"raw LLM item embeddings d={llm.shape[1]}", llm))
    assert popularity is not None
    return panels, popularity


def _fig5_runs(block: list[Run]) -> list[Run]:
    """The runs Figure 5 compares: the plain backbone, LLMInit and the full LLM-ESR (those present)."""
    picked = [next((r for r in block if r.model == m), None) for m in ("id", "llminit")]
    picked.append(pick_reference([r for r in block if r.is_proposed]))
    return [r for r in picked if r is not None]


def _load_dataset(run: Run) -> Any:
    return load_data(config_from_dict(run.config))


def _figure1(
    runs: list[Run], out: Path, protocol: str, dataset: str | Path | None, metric: str
) -> list[tuple[str, Any]]:
    if dataset:
        data = SequenceData.load(dataset)
        mine = sorted(
            (r for r in runs if r.dataset_key == data.fingerprint()), key=lambda r: (r.order, r.label)
        )
        path = out / f"figure1-{slug(data.name)}.png"
        figure_longtail(data, path, mine, protocol, metric)
        return [("fig1", path)]
    if not runs:
        return [("fig1", "no runs and no --dataset")]
    names = dataset_names(runs)
    done: list[tuple[str, Any]] = []
    for key, name in names.items():
        mine = sorted((r for r in runs if r.dataset_key == key), key=lambda r: (r.order, r.label, r.name))
        path = out / f"figure1-{slug(name)}-{protocol}.png"
        figure_longtail(
            _load_dataset(mine[0]),
            path,
            mine,
            protocol,
            metric,
            mine[0].config.get("data", {}).get("max_len", 200),
        )
        done.append(("fig1", path))
    return done


def draw_figures(
    names: list[str],
    runs: list[Run],
    sweeps: list[Path],
    out: Path,
    protocols: tuple[str, ...] = ("sampled",),
    dataset: str | Path | None = None,
    metric: str = "ndcg@10",
    tsne_items: int = 3000,
    device: str = "cpu",
) -> list[tuple[str, Any]]:
    """What ``esrkit report --figures`` draws: (name, Path written or the reason it was skipped)."""
    done: list[tuple[str, Any]] = []
    blocks = group_runs(runs)
    if "fig1" in names:
        done += _figure1(runs, out, protocols[0], dataset, metric)
    if "fig3" in names:
        for sweep_path in sweeps:
            path = out / f"figure3-{slug(sweep_path.parent.name)}.png"
            figure_sweep(load_sweep(sweep_path), path)
            done.append(("fig3", path))
        if not sweeps:
            done.append(("fig3", "no sweep.json under the given paths"))
    if "fig4" in names:
        for (ds, backbone), block in blocks.items():
            for protocol in protocols:
                path = out / f"figure4-{slug(ds)}-{backbone}-{protocol}.png"
                figure_groups(block, path, protocol, title=f"{ds} / {backbone_label(backbone)}")
                done.append(("fig4", path))
    if "fig5" in names:
        for (ds, backbone), block in blocks.items():
            chosen = _fig5_runs(block)
            if not chosen:
                continue
            panels, pop = tsne_panels([r.seed_dir() for r in chosen], device)
            path = out / f"figure5-{slug(ds)}-{backbone}.png"
            figure_tsne(
                panels,
                pop,
                path,
                max_items=tsne_items,
                title=f"{ds} / {backbone_label(backbone)}: t-SNE of item embeddings by popularity",
            )
            done.append(("fig5", path))
    return done
