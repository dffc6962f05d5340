"""Load finished runs from run directories, so every table and figure reads the same numbers.

A *run* is ``<output_dir>/<name>/`` with one ``seed-<seed>/`` folder per seed (see esrkit/training/rundir.py).
``collect_runs`` accepts a run folder, a single seed folder or any parent holding many runs, and returns one
``Run`` per run name with the per-seed ``results.json`` (test *and* validation metrics), the resolved config
and the provenance. Per-seed values are kept: means and stds are computed here, t-tests need the values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from esrkit.utils.io import read_json

SEED_DIR = re.compile(r"^seed-(-?\d+)$")
MAX_DEPTH = 6  # how deep collect_runs looks under a parent folder

# model registry name -> display name (the paper's spelling); the plain backbone gets its own name.
MODEL_LABELS = {
    "llmesr": "LLM-ESR",
    "llminit": "LLMInit",
    "cities": "CITIES",
    "melt": "MELT",
    "rlmrec": "RLMRec",
    "pop": "Pop",
    "popularity": "Pop",
}
BACKBONE_LABELS = {"sasrec": "SASRec", "bert4rec": "Bert4Rec", "gru4rec": "GRU4Rec"}
# the paper's Table 1 row order: backbone, long-tail baselines, LLM baselines, LLM-ESR
MODEL_ORDER = {
    "pop": -1,
    "popularity": -1,
    "id": 0,
    "cities": 1,
    "melt": 2,
    "rlmrec": 3,
    "llminit": 4,
    "llmesr": 6,
}
BACKBONE_ORDER = {"sasrec": 0, "bert4rec": 1, "gru4rec": 2}  # the paper's block order
PROPOSED = {"llmesr"}

SeedRecord = dict[str, Any]  # one finished seed: {"results": ..., "config": ..., "provenance": ...}
RunRecords = dict[str, SeedRecord]  # seed (as a string, JSON keys) -> its record


def _read_json(path: Path) -> Any:
    # results may hold NaN for empty groups: Python's json reads it; a damaged file is an error naming it
    return read_json(path)


@dataclass
class Run:
    """One run name: its seeds' results, config and provenance."""

    name: str
    path: Path
    config: dict[str, Any]
    provenance: dict[str, Any]
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> results.json
    summary: dict[str, Any] | None = None  # summary.json when there are no per-seed results

    # ------------------------------------------------------------------ identity
    @property
    def model(self) -> str:
        return str(self.config.get("model", {}).get("name") or self._first("model") or "?")

    @property
    def backbone(self) -> str:
        return str(self.config.get("model", {}).get("backbone") or self._first("backbone") or "?")

    @property
    def seeds(self) -> list[int]:
        if self.results:
            return sorted(self.results)
        return list((self.summary or {}).get("seeds", []))

    @property
    def is_proposed(self) -> bool:
        return self.model in PROPOSED

    @property
    def dataset_key(self) -> str:
        """The data fingerprint (provenance) when known: two runs on different data never share a table."""
        fp = self.provenance.get("fingerprints", {}).get("data")
        if fp:
            return str(fp)
        data = self.config.get("data", {})
        return str(data.get("path") or data.get("name") or data.get("source") or "unknown")

    @property
    def dataset_name(self) -> str:
        data = self.config.get("data", {})
        return str(
            data.get("name") or Path(str(data.get("path") or "")).name or data.get("source") or "dataset"
        )

    @property
    def label(self) -> str:
        """The paper's row name: the backbone for plain ID models, else the model family."""
        if self.model == "id":
            return BACKBONE_LABELS.get(self.backbone, self.backbone)
        return MODEL_LABELS.get(self.model, self.model)

    @property
    def order(self) -> float:
        return MODEL_ORDER.get(self.model, 5)

    def protocol_title(self, protocol: str) -> str:
        negatives = self.config.get("eval", {}).get("negatives", 100)
        return protocol_title(protocol, negatives)

    def _first(self, key: str) -> Any:
        for res in self.results.values():
            return res.get(key)
        return (self.summary or {}).get(key)

    # ------------------------------------------------------------------ numbers
    def values(self, protocol: str, group: str, metric: str, split: str = "test") -> list[float]:
        """Per-seed values (seed order); [] when the group/metric is missing or empty (NaN) in any seed."""
        if self.results:
            out = []
            for seed in self.seeds:
                v = self.results[seed].get(split, {}).get(protocol, {}).get(group, {}).get(metric)
                if v is None or not math.isfinite(float(v)):
                    return []
                out.append(float(v))
            return out
        if split != "test" or not self.summary:
            return []
        entry = self.summary.get("test", {}).get(protocol, {}).get(group, {}).get(metric)
        if not entry:
            return []
        vals = [float(v) for v in entry.get("values", [entry.get("mean")])]
        return vals if all(math.isfinite(v) for v in vals) else []

    def users(self, protocol: str, group: str, split: str = "test") -> int | None:
        for seed in self.seeds[:1]:
            n = self.results[seed].get(split, {}).get(protocol, {}).get(group, {}).get("users")
            return None if n is None else int(n)
        return None

    def mean(self, protocol: str, group: str, metric: str, split: str = "test") -> float:
        vals = self.values(protocol, group, metric, split)
        return float(np.mean(vals)) if vals else float("nan")

    def protocols(self, split: str = "test") -> list[str]:
        if self.results:
            first = self.results[self.seeds[0]]
            return list(first.get(split, {}))
        return list((self.summary or {}).get("test", {})) if split == "test" else []

    def seed_dir(self, seed: int | None = None) -> Path:
        seed = self.seeds[0] if seed is None else seed
        return self.path / f"seed-{seed}"


