"""Shared test fixtures. OMP_WAIT_POLICY must be set before torch is imported (see esrkit/__init__.py)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("OPENAI_API_KEY", None)  # tests never see a real key

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

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
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def tiny_sequences():
    """Five users over 8 items with a repeat, lengths 3..6 (ids 1-based, chronological)."""
    from esrkit.data.sequences import SequenceData

    seqs = [[1, 2, 3], [2, 3, 4, 5], [1, 3, 5, 7, 8], [4, 4, 6, 2, 1, 8], [6, 7, 8]]
    attrs = [{"title": f"Item {i}", "brand": "B" if i % 2 else None, "categories": [["Cat", f"Sub{i % 3}"]]} for i in range(1, 9)]
    return SequenceData.from_sequences(seqs, n_items=8, item_attrs=attrs, name="tiny")
