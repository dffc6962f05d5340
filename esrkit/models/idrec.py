"""Single-view recommenders: a plain backbone over trainable ID embeddings, and LLMInit.

``id`` is SASRec / BERT4Rec / GRU4Rec as the official code builds them (item table with ``padding_idx=0``,
xavier-normal init of everything, score = dot product with the item table). ``llminit`` is the paper's LLMInit
baseline (LLM2Bert4Rec / SAID): the same model whose item table starts from the LLM item embeddings reduced by
PCA to the hidden size, then fine-tuned.

New items: an ``id`` model knows nothing about an item it never trained on, so it gets an untrained row (the
table's own initialisation); an ``llminit`` item starts where its trained neighbours started, at the PCA
projection of its LLM vector.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.config import INIT_NORMS
from esrkit.data.tensors import SeqInput
from esrkit.models.base import MODELS, InputStage, build_encoder, official_init
from esrkit.models.fusion import ScoreNorm
from esrkit.models.neighbours import TextNeighbours
from esrkit.models.popularity import training_items
from esrkit.models.recommender import (
    ModelAssets,
    SequentialRecommender,
    as_vectors,
    grow_embedding,
    insert_item_rows,
)
from esrkit.models.text_start import TextStartGate


def common_options(cfg) -> dict:
    """Backbone options shared by every model family, from a ModelConfig."""
    return {
        "backbone": cfg.backbone,
        "hidden": cfg.hidden,
        "dropout": cfg.dropout,
        "layers": cfg.layers,
        "heads": cfg.heads,
        "causal": cfg.causal,
        "emulate_padding": cfg.emulate_padding,
        "encoder_options": dict(cfg.extra.get("encoder", {})),
    }


def score_options(cfg) -> dict:
    """Scoring options of the single-view families (id, llminit, alphafuse)."""
    return {"score_norm": cfg.score_norm, "temperature": cfg.temperature}


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
        score_norm: bool = False,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(n_items, backbone, max_len, emulate_padding)
        self.hidden = hidden
        self.score_norm = ScoreNorm(temperature) if score_norm else None
        self.items = nn.Embedding(n_items + 2, hidden, padding_idx=0)
        self.inputs = InputStage(self.input_style, hidden, max_len, dropout)
        layer_opt = {"layers": layers} if layers else {}  # 0: the encoder's own default
        self.encoder = build_encoder(
            backbone,
            hidden,
            heads=heads,
            dropout=dropout,
            causal=causal,
            **layer_opt,
            **(encoder_options or {}),
        )
        official_init(self)
        if init_table is not None:
            self._load_table(init_table)

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> IDRecommender:
        return cls(n_items, max_len=max_len, **common_options(cfg), **score_options(cfg))

    def _load_table(self, table: np.ndarray) -> None:
        if table.shape != (self.n_items, self.hidden):
            raise ValueError(f"init table has shape {table.shape}, expected ({self.n_items}, {self.hidden})")
        with torch.no_grad():
            self.items.weight.zero_()
            self.items.weight[1 : self.n_items + 1] = torch.as_tensor(table, dtype=torch.float32)

    def encode(self, inp: SeqInput, last_only: bool = False) -> Tensor:
        inp, added = self._maybe_leading_pad(self.encoder, inp)
        x = self.inputs(self.input_vectors(inp.tokens), inp.positions)
        last = self._encoder_last_only(self.encoder, last_only)
        out = self.encoder(x, inp.mask, **self._encoder_kwargs(inp, shared_pad=True), **last)
        if self.score_norm is not None:
            out = self.score_norm.users(out)
        return out[:, 1:] if added and not last else out

    def item_tables(self) -> list[nn.Parameter]:
        return [self.items.weight]

    def input_vectors(self, ids: Tensor) -> Tensor:
        """What an item is as an input of the sequence (and, unnormalised, as a candidate)."""
        return self.items(ids)

    def item_vectors(self, ids: Tensor) -> Tensor:
        vectors = self.input_vectors(ids)
        return vectors if self.score_norm is None else self.score_norm.items(vectors)

    def add_untrained_items(self, count: int, generator: torch.Generator | None = None) -> None:
        """Rows drawn like the table's xavier-normal initialisation (std for its trained shape): what the
        model would hold for an item it never saw."""
        rows, hidden = self.items.weight.shape
        std = xavier_std(rows, hidden)
        device = generator.device if generator is not None else "cpu"
        new = torch.randn(count, hidden, generator=generator, device=device) * std
        grow_embedding(self.items, new, self.n_items)
        self.grow_catalogue(count)


@MODELS.register("llminit")
class LLMInitRecommender(IDRecommender):
    """Requires ``init_table``: the LLM item embeddings reduced (PCA) to ``hidden`` dims.

    ``semantic_adapter`` (esrkit): every item vector also gets a trainable linear map of its frozen LLM
    vector, ``e_i = ID_i + W x_i + b``, with W and b starting at 0 (so training starts from LLMInit exactly).
    The ID part learns what each item's own interactions say; the shared map moves every item with its text,
    so an item with few interactions (or none yet) still gets a trained vector."""

    @classmethod
    def requirements(cls, cfg) -> set[str]:
        return {"llm_items", "pca"}

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> LLMInitRecommender:
        llm = assets.llm_items if cfg.semantic_adapter or cfg.text_neighbours else None
        return cls(
            n_items,
            init_table=assets.pca_table,
            llm_items=llm,
            anchor=cfg.anchor,
            semantic_adapter=cfg.semantic_adapter,
            text_neighbours=cfg.text_neighbours,
            new_item_norm=cfg.new_item_norm,
            init_norm=cfg.init_norm,
            start_gate=cfg.start_gate,
            neighbour_boost=cfg.neighbour_boost,
            neighbour_boost_items=cfg.neighbour_boost_items,
            neighbour_boost_tail=cfg.neighbour_boost_tail,
            text_boost=cfg.text_boost,
            text_boost_items=cfg.text_boost_items,
            text_boost_tail=cfg.text_boost_tail,
            popularity_tilt=cfg.popularity_tilt,
            popularity_tilt_items=cfg.popularity_tilt_items,
            neighbour_dropout=cfg.neighbour_dropout,
            max_len=max_len,
            **common_options(cfg),
            **score_options(cfg),
        )

    def __init__(
        self,
        n_items: int,
        init_table: np.ndarray | None = None,
        llm_items: np.ndarray | None = None,
        anchor: float = 0.0,
        semantic_adapter: bool | None = None,
        text_neighbours: int = 0,
        new_item_norm: str = "projection",
        init_norm: str = "pca",
        start_gate: bool = False,
        neighbour_boost: float = 0.0,
        neighbour_boost_items: int = 1,
        neighbour_boost_tail: float = 0.0,
        text_boost: float = 0.0,
        text_boost_items: int = 1,
        text_boost_tail: float = 0.0,
        popularity_tilt: float = 0.0,
        popularity_tilt_items: int = 1,
        neighbour_dropout: float = 0.0,
        **kwargs,
    ) -> None:
        if init_table is None:
            raise ValueError(
                "llminit needs LLM item embeddings (set embedding.provider or embedding.item_embeddings)"
            )
        if init_norm not in INIT_NORMS:
            raise ValueError(f"model.init_norm = {init_norm!r} must be one of {', '.join(INIT_NORMS)}")
        factor = backbone_scale(init_table, n_items) if init_norm == "backbone" else 1.0
        super().__init__(n_items, init_table=init_table * factor, **kwargs)
        # the factor the start was rescaled by, so items added later (add_items) start at the same scale; not
        # in checkpoints (a run's rebuilt model recomputes it from the PCA table), in exports (every buffer)
        self.register_buffer("init_factor", torch.tensor(factor), persistent=False)
        self.anchor, self.new_item_norm = anchor, new_item_norm
        self.start_gate = TextStartGate(self.items.weight) if start_gate else None
        if anchor > 0:  # the semantic starting point every item vector is pulled back to
            self.register_buffer("anchor_table", self.items.weight.detach().clone())
        self.semantic_adapter = llm_items is not None if semantic_adapter is None else semantic_adapter
        if (self.semantic_adapter or text_neighbours) and llm_items is None:
            raise ValueError("llminit: semantic_adapter and text_neighbours need the LLM item embeddings")
        self.text_neighbours = (
            TextNeighbours(llm_items, text_neighbours, neighbour_dropout) if text_neighbours else None
        )
        needs_neighbours = neighbour_boost or text_boost or popularity_tilt or neighbour_dropout
        if needs_neighbours and self.text_neighbours is None:
            raise ValueError(
                "llminit: neighbour_boost, text_boost, popularity_tilt and neighbour_dropout need "
                "text_neighbours"
            )
        self.neighbour_boost, self.neighbour_boost_items = neighbour_boost, neighbour_boost_items
        self.neighbour_boost_tail = neighbour_boost_tail
        self.text_boost, self.text_boost_items = text_boost, text_boost_items
        self.text_boost_tail = text_boost_tail
        self.popularity_tilt, self.popularity_tilt_items = popularity_tilt, popularity_tilt_items
        if self.semantic_adapter:
            table = torch.zeros(n_items + 2, llm_items.shape[1])
            table[1 : n_items + 1] = torch.as_tensor(llm_items, dtype=torch.float32)
            self.register_buffer(
                "semantic_table", table, persistent=False
            )  # frozen; rebuilt from the provider
            self.adapter = nn.Linear(llm_items.shape[1], self.hidden)
            nn.init.zeros_(self.adapter.weight)
            nn.init.zeros_(self.adapter.bias)

    def auxiliary_loss(self, batch, ctx) -> Tensor | None:
        """``anchor`` x the mean squared distance of every item vector from its PCA start: an item trained by
        few interactions stays near its text's position, while popular items move where their data says."""
        if self.anchor <= 0:
            return None
        rows = slice(1, self.n_items + 1)
        return self.anchor * (self.items.weight[rows] - self.anchor_table[rows]).pow(2).sum(-1).mean()

    def target_neighbours(self, pos: Tensor) -> Tensor | None:
        """The text neighbours of each target (``model.neighbour_smoothing``): under a full softmax an item is
        a negative in every step and a positive only in its own few, so a tail item's row is pushed away from
        users far more often than towards them; a share of each target's mass on the items its text resembles
        gives those rows a pull towards the users who bought their look-alikes."""
        return None if self.text_neighbours is None else self.text_neighbours.neighbour_ids[pos]

    def setup(self, data) -> None:
        counts = self._training_counts(data)
        for part in (self.text_neighbours, self.start_gate):
            if part is not None:
                part.set_popularity(counts)

    def restore_state(self, data) -> None:
        """What a checkpoint written before it existed lacks: the popularity tilt's centre."""
        tn = self.text_neighbours
        if tn is not None and torch.isnan(tn.popularity_centre):
            tn.restore_centre(self._training_counts(data))

    def _training_counts(self, data) -> np.ndarray:
        """(n_items + 1,) training interactions per item id, what the popularity parts are fitted on."""
        return np.bincount(training_items(data), minlength=self.n_items + 1)

    def own_vectors(self, ids: Tensor) -> Tensor:
        """Each item's own vector: its table row, less what the start gate takes of its text start."""
        vectors = self.items(ids)
        return vectors if self.start_gate is None else self.start_gate(vectors, ids)

    def input_vectors(self, ids: Tensor) -> Tensor:
        vectors = self.own_vectors(ids)
        if self.text_neighbours is not None:
            vectors = self.text_neighbours.mix(vectors, ids, self.own_vectors)
        if not self.semantic_adapter:
            return vectors
        unique, inverse = torch.unique(ids, return_inverse=True)  # the adapter once per distinct item
        semantic = self.adapter(self.semantic_table[unique])[inverse]
        return vectors + semantic * (ids != 0).unsqueeze(-1)  # padding stays the zero vector

    @property
    def bonus_history(self) -> int:
        """The last items the ranking-time terms read: as many as the longest of those that are on."""
        reads = [1]
        if self.neighbour_boost:
            reads.append(self.neighbour_boost_items)
        if self.text_boost:
            reads.append(self.text_boost_items)
        if self.popularity_tilt:
            reads.append(self.popularity_tilt_items)
        return max(reads)

    def ranking_bonus(self, recent_items: Tensor) -> tuple[Tensor, Tensor | float] | None:
        """``neighbour_boost`` for the text neighbours of the last ``neighbour_boost_items`` items: the next
        item is often one of them (docs/RESULTS.md, "The targets"), a sharp signal a dot product with one user
        vector only blurs. With ``neighbour_boost_tail`` = s, neighbour j gets 2 sigmoid(-s z_j) times the
        bonus (z_j: its standardised log training popularity): the trained scores already favour popular
        items, so the text signal is worth most for the rare ones."""
        if not self.neighbour_boost or self.text_neighbours is None:
            return None
        tn = self.text_neighbours
        recent = recent_items[:, : self.neighbour_boost_items]
        ids = tn.neighbour_ids[recent].flatten(1)  # (B, M K); padding's row lists padding only
        if not self.neighbour_boost_tail:
            return ids, self.neighbour_boost
        return ids, self.neighbour_boost * 2 * torch.sigmoid(
            -self.neighbour_boost_tail * tn.popularity_z[ids]
        )

    def ranking_similarity(self, recent_items: Tensor, n_rows: int) -> list[tuple[Tensor, Tensor]]:
        """The dense ranking-time terms that are on: the text term and the popularity tilt."""
        terms = [self.text_term(recent_items, n_rows), self.tilt_term(recent_items, n_rows)]
        return [t for t in terms if t is not None]

    def text_term(self, recent_items: Tensor, n_rows: int) -> tuple[Tensor, Tensor] | None:
        """``text_boost`` x the cosine, by text, of every item with the user's last ``text_boost_items``
        items (their unit LLM vectors summed), items rarer than average weighted up by ``text_boost_tail``
        (``TextNeighbours.text_similarity``): the bonus's signal spent on the whole catalogue instead of K
        neighbours, so a tail item that resembles the history gains even where it is no one's neighbour."""
        if not self.text_boost or self.text_neighbours is None:
            return None
        recent = recent_items[:, : self.text_boost_items]
        query, table = self.text_neighbours.text_similarity(recent, n_rows, self.text_boost_tail)
        return query * self.text_boost, table

    def tilt_term(self, recent_items: Tensor, n_rows: int) -> tuple[Tensor, Tensor] | None:
        """``popularity_tilt`` x (h_u - c) z_i (``TextNeighbours.popularity_tilt``): softmax training ranks
        every user's items by one popularity slope, and the last ``popularity_tilt_items`` items say whether
        this user buys rarer things than the average interaction does."""
        if not self.popularity_tilt or self.text_neighbours is None:
            return None
        recent = recent_items[:, : self.popularity_tilt_items]
        query, table = self.text_neighbours.popularity_tilt(recent, n_rows)
        return query * self.popularity_tilt, table

    def add_items(self, llm_vectors: np.ndarray, assets: ModelAssets) -> None:
        """The new rows start as the trained rows did: the PCA projection of the LLM vectors; with
        ``new_item_norm="trained"`` each is rescaled to the trained rows' mean length."""
        projection = assets.pca_projection
        if projection is None:
            raise ValueError("llminit: adding items needs the training PCA projection (mean and components)")
        rows = projection.transform(as_vectors(llm_vectors, projection.input_dim, "llminit"))
        rows = rows * float(self.init_factor)
        if self.new_item_norm == "trained":
            with torch.no_grad():
                trained = self.own_vectors(torch.arange(1, self.n_items + 1, device=self.device))
            rows = with_mean_length(rows, trained.float().cpu().numpy())
        grow_embedding(self.items, torch.as_tensor(rows), self.n_items)
        if self.start_gate is not None:  # a new item's start is its row: e = w(unseen) x row
            self.start_gate.add(torch.as_tensor(rows), self.n_items)
        if self.anchor > 0:
            self.anchor_table = insert_item_rows(self.anchor_table, torch.as_tensor(rows), self.n_items)
        if self.text_neighbours is not None:  # a new item borrows from the trained items its text resembles
            self.text_neighbours.add(
                as_vectors(llm_vectors, self.text_neighbours.keys.shape[1], "llminit"), self.n_items
            )
        if self.semantic_adapter:  # the shared map then scores the new items from their text too
            llm = torch.as_tensor(as_vectors(llm_vectors, self.semantic_table.shape[1], "llminit"))
            self.semantic_table = insert_item_rows(
                self.semantic_table, llm.to(self.semantic_table), self.n_items
            )
        self.grow_catalogue(len(rows))


def xavier_std(rows: int, hidden: int) -> float:
    """The std xavier-normal draws a (rows, hidden) table with (the official initialisation)."""
    return (2.0 / (rows + hidden)) ** 0.5


def backbone_scale(table: np.ndarray, n_items: int) -> float:
    """The factor that brings ``table``'s root-mean-square entry to the std the backbone's own initialisation
    draws its item table (n_items + 2 rows) with: PCA of unit LLM vectors sits about 3x above it, which random
    vectors then carry as noise the ID backbone does not start with."""
    rms = float(np.sqrt(np.mean(np.square(table, dtype=np.float64))))
    # an all-zero table is an export's placeholder, overwritten by the exported weights and init_factor
    return xavier_std(n_items + 2, table.shape[1]) / rms if rms > 0 else 1.0


def with_mean_length(rows: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """``rows`` rescaled, each to the mean L2 length of the ``trained`` rows (their directions kept). Training
    lengthens the vectors of the items it sees, so a bare PCA projection is shorter and ranks low in every
    user's dot products; a zero row stays zero."""
    target = float(np.linalg.norm(trained, axis=1).mean())
    lengths = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.where(lengths > 0, rows * (target / np.maximum(lengths, 1e-12)), rows).astype(rows.dtype)
