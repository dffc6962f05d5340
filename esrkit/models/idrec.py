"""Single-view recommenders: a plain backbone over trainable ID embeddings, and LLMInit.

``id`` is SASRec / BERT4Rec / GRU4Rec as the official code builds them (item table with ``padding_idx=0``,
xavier-normal init of everything, score = dot product with the item table). ``llminit`` is the paper's LLMInit
baseline (LLM2Bert4Rec / SAID): the same model whose item table starts from the LLM item embeddings reduced by PCA
to the hidden size, then fine-tuned.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.models.base import MODELS, InputStage, SeqInput, build_encoder, official_init
from esrkit.models.recommender import ModelAssets, SequentialRecommender


def common_options(cfg) -> dict:
    """Backbone options shared by every model family, from a ModelConfig."""
    return {
        "backbone": cfg.backbone, "hidden": cfg.hidden, "dropout": cfg.dropout, "layers": cfg.layers,
        "heads": cfg.heads, "causal": cfg.causal, "emulate_padding": cfg.emulate_padding,
        "encoder_options": dict(cfg.extra.get("encoder", {})),
    }


@MODELS.register("id")
class IDRecommender(SequentialRecommender):
    def __init__(
        self,
        n_items: int,
        backbone: str = "sasrec",
        hidden: int = 128,
        max_len: int = 200,
        dropout: float = 0.5,
        layers: int = 0,
        heads: int = 1,
        causal: bool = False,
        emulate_padding: bool = True,
        init_table: np.ndarray | None = None,
        encoder_options: dict | None = None,
    ) -> None:
        super().__init__(n_items, backbone, max_len, emulate_padding)
        self.hidden = hidden
        self.items = nn.Embedding(n_items + 2, hidden, padding_idx=0)
        self.inputs = InputStage(self.input_style, hidden, max_len, dropout)
        layer_opt = {"layers": layers} if layers else {}  # 0: the encoder's own default
        self.encoder = build_encoder(
            backbone, hidden, heads=heads, dropout=dropout, causal=causal, **layer_opt, **(encoder_options or {})
        )
        official_init(self)
        if init_table is not None:
            self._load_table(init_table)

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> IDRecommender:
        return cls(n_items, max_len=max_len, **common_options(cfg))

    def _load_table(self, table: np.ndarray) -> None:
        if table.shape != (self.n_items, self.hidden):
            raise ValueError(f"init table has shape {table.shape}, expected ({self.n_items}, {self.hidden})")
        with torch.no_grad():
            self.items.weight.zero_()
            self.items.weight[1 : self.n_items + 1] = torch.as_tensor(table, dtype=torch.float32)

    def encode(self, inp: SeqInput, last_only: bool = False) -> Tensor:
        inp, added = self._maybe_leading_pad(self.encoder, inp)
        x = self.inputs(self.items(inp.tokens), inp.positions)
        last = self._encoder_last_only(self.encoder, last_only)
        out = self.encoder(x, inp.mask, **self._encoder_kwargs(inp, shared_pad=True), **last)
        return out[:, 1:] if added and not last else out

    def item_vectors(self, ids: Tensor) -> Tensor:
        return self.items(ids)


@MODELS.register("llminit")
class LLMInitRecommender(IDRecommender):
    """Requires ``init_table``: the LLM item embeddings reduced (PCA) to ``hidden`` dims."""

    @classmethod
    def requirements(cls, cfg) -> set[str]:
        return {"llm_items", "pca"}

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> LLMInitRecommender:
        return cls(n_items, init_table=assets.pca_table, max_len=max_len, **common_options(cfg))

    def __init__(self, n_items: int, init_table: np.ndarray | None = None, **kwargs) -> None:
        if init_table is None:
            raise ValueError("llminit needs LLM item embeddings (set embedding.provider or embedding.item_embeddings)")
        super().__init__(n_items, init_table=init_table, **kwargs)
