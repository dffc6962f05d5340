"""How LLM-ESR's two views meet in one score, beyond the official concatenation (esrkit switches, off by
default).

The official logit fusion scores ``[u_co; u_se] . [e_co; e_se] = u_co . e_co + u_se . e_se``: each view's dot
product counts as much as its vectors' lengths make it. Two switches change that, and both keep the score a
single dot product of a user vector and an item vector (so evaluation, serving and export are unchanged):

* ``view_norm``: each view's user and item vectors are L2-normalised and the user side is scaled by a learned
  inverse temperature per view, so neither view wins by vector length alone;
* ``gate``: a learned weight between the views, ``2 (1 - g)`` on the collaborative and ``2 g`` on the semantic
  view (g = 0.5, the official score, at initialisation). ``popularity``: g per item from its training
  popularity, ``sigmoid(a + b z_i)`` with z_i the standardised log(1 + count) (two parameters, so a tail item
  gets the weight that tail items as a group earned, and a brand-new item that of popularity 0); ``user``: g
  per user from the user's own representation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esrkit.config import GATES


class ScoreNorm(nn.Module):
    """Cosine scores with a learned inverse temperature (``model.score_norm``, single-view families): the user
    state and every item vector are L2-normalised, the user side scaled by ``exp(log_scale)``. Under a softmax
    loss, item vector length otherwise grows with popularity and ranks popular items above closer tail
    items."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def users(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) * self.log_scale.exp()

    @staticmethod
    def items(x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)


class ViewFusion(nn.Module):
    def __init__(
        self, hidden: int, n_items: int, view_norm: bool = False, gate: str = "none", temperature: float = 0.1
    ) -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"model.gate must be one of {GATES}, not {gate!r}")
        self.hidden, self.view_norm, self.gate = hidden, view_norm, gate
        if view_norm:
            self.log_scale = nn.Parameter(torch.full((2,), math.log(1.0 / temperature)))
        if gate == "popularity":
            self.gate_bias = nn.Parameter(torch.zeros(()))
            self.gate_slope = nn.Parameter(torch.zeros(()))
            self.register_buffer("popularity_z", torch.zeros(n_items + 2))
            self.register_buffer("unseen_z", torch.zeros(()))  # z of an item with no training interaction
        elif gate == "user":
            self.user_gate = nn.Linear(2 * hidden, 1)
            nn.init.zeros_(self.user_gate.weight)
            nn.init.zeros_(self.user_gate.bias)

    @property
    def active(self) -> bool:
        return self.view_norm or self.gate != "none"

    def set_popularity(self, counts: np.ndarray) -> None:
        """``counts`` (n_items + 1,): training interactions per item id (row 0 = padding)."""
        if self.gate != "popularity":
            return
        logs = np.log1p(counts[1:].astype(np.float64))
        mean, std = logs.mean(), max(logs.std(), 1e-12)
        full = np.zeros(len(self.popularity_z))
        full[1 : len(logs) + 1] = (logs - mean) / std
        self.popularity_z.copy_(torch.as_tensor(full, dtype=torch.float32))
        self.unseen_z.fill_(float(-mean / std))

    def grow(self, count: int, n_items: int) -> None:
        """Items added after training have popularity 0: they get the gate a never-seen item earns."""
        if self.gate == "popularity":
            rows = self.unseen_z.expand(count).clone()
            z = self.popularity_z
            self.popularity_z = torch.cat([z[: n_items + 1], rows, z[n_items + 1 :]])

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[..., : self.hidden], x[..., self.hidden :]

    def users(self, x: Tensor) -> Tensor:
        co, se = self._split(x)
        if self.view_norm:
            scale = self.log_scale.exp()
            co, se = F.normalize(co, dim=-1) * scale[0], F.normalize(se, dim=-1) * scale[1]
        if self.gate == "user":
            g = torch.sigmoid(self.user_gate(x))
            co, se = co * 2 * (1 - g), se * 2 * g
        return torch.cat([co, se], -1)

    def items(self, x: Tensor, ids: Tensor) -> Tensor:
        co, se = self._split(x)
        if self.view_norm:
            co, se = F.normalize(co, dim=-1), F.normalize(se, dim=-1)
        if self.gate == "popularity":
            g = torch.sigmoid(self.gate_bias + self.gate_slope * self.popularity_z[ids]).unsqueeze(-1)
            co, se = co * 2 * (1 - g), se * 2 * g
        return torch.cat([co, se], -1)
