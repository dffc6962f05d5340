"""RLMRec (Ren et al., WWW 2024) adapted to sequential recommendation, without profile generation.

RLMRec regularises a collaborative model with LLM representations: an auxiliary loss aligns each collaborative
representation with the semantic representation of the same user or item, while recommendation itself uses
only the collaborative model (the LLM side is training-time only). As in the LLM-ESR paper (Appendix B.2) the
LLM profiles are replaced by the embeddings esrkit already has: an item's LLM embedding, and for a user the
mean LLM embedding of the items of its training part (the user prompt lists those items).

* ``mode="con"`` (RLMRec-Con, default): an MLP maps semantic vectors into the collaborative space; InfoNCE
  with in-batch negatives between (user sequence representation, projected user semantics) and (item
  embedding, projected item semantics). Official: ``kd_weight`` 0.01, ``kd_temperature`` 0.2, MLP
  ``d_llm -> (d_llm + d) / 2 -> d`` with LeakyReLU, xavier-uniform weights.
* ``mode="gen"`` (RLMRec-Gen): masked reconstruction. A ``mask_ratio`` share of input positions is replaced by
  [MASK]; an MLP ``d -> (d + d_llm) / 2 -> d_llm`` maps the hidden states at masked positions (and the user
  representation) into the LLM space; InfoNCE against the masked items' (and users') LLM vectors. Official
  ``recon_weight`` 0.1, ``re_temperature`` 0.5, ``mask_ratio`` 0.15 (Amazon).

The LLM table is a frozen, non-persistent buffer: no gradient reaches it and checkpoints do not store it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esrkit.data.tensors import make_input
from esrkit.models.base import MODELS
from esrkit.models.baselines.common import TrainParts, read_options, sequence_representation
from esrkit.models.idrec import IDRecommender, common_options
from esrkit.models.recommender import ModelAssets

MODE_DEFAULTS = {"con": {"weight": 0.01, "temperature": 0.2}, "gen": {"weight": 0.1, "temperature": 0.5}}


@dataclass
class RLMRecOptions:
    """``model.extra.rlmrec``. ``weight``/``temperature`` left unset take the official value of the mode."""

    mode: str = "con"  # con (contrastive, RLMRec-Con) | gen (masked reconstruction, RLMRec-Gen)
    weight: float | None = None  # con: kd_weight 0.01; gen: recon_weight 0.1
    temperature: float | None = None  # con: kd_temperature 0.2; gen: re_temperature 0.5
    align: str = "both"  # users | items | both
    item_batch: int = 1024  # at most this many items (con) / masked positions (gen) aligned per step
    mask_ratio: float = 0.15  # gen only


@MODELS.register("rlmrec")
class RLMRec(IDRecommender):
    _parts: TrainParts | None = None

    @classmethod
    def requirements(cls, cfg) -> set[str]:
        return {"llm_items"}

    @classmethod
    def from_config(cls, cfg, n_items: int, max_len: int, assets: ModelAssets) -> RLMRec:
        if assets.llm_items is None:
            raise ValueError(
                "RLMRec needs LLM item embeddings (embedding.provider or embedding.item_embeddings)"
            )
        options = read_options(RLMRecOptions, cfg, "rlmrec")
        return cls(n_items, assets.llm_items, options=options, max_len=max_len, **common_options(cfg))

    def __init__(
        self, n_items: int, llm_items: np.ndarray, options: RLMRecOptions | None = None, **backbone
    ) -> None:
        super().__init__(n_items, **backbone)
        o = options or RLMRecOptions()
        if o.mode not in MODE_DEFAULTS:
            raise ValueError(f"RLMRec: mode must be 'con' or 'gen', not {o.mode!r}")
        if o.align not in ("users", "items", "both"):
            raise ValueError(f"RLMRec: align must be 'users', 'items' or 'both', not {o.align!r}")
        if llm_items.shape[0] != n_items:
            raise ValueError(
                f"RLMRec: LLM item embeddings have {llm_items.shape[0]} rows for {n_items} items"
            )
        self.mode, self.align, self.item_batch, self.mask_ratio = o.mode, o.align, o.item_batch, o.mask_ratio
        self.weight = MODE_DEFAULTS[o.mode]["weight"] if o.weight is None else o.weight
        self.temperature = MODE_DEFAULTS[o.mode]["temperature"] if o.temperature is None else o.temperature
        table = torch.as_tensor(np.asarray(llm_items), dtype=torch.float32)
        zero = table.new_zeros(1, table.shape[1])
        self.register_buffer("semantic_table", torch.cat([zero, table, zero]), persistent=False)
        d_llm, d = table.shape[1], self.hidden
        d_in, d_out = (d_llm, d) if o.mode == "con" else (d, d_llm)
        self.projector = nn.Sequential(
            nn.Linear(d_in, (d_llm + d) // 2), nn.LeakyReLU(), nn.Linear((d_llm + d) // 2, d_out)
        )
        for layer in self.projector:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)

    def setup(self, data) -> None:
        self._parts = TrainParts(data, self.device)

    # ------------------------------------------------------------------ training hook
    def auxiliary_loss(self, batch, ctx) -> Tensor | None:
        if self.weight == 0:
            return None
        return self.weight * self.alignment_loss(batch, ctx.generator)

    def alignment_loss(self, batch, generator: torch.Generator | None = None) -> Tensor:
        """The unweighted RLMRec loss for this batch (users of ``batch``, items of ``batch``)."""
        parts = self._require_setup()
        # each user's training part (no valid/test items); BERT4Rec batches can hold a user twice
        users = parts.user_windows(torch.unique(batch.users), self.max_len)
        terms = []
        if self.align in ("users", "both"):
            terms.append(self._user_term(users))
        if self.align in ("items", "both"):
            terms.append(self._item_term(batch, users, generator))
        return torch.stack(terms).sum()

    def _user_term(self, tokens: Tensor) -> Tensor:
        collab = sequence_representation(self.encode, tokens, self.max_len, self.objective, self.mask_token)
        semantic = F.embedding_bag(tokens, self.semantic_table, mode="mean", padding_idx=0)
        if self.mode == "con":
            return info_nce(collab, self.projector(semantic), self.temperature)
        return info_nce(self.projector(collab), semantic, self.temperature)

    def _item_term(self, batch, tokens: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.mode == "gen":
            return self._masked_reconstruction(tokens, generator)
        ids = torch.unique(torch.cat([batch.pos.reshape(-1), batch.neg.reshape(-1)]))
        ids = ids[ids != 0]
        if len(ids) > self.item_batch:
            ids = ids[torch.randperm(len(ids), generator=generator, device=ids.device)[: self.item_batch]]
        return info_nce(self.items(ids), self.projector(self.semantic_table[ids]), self.temperature)

    def _masked_reconstruction(self, tokens: Tensor, generator: torch.Generator | None) -> Tensor:
        """RLMRec-Gen on sequences: hide a share of the positions, rebuild their LLM vectors from the
        context."""
        real = tokens != 0
        draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)
        hidden = (draw < self.mask_ratio) & real
        if not bool(hidden.any()):  # at least one position, so the loss is defined
            hidden = real & (draw == draw.masked_fill(~real, 2.0).min())
        masked = torch.where(hidden, torch.full_like(tokens, self.mask_token), tokens)
        states = self.encode(make_input(masked, self.max_len))[hidden]
        targets = self.semantic_table[tokens[hidden]]
        if len(states) > self.item_batch:
            keep = torch.randperm(len(states), generator=generator, device=states.device)[: self.item_batch]
            states, targets = states[keep], targets[keep]
        return info_nce(self.projector(states), targets, self.temperature)

    def _require_setup(self) -> TrainParts:
        if self._parts is None:
            raise RuntimeError("RLMRec needs setup(data) before training")
        return self._parts


def info_nce(anchor: Tensor, positive: Tensor, temperature: float) -> Tensor:
    """Mean InfoNCE of cosine similarities: row i's positive is ``positive[i]``, every other row a negative
    (the official ``cal_infonce_loss`` / ``ssl_con_loss``, averaged over anchors)."""
    a = F.normalize(anchor, dim=-1, eps=1e-8)
    p = F.normalize(positive, dim=-1, eps=1e-8)
    logits = a @ p.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))