def unique_labels(runs: list[Run]) -> list[str]:
    """Row / legend labels: two runs of one family (e.g. two LLM-ESR settings) get their run name added."""
    labels = [r.label for r in runs]
    return [f"{lab} [{r.name}]" if labels.count(lab) > 1 else lab for lab, r in zip(labels, runs)]


def protocol_title(protocol: str, negatives: int = 100) -> str:
    """Every output names its protocol: the paper's sampled one and full ranking are not comparable."""
    if protocol == "sampled":
        return f"paper protocol: target + {negatives} sampled negatives"
    if protocol == "full":
        return "full ranking over all items"
    return protocol


# ---------------------------------------------------------------------------------------------- loading
def _seed_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and SEED_DIR.match(p.name))


def folder_records(run_folder: Path, only_seed: int | None = None) -> RunRecords:
    """The finished seeds of a run folder, each as its three small files (a seed without ``results.json`` is
    still training: left out); with ``only_seed``, just that seed."""
    out: RunRecords = {}
    if not run_folder.is_dir():
        return out
    for seed_dir in _seed_dirs(run_folder):
        seed = SEED_DIR.match(seed_dir.name).group(1)
        if only_seed is not None and int(seed) != only_seed:
            continue
        if (record := seed_record(seed_dir)) is not None:
            out[seed] = record
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def seed_record(seed_dir: Path) -> SeedRecord | None:
    """One seed folder's three small files, or None while it has no ``results.json`` (still training)."""
    if not (seed_dir / "results.json").exists():
        return None
    return {
        part: _read_json(seed_dir / f"{part}.json") if (seed_dir / f"{part}.json").exists() else {}
        for part in ("results", "config", "provenance")
    }


def run_from_records(name: str, path: Path, records: RunRecords) -> Run | None:
    """A Run from seed records (a run folder's or a study's, see records.py); None without any seed. Config
    and provenance come from the first seed that has them: merged seeds describe the same experiment."""
    if not records:
        return None
    config = next((rec["config"] for rec in records.values() if rec.get("config")), {})
    provenance = next((rec["provenance"] for rec in records.values() if rec.get("provenance")), {})
    return Run(
        name=name,
        path=path,
        config=config,
        provenance=provenance,
        results={int(seed): rec["results"] for seed, rec in records.items()},
    )


def read_run(folder: Path, only_seed: int | None = None) -> Run | None:
    """A run folder (``<name>/``) or, with ``only_seed``, just one of its seeds; None when nothing
    finished."""
    records = folder_records(folder, only_seed)
    if records:
        return run_from_records(
            next(iter(records.values()))["results"].get("name") or folder.name, folder, records
        )
    if only_seed is None and (folder / "summary.json").exists():  # no per-seed results: the summary's means
        summary = _read_json(folder / "summary.json")
        return Run(
            name=summary.get("name") or folder.name, path=folder, config={}, provenance={}, summary=summary
        )
    return None


def is_run_folder(folder: Path) -> bool:
    return (folder / "summary.json").exists() or bool(_seed_dirs(folder))


def has_finished_seed(folder: Path) -> bool:
    """True when ``read_run`` would find something to report (a run still training its first seed has
    nothing)."""
    return (folder / "summary.json").exists() or any(
        (d / "results.json").exists() for d in _seed_dirs(folder)
    )


def _find(folder: Path, depth: int) -> Iterable[tuple[Path, int | None]]:
    if SEED_DIR.match(folder.name) and (folder / "config.json").exists():
        yield folder.parent, int(SEED_DIR.match(folder.name).group(1))
        return
    if is_run_folder(folder):
        yield folder, None
        return
    if depth >= MAX_DEPTH:
        return
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if child.name in ("checkpoints", "ranks"):
            continue
        yield from _find(child, depth + 1)


def collect_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every finished run under ``paths`` (run folders, seed folders or parents), each once, in path order."""
    runs: list[Run] = []
    seen: dict[Path, int] = {}
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a folder")
        for folder, seed in _find(path, 0):
            key = folder.resolve()
            run = read_run(folder, seed)
            if run is None:
                continue
            if key in seen:  # a seed folder and its run folder both given: merge seeds
                runs[seen[key]].results.update(run.results)
                continue
            seen[key] = len(runs)
            runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------- grouping
def dataset_names(runs: list[Run]) -> dict[str, str]:
    """dataset key -> display name; when two datasets share a name, the shortest distinguishing fingerprint
    prefix (at least 8 characters) is added."""
    names: dict[str, str] = {}
    for run in runs:
        names.setdefault(run.dataset_key, run.dataset_name)
    out = dict(names)
    for name in set(names.values()):
        keys = [k for k, v in names.items() if v == name]
        if len(keys) < 2:
            continue
        width = next(w for w in range(8, max(map(len, keys)) + 1) if len({k[:w] for k in keys}) == len(keys))
        out.update({k: f"{name} ({k[:width]})" for k in keys})
    return out


def group_runs(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """(dataset display name, backbone) -> runs sorted in the paper's row order."""
    names = dataset_names(runs)
    blocks: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        blocks.setdefault((names[run.dataset_key], run.backbone), []).append(run)
    datasets = list(dict.fromkeys(k[0] for k in blocks))
    keys = sorted(
        blocks, key=lambda k: (datasets.index(k[0]), BACKBONE_ORDER.get(k[1], len(BACKBONE_ORDER)), k[1])
    )
    return {k: sorted(blocks[k], key=lambda r: (r.order, r.label, r.name)) for k in keys}
