"""Most-popular baseline: every user gets the items ranked by training popularity. No parameters are learned;
it is the floor every trained model must beat (tests assert it). An item added after training has no
training interaction, hence the lowest score."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.data.tensors import SeqInput
from esrkit.models.base import MODELS
from esrkit.models.recommender import ModelAssets, SequentialRecommender


@MODELS.register("pop")
class PopularityRecommender(SequentialRecommender):
    trainable = False

    def __init__(
        self, n_items: int, counts: np.ndarray | None = None, backbone: str = "sasrec", max_len: int = 200
    ) -> None:
        super().__init__(n_items, backbone, max_len, emulate_padding=False)
        counts = np.zeros(n_items + 1) if counts is None else np.asarray(counts, dtype=np.float64)
        # log keeps scores well-scaled; ties between equal counts stay ties
        self.register_buffer("scores", torch.as_tensor(np.log1p(counts), dtype=torch.float32).unsqueeze(1))
        self._dummy = nn.Parameter(torch.zeros(()), requires_grad=False)

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> PopularityRecommender:
        return cls(n_items, backbone=cfg.backbone, max_len=max_len)

    def setup(self, data) -> None:
        self.fit_counts(training_items(data))

    def fit_counts(self, train_items: np.ndarray) -> PopularityRecommender:
        counts = np.bincount(train_items, minlength=self.n_items + 1)[: self.n_items + 1]
        self.scores.copy_(torch.as_tensor(np.log1p(counts), dtype=torch.float32).unsqueeze(1))
        return self

    def encode(self, inp: SeqInput) -> Tensor:
        return torch.ones(*inp.tokens.shape, 1, device=self.scores.device)

    def item_vectors(self, ids: Tensor) -> Tensor:
        return self.scores[ids]

    def add_untrained_items(self, count: int, generator: torch.Generator | None = None) -> None:
        self.scores = torch.cat([self.scores, self.scores.new_zeros(count, 1)])  # log1p(0): never seen
        self.grow_catalogue(count)


def training_items(data) -> np.ndarray:
    """All items of every user's training part (seq[:-2])."""
    train_len, _ = data.split_lengths("train")
    return np.concatenate([data.sequence(u)[: train_len[u]] for u in range(data.n_users)])
