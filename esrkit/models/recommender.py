"""The recommender contract every model family implements (plain backbones, LLMInit, LLM-ESR, baselines).

A recommender scores ``<user representation, item representation>``:

* ``encode(inp) -> (B, L, D)``: a representation at every position of a right-aligned sequence batch;
* ``item_vectors(ids) -> (..., D)`` and ``all_item_vectors() -> (n_items + 1, D)`` (row 0 = padding);
* ``objective``: how the backbone trains (``seq2seq``, ``cloze`` or ``last``);
* ``auxiliary_loss(ctx)``: an extra training loss (LLM-ESR's self-distillation), or None.

Training and evaluation code only use this contract, so a new model family is one class.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.models.base import SeqInput, encoder_meta


@dataclass
class ModelAssets:
    """Precomputed inputs a model family may need (computed by the pipeline only if ``requirements`` asks)."""

    llm_items: np.ndarray | None = None  # (n_items, d_llm) LLM item embeddings, row i-1 = item i
    pca_table: np.ndarray | None = None  # (n_items, pca_dim) PCA of llm_items


class SequentialRecommender(nn.Module):
    uses_distillation = False  # True: the trainer adds retrieval-augmented self-distillation (needs neighbours)
    trainable = True  # False: no gradient training (e.g. the popularity baseline); ``setup`` fits it

    @classmethod
    def requirements(cls, cfg: Any) -> set[str]:
        """Which assets ``from_config`` needs: a subset of {"llm_items", "pca"}."""
        return set()

    @classmethod
    def from_config(cls, cfg: Any, n_items: int, max_len: int, assets: ModelAssets) -> SequentialRecommender:
        raise NotImplementedError

    def __init__(self, n_items: int, backbone: str, max_len: int, emulate_padding: bool) -> None:
        super().__init__()
        meta = encoder_meta(backbone)
        self.n_items = n_items
        self.mask_token = n_items + 1
        self.backbone = backbone
        self.objective: str = meta["objective"]
        self.input_style: str = meta["inputs"]
        self.max_len = max_len
        self.emulate_padding = emulate_padding

    # -------------------------------------------------------------------- to implement
    def encode(self, inp: SeqInput) -> Tensor:
        raise NotImplementedError

    def item_vectors(self, ids: Tensor) -> Tensor:
        raise NotImplementedError

    def all_item_vectors(self) -> Tensor:
        return self.item_vectors(torch.arange(self.n_items + 1, device=self.device))

    # -------------------------------------------------------------------- training hooks (all optional)
    def training_loss(self, batch: Any, ctx: Any) -> dict[str, Tensor] | None:
        """Replace the backbone's ranking loss: return {"loss": total, **parts}, or None to use the default
        (ranking loss + self-distillation). ``ctx`` is a ``StepContext`` (esrkit/training/trainer.py)."""
        return None

    def auxiliary_loss(self, batch: Any, ctx: Any) -> Tensor | None:
        """An extra loss added to the default one (weights are the model's business), or None."""
        return None

    def setup(self, data: Any) -> None:
        """Called once with the SequenceData before training (e.g. to compute popularity or head/tail splits
        from the training part only)."""

    def on_epoch_start(self, ctx: Any) -> None:
        """Called before every training epoch (e.g. to refresh statistics a baseline needs)."""

    # -------------------------------------------------------------------- shared helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def last_hidden(self, inp: SeqInput) -> Tensor:
        """The user representation used for prediction and distillation: the last position. Families whose
        ``encode`` takes ``last_only`` compute that position alone (their encoders skip the other positions'
        work in the last layer where they can; the values, dropout draws included, are the full pass's)."""
        if _takes_last_only(type(self)):
            return self.encode(inp, last_only=True)[:, -1]
        return self.encode(inp)[:, -1]

    def _encoder_kwargs(self, inp: SeqInput, shared_pad: bool) -> dict[str, Any]:
        if not self.emulate_padding:
            return {}
        return {"pad_count": inp.pad_count, "shared_pad": shared_pad}

    def _maybe_leading_pad(self, encoder: nn.Module, inp: SeqInput) -> tuple[SeqInput, bool]:
        """Recurrent encoders read the padding input from a padding column; add one when the batch has none."""
        if self.emulate_padding and getattr(encoder, "needs_leading_pad", False) and inp.tokens.shape[1] < self.max_len:
            return inp.with_leading_pad(), True
        return inp, False

    def frozen_parameter_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if not p.requires_grad]

    def _encoder_last_only(self, encoder: nn.Module, last_only: bool) -> dict[str, Any]:
        """``last_only`` for encoders that support it (an encoder that does not returns every position)."""
        return {"last_only": True} if last_only and getattr(encoder, "supports_last_only", False) else {}


@functools.cache
def _takes_last_only(cls: type) -> bool:
    """Whether ``cls.encode`` accepts ``last_only`` (a subclass overriding ``encode`` without it does not)."""
    return "last_only" in inspect.signature(cls.encode).parameters
