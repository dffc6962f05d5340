"""Item vectors that borrow from the items whose text is closest (``model.text_neighbours``, esrkit).

An item's trained ID vector is only as good as its interactions: a tail item's is trained by a handful, and an
item added after training has none. Its LLM embedding says which items it resembles, and *their* ID vectors
are trained. So each item's vector becomes a mix of its own ID vector and the mean ID vector of its K nearest
items by text (cosine of the LLM embeddings, computed once):

    e_i = (1 - g_i) ID_i + g_i mean_{j in kNN(i)} ID_j,   g_i = sigmoid(a + b z_i)

with z_i the item's standardised log(1 + training count) and a, b learned (g = 0.5 at the start): the data
decides how much an item of a given popularity leans on its neighbours, so a tail item gets the weight tail
items as a group earned and a brand-new item (count 0) that of popularity 0. Gradients reach the neighbours'
ID vectors too, so popular items are trained as the prototypes of their rare look-alikes.

``model.neighbour_dropout`` = p (training only): with probability p an item's vector is the neighbours'
mean alone (g_i = 1), DropoutNet's treatment of cold items (Volkovs et al., NeurIPS 2017), so the mean is
trained to stand in for the ID vector that tail and new items lack.

The same unit LLM vectors give the ranking-time text term (``text_similarity``, LLMInit's ``text_boost``): the
cosine of every item with the user's last items, which reaches every item rather than K neighbours.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.index.exact import exact_search, exact_topk, normalise_rows
from esrkit.models.recommender import insert_item_rows


def standardised_log_popularity(counts: np.ndarray, rows: int) -> tuple[Tensor, float]:
    """z_i = standardised log(1 + training count) per item id in a (rows,) tensor (padding and rows past the
    counts 0), and the z of an item never seen (count 0), which items added later take."""
    logs = np.log1p(counts[1:].astype(np.float64))
    mean, std = logs.mean(), max(logs.std(), 1e-12)
    z = np.zeros(rows)
    z[1 : len(logs) + 1] = (logs - mean) / std
    return torch.as_tensor(z, dtype=torch.float32), float(-mean / std)


def interaction_mean(counts: np.ndarray, z: Tensor) -> float:
    """The mean z over training interactions (items weighted by their counts; row 0 = padding)."""
    weights = np.asarray(counts[1:], dtype=np.float64)
    total = weights.sum()
    return float(weights @ z[1 : len(weights) + 1].double().numpy() / total) if total else 0.0


class TextNeighbours(nn.Module):
    def __init__(self, llm_items: np.ndarray, k: int, dropout: float = 0.0) -> None:
        super().__init__()
        n = llm_items.shape[0]
        if not 1 <= k < n:
            raise ValueError(f"model.text_neighbours = {k} must be between 1 and {n - 1} (items - 1)")
        if not 0 <= dropout < 1:
            raise ValueError(f"model.neighbour_dropout = {dropout} must be in [0, 1)")
        self.dropout = dropout
        rows, _ = exact_topk(np.asarray(llm_items, dtype=np.float32), k)  # 0-based rows, most similar first
        ids = torch.zeros(n + 2, k, dtype=torch.long)
        ids[1 : n + 1] = torch.as_tensor(rows.astype(np.int64) + 1)
        self.register_buffer("neighbour_ids", ids)  # row 0 (padding) and [MASK]: padding neighbours, vector 0
        # unit LLM vectors of every item, row i-1 = item i: the first ``trained`` rows are where an item added
        # later looks for its neighbours; added items append theirs (the ranking-time text term reads all)
        self.register_buffer("keys", torch.as_tensor(normalise_rows(np.asarray(llm_items, dtype=np.float32))))
        # not in checkpoints (runs written before it existed load as they are; a run adds no items), but in
        # exports, which save every buffer and may hold added items
        self.register_buffer("trained", torch.tensor(n), persistent=False)
        self.gate_bias = nn.Parameter(torch.zeros(()))
        self.gate_slope = nn.Parameter(torch.zeros(()))
        self.register_buffer("popularity_z", torch.zeros(n + 2))
        self.register_buffer("unseen_z", torch.zeros(()))
        # the mean z of a training interaction, the centre of the popularity tilt; NaN: not known (a run
        # written before it existed, until ``restore_centre`` recomputes it from the training data)
        self.register_buffer("popularity_centre", torch.tensor(float("nan")))
        self._tables: dict[tuple, Tensor] = {}  # ranking terms' item tables (_kept)

    def set_popularity(self, counts: np.ndarray) -> None:
        """``counts`` (n_items + 1,): training interactions per item id (row 0 = padding)."""
        z, unseen = standardised_log_popularity(counts, len(self.popularity_z))
        self.popularity_z.copy_(z)
        self.unseen_z.fill_(unseen)
        self.popularity_centre.fill_(interaction_mean(counts, z))

    def restore_centre(self, counts: np.ndarray) -> None:
        """A checkpoint written before ``popularity_centre`` existed: recompute it from the training counts,
        after checking that they are the counts the checkpoint's popularity came from."""
        z, _ = standardised_log_popularity(counts, len(self.popularity_z))
        if not torch.allclose(z, self.popularity_z.cpu(), atol=1e-5):
            raise ValueError(
                "the training data's item counts differ from those the checkpoint's popularity was computed "
                "from; the popularity tilt's centre cannot be recovered (train the run again)"
            )
        self.popularity_centre.fill_(interaction_mean(counts, z))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        """Checkpoints written before ``popularity_centre`` existed load as they are, the centre kept as it
        was (computed by ``setup`` from the same data, or unknown: NaN)."""
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        key = prefix + "popularity_centre"
        if key in missing:
            missing.remove(key)

    def weight(self, ids: Tensor) -> Tensor:
        """g_i: how much item i leans on its text neighbours, (..., 1)."""
        return torch.sigmoid(self.gate_bias + self.gate_slope * self.popularity_z[ids]).unsqueeze(-1)

    def mix(self, own: Tensor, ids: Tensor, table: Callable[[Tensor], Tensor]) -> Tensor:
        """``table``: the items' own vectors by id (the ID table, or the gated one of ``TextStartGate``)."""
        borrowed = table(self.neighbour_ids[ids]).mean(-2)
        g = self.weight(ids)
        if self.training and self.dropout > 0:  # neighbour dropout: the neighbours' mean alone (g = 1)
            dropped = torch.rand(g.shape, device=g.device) < self.dropout
            g = torch.where(dropped, torch.ones_like(g), g)
        return (1 - g) * own + g * borrowed

    def add(self, llm_vectors: np.ndarray, n_items: int) -> None:
        """New items (ids n_items+1..): neighbours among the trained items by text, popularity 0."""
        k = self.neighbour_ids.shape[1]
        units = normalise_rows(np.asarray(llm_vectors, dtype=np.float32))
        rows, _ = exact_search(units, self.keys[: int(self.trained)].cpu().numpy(), k)
        self.keys = torch.cat([self.keys[:n_items], torch.as_tensor(units, device=self.keys.device)])
        new = torch.as_tensor(rows.astype(np.int64) + 1)
        self.neighbour_ids = insert_item_rows(self.neighbour_ids, new, n_items)
        self.popularity_z = insert_item_rows(self.popularity_z, self.unseen_z.expand(len(new)), n_items)

    def popularity_tilt(self, recent_items: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
        """The popularity tilt as two factors whose product is added to the scores: (B, 1) h_u - c, h_u the
        mean z of ``recent_items`` (B, M; id 0 = none; 0 for a history without items: no tilt) and c the
        centre, and (n_rows, 1) every item id's z (padding and [MASK] 0). Personal, not global: a popularity
        offset for everyone trades head for tail items (docs/RESULTS.md), while a user whose recent items
        are rarer than the average interaction's is the one a rare item suits."""
        centre = self.popularity_centre
        if torch.isnan(centre):
            raise ValueError(
                "model.popularity_tilt: this model does not know its training popularity's centre (a run "
                "written before the tilt existed); load it with `esrkit evaluate` / `export` from its run "
                "folder, which recomputes the centre from the training data"
            )
        known = recent_items > 0
        z = self.popularity_z[recent_items] * known
        mean = z.sum(1) / known.sum(1).clamp(min=1)
        query = torch.where(known.any(1), mean - centre, torch.zeros_like(mean)).unsqueeze(1)
        return query, self._popularity_column(n_rows)

    def _popularity_column(self, n_rows: int) -> Tensor:
        """(n_rows, 1) z by item id (padding and [MASK] 0), kept as the text term's table is: building it took
        most of a single history's tilt."""

        def build() -> Tensor:
            z = self.popularity_z
            table = z.new_zeros(n_rows, 1)
            known = min(len(z) - 2, n_rows - 1)  # item ids 1..n; not [MASK]
            table[1 : known + 1, 0] = z[1 : known + 1]
            return table

        return self._kept(("tilt", n_rows), (self.popularity_z,), build)

    def text_similarity(self, recent_items: Tensor, n_rows: int, tail: float = 0.0) -> tuple[Tensor, Tensor]:
        """The dense text term as two factors whose product is added to the scores: (B, E) the unit sum of the
        unit LLM vectors of ``recent_items`` (B, m; id 0 = none), and (n_rows, E) every item id's unit LLM
        vector times w_i = 1 + ``tail`` max(0, -z_i): items rarer than average get more, popular ones the
        plain cosine. Padding, [MASK] and a history without items get 0."""
        # the few recent items' vectors straight from the keys (row id-1; id 0 = none), not from a second
        # catalogue-sized table
        recent = self.keys[(recent_items - 1).clamp(min=0)] * (recent_items > 0).unsqueeze(-1)
        query = torch.nn.functional.normalize(recent.sum(1), dim=-1)
        return query, self._item_table(n_rows, tail)

    def _item_table(self, n_rows: int, tail: float) -> Tensor:
        """(n_rows, E) unit LLM vectors by item id, weighted for ``tail``; kept until the keys, the popularity
        or the request change, since building it costs more than the product it serves (a catalogue-sized
        copy for every history ranked; benchmarks/RESULTS.md, "Ranking bonus: serving cost")."""

        def build() -> Tensor:
            known = min(len(self.keys), n_rows - 1)
            table = self.keys.new_zeros(n_rows, self.keys.shape[1])
            table[1 : known + 1] = self.keys[:known]
            if tail:
                table *= (1 + tail * torch.clamp(-self.popularity_z[:n_rows], min=0)).unsqueeze(-1)
            return table

        return self._kept(("text", n_rows, tail), (self.keys, self.popularity_z), build)

    def _kept(self, request: tuple, sources: tuple[Tensor, ...], build: Callable[[], Tensor]) -> Tensor:
        """A ranking term's item table for ``request``, built from ``sources`` once and kept until one of them
        changes: a buffer replaced (add, .to) has new storage, one written in place (set_popularity, loading a
        state) a new version count (autograd's counter of in-place writes)."""
        key = (*request, *((t.data_ptr(), t._version, t.device) for t in sources))
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        table = build()
        if len(self._tables) >= 4:  # a few settings at once (tune-bonus, tests), not one per setting tried
            self._tables.clear()
        self._tables[key] = table
        return table
