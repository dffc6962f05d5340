"""Run directories: everything needed to tell what produced a number.

``<output_dir>/<name>/seed-<seed>/`` holds ``config.json`` (the resolved RunConfig), ``provenance.json``
(versions, device, CPU model, git commit, data / embedding / neighbour fingerprints), ``metrics.jsonl`` (one
line per epoch), ``train.log`` (one readable line per epoch as it finishes, also sent to the
``esrkit.progress`` logger, which the CLI prints on stderr), ``checkpoints/best.safetensors`` and
``checkpoints/last.safetensors`` (resumable) with their SHA-256 in ``checkpoints/hashes.json``,
``results.json`` (test and validation metrics under both protocols and every group) and ``ranks/*.npy``
(per-user ranks for significance tests). A folder whose start failed before its first epoch is replaced by the
next start (``check_start``); one with a trained epoch needs ``--resume``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import esrkit
from esrkit.config import ConfigError, config_from_dict
from esrkit.training import checkpoint as ckpt
from esrkit.utils.io import atomic_save_npy, atomic_write_json, read_json
from esrkit.utils.machine import cpu_model


def environment() -> dict[str, Any]:
    versions = {
        "python": sys.version.split()[0],
        "esrkit": esrkit.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    # package metadata, not imports: importing transformers / sentence-transformers costs seconds
    for dist in ("transformers", "sentence-transformers", "hnswlib", "scikit-learn", "openai", "accelerate"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return {
        "versions": versions,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def git_commit() -> str | None:
    try:
        root = Path(esrkit.__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except Exception as exc:  # noqa: BLE001 - no git, or not a checkout: provenance says None
        log.debug("no git commit: %s", exc)
    return None


log = logging.getLogger(__name__)

_HELD_LOCKS: dict[str, Any] = {}  # run directory -> open lock file, kept until the process exits
PROGRESS = logging.getLogger("esrkit.progress")  # the CLI prints it on stderr (esrkit/cli/main.py)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.safetensors"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def lock(self) -> RunDir:
        """Hold an exclusive lock on the run directory for this process's lifetime: two processes resuming the
        same run would interleave checkpoints and metrics."""
        import fcntl  # POSIX only: imported where the lock is taken

        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "a+")  # noqa: SIM115 - held open (locked) until the process exits
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise RuntimeError(
                f"{self.path} is in use by another process (its lock is held); wait for it or "
                "choose another --name"
            ) from None
        _HELD_LOCKS[str(self.path.resolve())] = fh
        return self

    def unlock(self) -> None:
        """Let the lock go once the run is finished (its results written): a process that trains many runs (a
        study, a sweep) would otherwise hold one open file per run until it exits."""
        fh = _HELD_LOCKS.pop(str(self.path.resolve()), None)
        if fh is not None:
            fh.close()  # closing the file releases its flock

    @property
    def has_trained_epoch(self) -> bool:
        """A finished epoch leaves ``last``; a run that failed before its first epoch has none to resume."""
        return self.last.exists()

    def check_start(self, config: dict[str, Any], resume: bool = False) -> str:
        """What starting ``config`` here would do: "new", "replace" (a failed start with no trained epoch),
        "resume" or "finished" (resume only); anything else raises. Called before any work, and again by
        ``create`` under the lock."""
        if not (self.path / "config.json").exists():
            return "new"
        finished = (self.path / "results.json").exists()
        if not finished and not self.has_trained_epoch:
            return "replace"
        if not resume:
            if finished:
                raise FileExistsError(
                    f"{self.path} holds a finished run; choose another --name or --output-dir"
                )
            raise FileExistsError(f"{self.path} holds an unfinished run; pass --resume to continue it")
        if finished:
            return "finished"
        old = read_json(self.path / "config.json")
        if comparable_config(old) != comparable_config(config):
            raise ValueError(f"{self.path}: --resume with a different configuration; start a new run instead")
        self.verify_checkpoints()  # a damaged checkpoint stops the resume before anything is rewritten
        return "resume"

    def create(self, config: dict[str, Any], provenance: dict[str, Any], resume: bool = False) -> RunDir:
        if str(self.path.resolve()) not in _HELD_LOCKS:
            self.lock()
        if self.check_start(config, resume) == "replace":
            self._clear_failed_start()
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / "config.json", config)
        atomic_write_json(self.path / "provenance.json", provenance)
        return self

    def verify_checkpoints(self) -> None:
        """Check every checkpoint against its recorded hash (checkpoint.py)."""
        for path in (self.last, self.best):
            if path.exists():
                ckpt.verify_checkpoint(path)

    def _clear_failed_start(self) -> None:
        """A start that failed before its first epoch (bad data, out of memory, an early NaN) left a folder
        with no trained epoch; a new start replaces it instead of demanding --resume."""
        log.info("%s holds no trained epoch (an earlier start failed); starting it afresh", self.path)
        for name in ("metrics.jsonl", "results.json", "train.log"):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.checkpoints, ignore_errors=True)
        shutil.rmtree(self.path / "ranks", ignore_errors=True)

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    def log(self, line: str, echo: bool = True) -> None:
        """Append a timestamped line to ``train.log`` (at once, so it can be followed while training runs) and
        (``echo``) send it to the progress logger, prefixed with the run and seed."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        if echo:
            PROGRESS.info("[%s/%s] %s", self.path.parent.name, self.path.name, line)

    def save_results(self, results: dict[str, Any], ranks: dict[str, np.ndarray]) -> None:
        for name, arr in ranks.items():
            atomic_save_npy(self.path / "ranks" / f"{name}.npy", arr.astype(np.int32))
        atomic_write_json(self.path / "results.json", results)

    def results(self) -> dict[str, Any]:
        return read_json(self.path / "results.json")

    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json")


def epoch_line(record: dict[str, Any], watch: str, protocol: str) -> str:
    """One epoch of ``metrics.jsonl`` as a line: losses, the watched validation metric, the best so far,
    times."""
    parts = [k for k in ("rank", "sd", "aux") if k in record and record[k] != record.get("loss")]
    detail = f" ({', '.join(f'{k} {record[k]:.4f}' for k in parts)})" if parts else ""
    line = f"epoch {record['epoch']}: loss {record['loss']:.4f}{detail}"
    if record.get("diverged"):
        return f"{line}: not finite, training stopped; the result is epoch {record.get('best_epoch')}"
    score = record.get("score")
    if score is not None and math.isfinite(score):
        line += f" | valid {protocol} {watch} {score:.4f} (best epoch {record.get('best_epoch')})"
    seconds = f"{record.get('train_seconds', 0.0):.1f} s train"
    if "valid_seconds" in record:
        seconds += f" + {record['valid_seconds']:.1f} s valid"
    return f"{line} | {seconds}"


def comparable_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A recorded config without what may change between a run and its continuation (output folder, epoch
    budget, device): what ``--resume`` and a sweep's reuse of a finished run compare."""
    cfg = _with_defaults(cfg)
    cfg.pop("output_dir", None)
    train = dict(cfg.get("train", {}))
    train.pop("epochs", None)  # extending a run's epoch budget is allowed on resume
    train.pop("device", None)
    cfg["train"] = train
    return cfg


def _with_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """A recorded config with keys a newer esrkit added filled in with their defaults, so a run started before
    a key existed still resumes (a config this esrkit cannot read is compared as it is)."""
    try:
        return config_from_dict(cfg).to_dict()
    except (ConfigError, TypeError):
        return dict(cfg)
