"""A user's own encoder and model family, loaded by ``package.module:Class`` from the command line (tests use
``tests.models.plugins:MeanPool`` and ``tests.models.plugins:ScaledID``); nothing here is registered."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esrkit.models.idrec import IDRecommender


class MeanPool(nn.Module):
    """Each position's state is an MLP of the mean of the items so far."""

    objective = "seq2seq"  # read by the registry in place of @ENCODERS.register(..., objective=...)
    inputs = "plain"

    def __init__(self, hidden: int, **options: object) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self, x: Tensor, mask: Tensor, **kwargs: object) -> Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        return self.mlp(torch.cumsum(x * m, 1) / torch.cumsum(m, 1).clamp_min(1.0))


class ScaledID(IDRecommender):
    """The plain backbone whose scores are multiplied by a learned scale (a family of one's own)."""

    def __init__(self, n_items: int, **options) -> None:
        super().__init__(n_items, **options)
        self.scale = nn.Parameter(torch.ones(()))

    def encode(self, inp, last_only: bool = False) -> Tensor:
        return super().encode(inp, last_only) * self.scale
