"""A control provider: a seeded random unit vector per distinct text.

Why: it answers "does the semantic content of the LLM embeddings matter, or only their presence?" (every item
gets a distinct, fixed vector with no meaning). The vector depends only on sha256(text) and the seed, so it is
stable across runs and machines and duplicate texts share a vector, exactly like a real provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from esrkit.providers.base import PROVIDERS, Provider
from esrkit.utils.io import sha256_text


@dataclass
class RandomOptions:
    dim: int = 1536  # the paper's ada-002 width, so the control swaps in for it unchanged
    seed: int = 0
    batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError("random provider: dim must be >= 1")


def text_vector(text: str, dim: int, seed: int) -> np.ndarray:
    digest = sha256_text(f"{seed}|{text}")
    rng = np.random.Generator(np.random.PCG64(int(digest[:32], 16)))
    v = rng.standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


@PROVIDERS.register("random")
class RandomProvider(Provider):
    kind = "random"
    Options = RandomOptions

    def identity_model(self) -> str:
        return "random-normal-v1"

    def identity_params(self) -> dict[str, Any]:
        return {"seed": self.options.seed}

    def declared_dim(self) -> int:
        return int(self.options.dim)

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        return (
            np.stack([text_vector(t, self.options.dim, self.options.seed) for t in texts])
            if texts
            else np.zeros((0, self.options.dim), dtype=np.float32)
        )
