"""How much of its text start each item keeps, learned from every item's evidence (``model.start_gate``).

LLMInit starts every item vector at the PCA of its LLM embedding, S_i, and lets training move it. A popular
item's many interactions move it wherever its data says; a tail item's handful barely move it, so the tail
keeps its start whether the text helps or not, and text that carries no signal (the random-vector control)
leaves the tail with noise the ID backbone does not have (docs/RESULTS.md, "Another backbone: BERT4Rec on
Scientific"). The gate makes the start's weight a shared, learned quantity instead:

    e_i = W_i - (1 - w_i) S_i,   w_i = 2 sigmoid(a + b z_i)

W_i the trainable table (starting at S_i), z_i the item's standardised log training popularity, a and b
learned from 0, so w = 1 and training starts at LLMInit exactly. If the text helps, w stays near 1; if it does
not, every item's gradient pushes w down and the start is taken out of the tail items too, which their own
interactions could not do. An item added after training takes the gate of an unseen item (count 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.models.neighbours import standardised_log_popularity
from esrkit.models.recommender import insert_item_rows


class TextStartGate(nn.Module):
    def __init__(self, start: Tensor) -> None:
        """``start``: the item table as training starts it (rows by item id, padding row 0)."""
        super().__init__()
        self.register_buffer("start", start.detach().clone())
        self.bias = nn.Parameter(torch.zeros(()))
        self.slope = nn.Parameter(torch.zeros(()))
        self.register_buffer("popularity_z", torch.zeros(start.shape[0]))
        self.register_buffer("unseen_z", torch.zeros(()))

    def set_popularity(self, counts: np.ndarray) -> None:
        """``counts`` (n_items + 1,): training interactions per item id (row 0 = padding)."""
        z, unseen = standardised_log_popularity(counts, len(self.popularity_z))
        self.popularity_z.copy_(z)
        self.unseen_z.fill_(unseen)

    def weight(self, ids: Tensor) -> Tensor:
        """w_i: how much of its start item i keeps, (..., 1), in (0, 2)."""
        return 2 * torch.sigmoid(self.bias + self.slope * self.popularity_z[ids]).unsqueeze(-1)

    def forward(self, vectors: Tensor, ids: Tensor) -> Tensor:
        """``vectors`` = W[ids] -> e[ids]."""
        return vectors - (1 - self.weight(ids)) * self.start[ids].to(vectors.dtype)

    def add(self, rows: Tensor, n_items: int) -> None:
        """New items (ids n_items+1..) start where their table rows start, with an unseen item's z."""
        self.start = insert_item_rows(self.start, rows, n_items)
        self.popularity_z = insert_item_rows(self.popularity_z, self.unseen_z.expand(len(rows)), n_items)
