"""A study's per-seed record: what its report reads of every run, small enough to publish beside the tables.

A report needs three small files per seed (``results.json``, ``config.json``, ``provenance.json``);
checkpoints, ranks and embeddings stay out. ``study.json`` keeps them under ``records`` (run name -> seed ->
files), so the report can be rebuilt, and extended by new seeds, after the run folders are gone: a run folder
lost with a machine, or seeds trained elsewhere (a lent GPU) whose ``study.json`` is all that came back.

Seeds merge by run name. A recorded seed is only merged with a run's other seeds when both describe the same
experiment: the same config apart from where and when it ran (seed, paths, device), the same data and the same
embedding tables (fingerprints). Anything else is an error that names the run and the settings that differ, so
a table row never averages two different experiments.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from esrkit.reporting.collect import SEED_DIR, RunRecords, SeedRecord
from esrkit.utils.io import read_json

# config keys that say where or how a seed ran, not what was trained: they may differ between merged seeds
_RUN_LOCAL = {
    "name",
    "description",
    "output_dir",
    "workdir",
    "train.seed",
    "train.device",
    "retrieval.neighbours",
    "embedding.item_embeddings",
    "embedding.user_embeddings",
    "embedding.pca_table",
}


def read_record_file(path: Path) -> dict[str, RunRecords]:
    """``records`` of a study.json (an older one without them: nothing); a clear error for anything else."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such study record (a study.json written by `esrkit study`)")
    return records_of(read_json(path), path)


def records_of(data: Any, path: Path) -> dict[str, RunRecords]:
    """The validated ``records`` of a study.json already read (``path`` names it in errors)."""
    records = data.get("records", {}) if isinstance(data, dict) else None
    if not isinstance(records, dict) or not all(isinstance(v, dict) for v in records.values()):
        raise ValueError(f"{path}: 'records' must map run names to {{seed: record}} (a study.json of esrkit)")
    for name, seeds in records.items():
        for seed, rec in seeds.items():
            if not SEED_DIR.match(f"seed-{seed}") or not isinstance(rec, dict) or "results" not in rec:
                raise ValueError(
                    f"{path}: records.{name}.{seed}: expected a seed number with a 'results' entry"
                )
    return records


def experiment(record: SeedRecord) -> dict[str, Any]:
    """What a seed trained, flattened: its config without the run-local keys, plus the data and embedding
    fingerprints (the PCA table's is left out: another BLAS changes its last bits, see
    esrkit/embedding/pca.py)."""
    flat = {k: v for k, v in _flatten(record.get("config", {})).items() if k not in _RUN_LOCAL}
    fps = record.get("provenance", {}).get("fingerprints", {})
    if fps.get("data"):
        flat["fingerprint.data"] = fps["data"]
    for part, meta in (fps.get("embeddings") or {}).items():
        if isinstance(meta, dict) and meta.get("fingerprint"):
            flat[f"fingerprint.embeddings.{part}"] = meta["fingerprint"]
    return flat


def differences(a: SeedRecord, b: SeedRecord) -> list[str]:
    """Keys on which two seeds' experiments differ (only keys both record: a setting a newer esrkit added with
    its default is not a difference)."""
    ea, eb = experiment(a), experiment(b)
    return sorted(k for k in ea.keys() & eb.keys() if ea[k] != eb[k])


def merge_records(name: str, layers: Iterable[tuple[str, RunRecords]]) -> RunRecords:
    """One run's seeds from several sources, later layers winning per seed (a run folder beats study.json,
    study.json beats a published record). ``layers``: (where it came from, records) for the error message."""
    merged: RunRecords = {}
    origin: dict[str, str] = {}
    for where, records in layers:
        for seed, rec in records.items():
            for other_seed, other in merged.items():
                if other_seed == seed:
                    continue
                diff = differences(other, rec)
                if diff:
                    raise ValueError(
                        f"run {name!r}: seed {seed} from {where} and seed {other_seed} from "
                        f"{origin[other_seed]} "
                        f"are different experiments (they differ in {', '.join(diff[:6])}); give one of them "
                        "another run name"
                    )
                break  # every merged seed already agrees with the first: one comparison is enough
            merged[seed] = rec
            origin[seed] = where
    return dict(sorted(merged.items(), key=lambda kv: int(kv[0])))


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
