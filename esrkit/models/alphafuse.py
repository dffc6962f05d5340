"""AlphaFuse (Hu et al., SIGIR 2025, "Learn ID Embeddings for Sequential Recommendation in Null Space of
Language Embeddings"), on any registered backbone.

The item table is built from the LLM item embeddings E (n, d), without an adapter:

1. centre E and eigen-decompose its covariance: directions U (d, d) sorted by variance S (largest first);
2. the semantic coordinates are (E - mean) U[:, :hidden], optionally whitened (divided by sqrt(S)), and
   frozen;
3. the null space is the last ``null_dim`` of those coordinates (or every kept direction whose variance is at
   most ``null_threshold``): directions in which the language embedding barely varies;
4. a trainable ID embedding, ``nullity`` wide, is added onto the null-space coordinates (``cover``: replaces
   them).

So the language geometry of the first ``hidden - nullity`` coordinates is kept exactly, collaborative signal
lives where the text says almost nothing, and the result is an ordinary item table: the backbone, the losses,
serving and export treat it like an ID model's. A brand-new item gets its semantic coordinates from the same
projection and a zero ID part, so it can be recommended from its text alone.

Scale (an esrkit choice): whitened coordinates have unit variance, which makes item vectors about sqrt(hidden)
long; ``table_scale`` = 0 rescales them by one constant so their total variance equals the unwhitened
projection's (the magnitude LLMInit's PCA table has); 1.0 keeps unit variance as the public code does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.data.tensors import SeqInput
from esrkit.models.base import MODELS, InputStage, build_encoder, official_init
from esrkit.models.fusion import ScoreNorm
from esrkit.models.idrec import common_options, score_options
from esrkit.models.recommender import (
    ModelAssets,
    SequentialRecommender,
    as_vectors,
    grow_embedding,
    insert_item_rows,
)


class NullSpaceProjection:
    """The frozen part of AlphaFuse: mean, directions and per-coordinate scale of the semantic coordinates."""

    def __init__(self, items: np.ndarray, dim: int, whiten: bool = True, table_scale: float = 0.0) -> None:
        x = np.asarray(items, dtype=np.float64)
        if x.ndim != 2 or not 1 <= dim <= x.shape[1]:
            raise ValueError(f"AlphaFuse needs a (n_items, d) table with d >= hidden = {dim}, got {x.shape}")
        self.mean = x.mean(0)
        cov = np.cov(x - self.mean, rowvar=False).reshape(x.shape[1], x.shape[1])
        variances, directions = np.linalg.eigh(cov)  # ascending
        order = np.argsort(variances)[::-1]
        self.variances = np.clip(variances[order], 0.0, None)
        self.directions = directions[:, order][:, :dim]
        self.scale = np.ones(dim)
        if whiten:
            kept = self.variances[:dim]
            self.scale = 1.0 / np.sqrt(np.maximum(kept, 1e-12))
            self.scale *= np.sqrt(kept.mean()) if table_scale == 0.0 else table_scale
        elif table_scale:
            self.scale *= table_scale

    def nullity(self, null_dim: int, null_threshold: float) -> int:
        """How many of the kept coordinates (the last ones) form the null space."""
        dim = self.directions.shape[1]
        n = int((self.variances[:dim] <= null_threshold).sum()) if null_threshold > 0 else null_dim
        if not 1 <= n <= dim:
            raise ValueError(f"AlphaFuse null space of {n} dims does not fit hidden = {dim} (model.null_dim)")
        return n

    def __call__(self, items: np.ndarray) -> np.ndarray:
        return ((np.asarray(items, dtype=np.float64) - self.mean) @ self.directions * self.scale).astype(
            np.float32
        )


@MODELS.register("alphafuse")
class AlphaFuseRecommender(SequentialRecommender):
    @classmethod
    def requirements(cls, cfg) -> set[str]:
        return {"llm_items"}

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> AlphaFuseRecommender:
        if assets.llm_items is None:
            raise ValueError(
                "alphafuse needs LLM item embeddings (embedding.provider or embedding.item_embeddings)"
            )
        return cls(
            n_items,
            assets.llm_items,
            max_len=max_len,
            null_dim=cfg.null_dim,
            null_threshold=cfg.null_threshold,
            whiten=cfg.whiten,
            cover=cfg.cover,
            table_scale=cfg.table_scale,
            **common_options(cfg),
            **score_options(cfg),
        )

    def __init__(
        self,
        n_items: int,
        llm_items: np.ndarray,
        backbone: str = "sasrec",
        hidden: int = 128,
        max_len: int = 200,
        dropout: float = 0.5,
        layers: int = 0,
        heads: int = 1,
        causal: bool = False,
        emulate_padding: bool = True,
        null_dim: int = 64,
        null_threshold: float = 0.0,
        whiten: bool = True,
        cover: bool = False,
        table_scale: float = 0.0,
        encoder_options: dict | None = None,
        score_norm: bool = False,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(n_items, backbone, max_len, emulate_padding)
        if llm_items.shape[0] != n_items:
            raise ValueError(f"LLM item embeddings have {llm_items.shape[0]} rows for {n_items} items")
        self.hidden, self.cover = hidden, cover
        self.score_norm = ScoreNorm(temperature) if score_norm else None
        projection = NullSpaceProjection(llm_items, hidden, whiten, table_scale)
        self.nullity = projection.nullity(null_dim, null_threshold)
        semantic = torch.zeros(n_items + 2, hidden)
        semantic[1 : n_items + 1] = torch.as_tensor(projection(llm_items))
        self.register_buffer("semantic", semantic)  # frozen; saved, so a checkpoint or export needs no LLM
        for name in ("mean", "directions", "scale"):  # the projection, for items added after training
            self.register_buffer(
                f"projection_{name}", torch.as_tensor(getattr(projection, name), dtype=torch.float32)
            )
        self.ids = nn.Embedding(n_items + 2, self.nullity, padding_idx=0)
        self.inputs = InputStage(self.input_style, hidden, max_len, dropout)
        opts = dict(
            heads=heads,
            dropout=dropout,
            causal=causal,
            **({"layers": layers} if layers else {}),
            **(encoder_options or {}),
        )
        self.encoder = build_encoder(backbone, hidden, **opts)
        official_init(self, skip=("ids",))
        with torch.no_grad():  # the public code draws ID parts at the semantic coordinates' own scale
            std = float(semantic[1 : n_items + 1, -self.nullity :].std()) or 1.0
            nn.init.normal_(self.ids.weight, 0.0, std)
            self.ids.weight[0].zero_()

    def item_tables(self) -> list[nn.Parameter]:
        return [self.ids.weight]

    def item_vectors(self, ids: Tensor) -> Tensor:
        vectors = self.input_vectors(ids)
        return vectors if self.score_norm is None else self.score_norm.items(vectors)

    def input_vectors(self, ids: Tensor) -> Tensor:
        sem = self.semantic[ids]
        kept, null = sem[..., : self.hidden - self.nullity], sem[..., self.hidden - self.nullity :]
        injected = self.ids(ids) if self.cover else null + self.ids(ids)
        return torch.cat([kept, injected], -1)

    def encode(self, inp: SeqInput, last_only: bool = False) -> Tensor:
        inp, added = self._maybe_leading_pad(self.encoder, inp)
        x = self.inputs(self.input_vectors(inp.tokens), inp.positions)
        last = self._encoder_last_only(self.encoder, last_only)
        out = self.encoder(x, inp.mask, **self._encoder_kwargs(inp, shared_pad=True), **last)
        if self.score_norm is not None:
            out = self.score_norm.users(out)
        return out[:, 1:] if added and not last else out

    def project_new_items(self, llm_items: Tensor) -> Tensor:
        """Semantic coordinates of items unseen in training, by the stored projection."""
        centred = llm_items.to(self.projection_mean) - self.projection_mean
        return centred @ self.projection_directions * self.projection_scale

    def add_items(self, llm_vectors: np.ndarray, assets: ModelAssets) -> None:
        """A new item: its text's semantic coordinates by the training projection, an ID part of 0 (no
        interactions yet), so it is scored by the frozen language geometry alone."""
        vectors = torch.as_tensor(as_vectors(llm_vectors, self.projection_mean.shape[0], "alphafuse"))
        self.semantic = insert_item_rows(self.semantic, self.project_new_items(vectors), self.n_items)
        grow_embedding(self.ids, torch.zeros(len(vectors), self.nullity), self.n_items)
        self.grow_catalogue(len(vectors))
