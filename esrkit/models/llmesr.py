"""LLM-ESR (Liu et al., NeurIPS 2024): dual-view modelling over any registered sequence encoder.

Where each equation of the paper (Section 3) is computed, so the file can be read beside it:

* Eq. (2) adapter ``e_se = W2 (W1 e_llm + b1) + b2``: ``Adapter`` (``semantic_vectors``);
* Eq. (3) ``u_se = f(S_se)``, and ``u_co = f(S_co)``: ``encode`` (one encoder ``f`` shared by both views);
* Eq. (4) cross-attention ``S^_co = softmax(Q K^T / sqrt(d)) V`` with Q from S_se, K and V from S_co (and the
  mirror image): ``CrossAttention``, applied in ``_view_sequences``;
* Eq. (5) logit-level fusion ``[e_se : e_co]^T [u_se : u_co]``: the views' user states and item vectors are
  concatenated here (``encode``, ``item_vectors``); the dot product is the training losses'
  (esrkit/training/losses.py) and the evaluator's, as for every family;
* Eq. (6) ranking loss, Eqs. (7)-(9) retrieval-augmented self-distillation and Eq. (10) the total loss:
  esrkit/training/losses.py, esrkit/training/objectives.py and esrkit/training/trainer.py (they need
  batches and teachers); this file holds the network.

As the official code (not the paper's notation): the concatenation order is [co; se], the adapter has no
activation, the cross-attentions have 2 heads, bias-free Q/K/V, an output projection with bias, a key-padding
mask and no residual, and their outputs *replace* the view sequences.

Every Table 2 / Table 6 ablation is a switch: ``co_view``, ``se_view``, ``share_encoder``,
``cross_attention``, ``adapter_layers`` (2 or 1), ``id_init`` (pca | random), ``freeze_semantic``. esrkit
additions, off by default (the official model): ``semantic_residual`` (a trainable per-item offset on the
frozen view) and the view fusion switches ``view_norm`` and ``gate`` (esrkit/models/fusion.py).

New items (``add_items``): the semantic view is exact, adapter(new LLM vector) through the trained adapter;
the collaborative row starts at the PCA projection of the new vector, where the trained rows started
(``id_init="random"``: at zero, so the semantic view alone ranks the item until it is trained).

Speed without changing the function: the adapter is affine, so it is applied as one composed matrix
``W2 @ W1`` to the *unique* items of a batch instead of two matrices to every token; the shared encoder runs
both views as one stacked batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esrkit.data.tensors import SeqInput
from esrkit.models.base import MODELS, InputStage, build_encoder, official_init
from esrkit.models.fusion import ViewFusion
from esrkit.models.idrec import common_options
from esrkit.models.popularity import training_items
from esrkit.models.recommender import (
    ModelAssets,
    SequentialRecommender,
    as_vectors,
    grow_embedding,
    insert_item_rows,
)


class Adapter(nn.Module):
    """Eq. (2): ``e_se = W2 (W1 e_llm + b1) + b2`` (1 layer: ``W e + b``). No activation, exactly as the
    official code."""

    def __init__(self, d_in: int, d_out: int, layers: int = 2) -> None:
        super().__init__()
        if layers == 2:
            self.layers = nn.ModuleList([nn.Linear(d_in, d_in // 2), nn.Linear(d_in // 2, d_out)])
        elif layers == 1:
            self.layers = nn.ModuleList([nn.Linear(d_in, d_out)])
        else:
            raise ValueError(f"adapter_layers must be 1 or 2, not {layers}")

    def composed(self) -> tuple[Tensor, Tensor]:
        weight, bias = self.layers[0].weight, self.layers[0].bias
        for layer in self.layers[1:]:
            weight, bias = layer.weight @ weight, layer.weight @ bias + layer.bias
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.composed()
        return F.linear(x, weight, bias)


class CrossAttention(nn.Module):
    """Eq. (4), the official ``Multi_CrossAttention``: ``softmax(Q K^T / sqrt(d_h)) V`` with queries from
    ``x``, keys and values from ``y``, per head; -1e9 on padding keys.

    ``causal=True`` also hides every later position (-inf, so a query whose earlier keys are all padding still
    cannot see the future): without it a causal backbone would read the next item through the other view."""

    def __init__(self, hidden: int, heads: int = 2, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} cross-attention heads")
        self.heads, self.head_dim = heads, hidden // heads
        self.q = nn.Linear(hidden, hidden, bias=False)
        self.k = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        B, L, d = x.shape
        H, dh = self.heads, self.head_dim
        q = self.q(x).view(B, L, H, dh).transpose(1, 2)
        k = self.k(y).view(B, L, H, dh).transpose(1, 2)
        v = self.v(y).view(B, L, H, dh).transpose(1, 2)
        if torch.is_grad_enabled() and self.q.weight.requires_grad:
            # the official arithmetic: masked logits are replaced, so no gradient reaches them (an additive
            # -1e9 would pass gradient through a row whose keys are all padding, which a GRU reads)
            scores = (q @ k.transpose(-1, -2)).masked_fill(~mask[:, None, None, :], -1e9) / math.sqrt(dh)
            if self.causal:
                future = torch.ones(L, L, dtype=torch.bool, device=x.device).triu(1)
                scores = scores.masked_fill(future, float("-inf"))
            att = torch.softmax(scores, -1) @ v
        else:  # teachers and evaluation: the same values from one fused call
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=self._bias(mask, L, x.dtype))
        return self.out(att.transpose(1, 2).reshape(B, L, d))

    def _bias(self, mask: Tensor, L: int, dtype: torch.dtype) -> Tensor:
        """The official masking as an additive bias for one fused attention call: -1e9 on padding keys (a row
        without any real key then averages every value, as official: its keys are identical padding vectors),
        -inf on later positions when causal. (Official: logits filled with -1e9, then divided by sqrt(d_h);
        both leave such keys at weight 0.)"""
        bias = torch.zeros(mask.shape[0], 1, 1, L, dtype=dtype, device=mask.device)
        bias.masked_fill_(~mask[:, None, None, :], -1e9)
        if self.causal:
            future = torch.ones(L, L, dtype=torch.bool, device=mask.device).triu(1)
            bias = bias.masked_fill(future, float("-inf"))
        return bias


@MODELS.register("llmesr")
class LLMESR(SequentialRecommender):
    uses_distillation = True

    @classmethod
    def requirements(cls, cfg) -> set[str]:
        need = {"llm_items"}
        if cfg.co_view and cfg.id_init == "pca":
            need.add("pca")
        return need

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> LLMESR:
        if assets.llm_items is None:
            raise ValueError(
                "LLM-ESR needs LLM item embeddings (embedding.provider or embedding.item_embeddings)"
            )
        return cls(
            n_items,
            assets.llm_items,
            assets.pca_table,
            max_len=max_len,
            co_view=cfg.co_view,
            se_view=cfg.se_view,
            share_encoder=cfg.share_encoder,
            cross_attention=cfg.cross_attention,
            cross_heads=cfg.cross_heads,
            adapter_layers=cfg.adapter_layers,
            id_init=cfg.id_init,
            freeze_semantic=cfg.freeze_semantic,
            semantic_residual=cfg.semantic_residual,
            view_norm=cfg.view_norm,
            gate=cfg.gate,
            temperature=cfg.temperature,
            **common_options(cfg),
        )

    def __init__(
        self,
        n_items: int,
        llm_items: np.ndarray,
        pca_table: np.ndarray | None = None,
        backbone: str = "sasrec",
        hidden: int = 64,
        max_len: int = 200,
        dropout: float = 0.5,
        layers: int = 0,
        heads: int = 1,
        causal: bool = False,
        emulate_padding: bool = True,
        co_view: bool = True,
        se_view: bool = True,
        share_encoder: bool = True,
        cross_attention: bool = True,
        cross_heads: int = 2,
        adapter_layers: int = 2,
        id_init: str = "pca",
        freeze_semantic: bool = True,
        semantic_residual: bool = False,
        view_norm: bool = False,
        gate: str = "none",
        temperature: float = 0.1,
        encoder_options: dict | None = None,
    ) -> None:
        super().__init__(n_items, backbone, max_len, emulate_padding)
        if not (co_view or se_view):
            raise ValueError("LLM-ESR needs at least one view (co_view or se_view)")
        if llm_items.shape[0] != n_items:
            raise ValueError(f"LLM item embeddings have {llm_items.shape[0]} rows for {n_items} items")
        if id_init not in ("pca", "random"):
            raise ValueError(f"id_init must be 'pca' or 'random', not {id_init!r}")
        self.hidden, self.co_view, self.se_view, self.id_init = hidden, co_view, se_view, id_init
        self.use_cross = cross_attention and co_view and se_view
        # modules are built in the official order: it fixes the parameter order, hence the initial weights
        skip: list[str] = []
        if se_view:
            skip += self._build_semantic_view(
                llm_items, hidden, adapter_layers, freeze_semantic, semantic_residual
            )
        if co_view:
            skip += self._build_collaborative_view(n_items, hidden, id_init, pca_table)
        self.inputs = InputStage(self.input_style, hidden, max_len, dropout)
        if self.use_cross:  # Eq. (4): semantic queries on collaborative keys, and the mirror image
            self.llm2id = CrossAttention(hidden, cross_heads, causal)
            self.id2llm = CrossAttention(hidden, cross_heads, causal)
        opts = dict(
            heads=heads,
            dropout=dropout,
            causal=causal,
            **({"layers": layers} if layers else {}),
            **(encoder_options or {}),
        )
        self.encoder = build_encoder(backbone, hidden, **opts)  # f in Eq. (3), shared by the views
        self.share_encoder = share_encoder
        if not share_encoder and co_view and se_view:  # the "w/o Share" ablation
            self.encoder_se = build_encoder(backbone, hidden, **opts)
        # esrkit: view_norm / gate between the views (off by default: Eq. (5) as it is)
        self.fusion = (
            ViewFusion(hidden, n_items, view_norm, gate, temperature) if (co_view and se_view) else None
        )
        official_init(self, skip=tuple(skip))
        if se_view and semantic_residual:
            nn.init.zeros_(self.semantic_offset.weight)
        if co_view and id_init == "pca":
            with torch.no_grad():
                self.collab.weight.copy_(_with_padding_rows(torch.as_tensor(pca_table, dtype=torch.float32)))

    def _build_semantic_view(
        self, llm_items: np.ndarray, hidden: int, adapter_layers: int, freeze: bool, residual: bool
    ) -> list[str]:
        """E_se, the LLM item table (frozen unless ``freeze`` is off), and the adapter of Eq. (2); returns the
        tables official_init leaves alone."""
        table = _with_padding_rows(torch.as_tensor(llm_items, dtype=torch.float32))
        if freeze:  # a buffer never receives gradients and is not saved in checkpoints
            self.register_buffer("semantic_table", table, persistent=False)
        else:  # the "w/o F" ablation: fine-tune the LLM table
            self.semantic_table = nn.Parameter(table)
        self.adapter = Adapter(llm_items.shape[1], hidden, adapter_layers)
        if not residual:
            return ["semantic_table"]
        # esrkit: a trainable per-item correction of the frozen view, starting at 0 (model.semantic_residual)
        self.semantic_offset = nn.Embedding(self.n_items + 2, hidden, padding_idx=0)
        return ["semantic_table", "semantic_offset"]

    def _build_collaborative_view(
        self, n_items: int, hidden: int, id_init: str, pca_table: np.ndarray | None
    ) -> list[str]:
        """E_co, the trainable ID table, initialised by PCA of E_se (``id_init="pca"``) after
        official_init."""
        self.collab = nn.Embedding(n_items + 2, hidden)  # no padding_idx, as official
        if id_init != "pca":
            return []
        if pca_table is None or pca_table.shape != (n_items, hidden):
            shape = None if pca_table is None else pca_table.shape
            raise ValueError(f"id_init='pca' needs a ({n_items}, {hidden}) PCA table, got {shape}")
        return ["collab"]

    def setup(self, data) -> None:
        if self.fusion is not None and self.fusion.gate == "popularity":
            self.fusion.set_popularity(np.bincount(training_items(data), minlength=self.n_items + 1))

    def score_views(self) -> list[slice]:
        """The slices of user and item vectors whose dot products are the views' own logits."""
        if not (self.co_view and self.se_view):
            return []
        return [slice(0, self.hidden), slice(self.hidden, 2 * self.hidden)]

    # ------------------------------------------------------------------ item side
    def semantic_vectors(self, ids: Tensor) -> Tensor:
        """Eq. (2), adapter(E_se[ids]) (+ the esrkit offset), computed once per distinct item."""
        unique, inverse = torch.unique(ids, return_inverse=True)
        out = self.adapter(self.semantic_table[unique])
        if hasattr(self, "semantic_offset"):
            out = out + self.semantic_offset(unique)
        return out[inverse]

    def _view_vectors(self, ids: Tensor) -> Tensor:
        parts = []
        if self.co_view:
            parts.append(self.collab(ids))
        if self.se_view:
            parts.append(self.semantic_vectors(ids))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def item_tables(self) -> list[nn.Parameter]:
        """E_co, and where trained, the semantic view's per-item offset or the fine-tuned E_se."""
        tables = [self.collab.weight]
        if hasattr(self, "semantic_offset"):
            tables.append(self.semantic_offset.weight)
        if isinstance(self.semantic_table, nn.Parameter):
            tables.append(self.semantic_table)
        return tables

    def item_vectors(self, ids: Tensor) -> Tensor:
        """[e_co : e_se], the item half of Eq. (5) (esrkit's view fusion on top when it is switched on)."""
        vectors = self._view_vectors(ids)
        return self.fusion.items(vectors, ids) if self.fusion is not None and self.fusion.active else vectors

    def all_item_vectors(self) -> Tensor:
        return self.item_vectors(torch.arange(self.n_items + 1, device=self.device))

    # ------------------------------------------------------------------ new items
    @classmethod
    def new_item_support(cls, cfg) -> str:
        """A collaborative-only variant with random init has nothing to start a new item from."""
        return "text" if cfg.se_view or cfg.id_init == "pca" else ""

    def add_items(self, llm_vectors: np.ndarray, assets: ModelAssets) -> None:
        """Semantic view: the new LLM vectors join the frozen table; collaborative view: the PCA start."""
        projection = assets.pca_projection
        if self.co_view and self.id_init == "pca" and projection is None:
            raise ValueError("llmesr: adding items needs the training PCA projection (mean and components)")
        if not self.se_view and projection is None:
            raise ValueError(
                "llmesr without the semantic view and with id_init='random' has nothing to "
                "start a new item from"
            )
        d_llm = self.adapter.layers[0].in_features if self.se_view else projection.input_dim
        vectors = as_vectors(llm_vectors, d_llm, "llmesr")
        if self.co_view:
            pca = self.id_init == "pca"
            rows = projection.transform(vectors) if pca else np.zeros((len(vectors), self.hidden), np.float32)
            grow_embedding(self.collab, torch.as_tensor(rows), self.n_items)
        if self.se_view:
            table = insert_item_rows(self.semantic_table.detach(), torch.as_tensor(vectors), self.n_items)
            if isinstance(self.semantic_table, nn.Parameter):  # the "w/o F" ablation keeps it trainable
                self.semantic_table = nn.Parameter(table)
            else:
                self.semantic_table = table  # stays a non-persistent buffer
            if hasattr(self, "semantic_offset"):  # a new item has no learned correction yet
                grow_embedding(self.semantic_offset, torch.zeros(len(vectors), self.hidden), self.n_items)
        if self.fusion is not None:
            self.fusion.grow(len(vectors), self.n_items)
        self.grow_catalogue(len(vectors))

    # ------------------------------------------------------------------ user side
    def encode(self, inp: SeqInput, last_only: bool = False) -> Tensor:
        """Eq. (3) per view, side by side: [u_co : u_se] at every position (the user half of Eq. (5))."""
        encoders = [self.encoder]
        if self.co_view and self.se_view:
            encoders.append(self.encoder if self.share_encoder else self.encoder_se)
        # a recurrent encoder cannot share one padding run between views whose padding inputs differ
        stack = self.use_cross or not getattr(self.encoder, "needs_leading_pad", False)
        fused = self.fusion is not None and self.fusion.active
        return self.run_encoders(
            inp,
            self._view_sequences,
            encoders,
            last_only=last_only,
            shared_pad=not self.use_cross,
            stack=stack,
            finish=self.fusion.users if fused else None,
        )

    def _view_sequences(self, inp: SeqInput) -> list[Tensor]:
        """The encoder inputs: S_co and S_se (Eq. (2) per item), through the input stage, and with both views
        the cross-attentions of Eq. (4), whose outputs replace them (no residual, as official)."""
        views = []
        if self.co_view:
            views.append(self.inputs(self.collab(inp.tokens), inp.positions))
        if self.se_view:
            views.append(self.inputs(self.semantic_vectors(inp.tokens), inp.positions))
        if self.use_cross:
            co, se = views
            mask = inp.mask
            views = [self.llm2id(se, co, mask), self.id2llm(co, se, mask)]  # [S^_co, S^_se]
        return views


def _with_padding_rows(table: Tensor) -> Tensor:
    """Prepend a zero row (id 0, padding) and append one (id n+1, [MASK]), as the official models do."""
    zero = table.new_zeros(1, table.shape[1])
    return torch.cat([zero, table, zero], 0)
