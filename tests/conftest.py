"""Shared test fixtures. OMP_WAIT_POLICY must be set before torch is imported (see esrkit/__init__.py)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("OPENAI_API_KEY", None)  # tests never see a real key

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ESRKIT_SHARED", REPO.parent / "shared"))
DATASETS = SHARED / "datasets"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with a clear reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (set ESRKIT_SHARED to the folder holding datasets/)")
    return path


@pytest.fixture
def scratch_encoders(monkeypatch):
    """The encoder registry, its built-ins loaded, as a copy for one test: whatever the test registers leaves
    with it, so other tests' lists of known encoders hold in any order."""
    from esrkit.models import ENCODERS

    ENCODERS.names()
    monkeypatch.setattr(ENCODERS, "_entries", dict(ENCODERS._entries))
    monkeypatch.setattr(ENCODERS, "_meta", dict(ENCODERS._meta))
    return ENCODERS


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def tiny_sequences():
    """Five users over 8 items with a repeat, lengths 3..6 (ids 1-based, chronological)."""
    from esrkit.data.sequences import SequenceData

    seqs = [[1, 2, 3], [2, 3, 4, 5], [1, 3, 5, 7, 8], [4, 4, 6, 2, 1, 8], [6, 7, 8]]
    attrs = [
        {"title": f"Item {i}", "brand": "B" if i % 2 else None, "categories": [["Cat", f"Sub{i % 3}"]]}
        for i in range(1, 9)
    ]
    return SequenceData.from_sequences(seqs, n_items=8, item_attrs=attrs, name="tiny")


# a tiny demo run: 200 synthetic users, one epoch of two batches (seconds on a CPU)
TINY_RUN = [
    "data.synthetic={n_users=200, n_items=300}",
    "train.epochs=1",
    "train.max_batches_per_epoch=2",
    "eval.batch_size=128",
]


@pytest.fixture(scope="session")
def tiny_run_tree(tmp_path_factory) -> Path:
    """A finished tiny demo run ``runs/tiny/seed-42`` with its workdir ``.esrkit``, trained once per session
    with relative paths: tests copy the tree (``copy_tree``), chdir into the copy and damage what they
    like."""
    from esrkit.config import resolve_recipe
    from esrkit.runs.train import train

    root = tmp_path_factory.mktemp("tiny-run")
    previous = os.getcwd()
    os.chdir(root)
    try:
        train(resolve_recipe("demo", TINY_RUN, top={"name": "tiny"}), progress=False)
    finally:
        os.chdir(previous)
    return root


def copy_tree(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target, dirs_exist_ok=True)
    return target
