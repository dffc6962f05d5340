"""The recommender contract every model family implements (plain backbones, LLMInit, LLM-ESR, baselines).

A recommender scores ``<user representation, item representation>``:

* ``encode(inp) -> (B, L, D)``: a representation at every position of a right-aligned sequence batch;
* ``item_vectors(ids) -> (..., D)`` and ``all_item_vectors() -> (n_items + 1, D)`` (row 0 = padding);
* ``objective``: how the backbone trains (``seq2seq``, ``cloze`` or ``last``);
* ``auxiliary_loss(ctx)``: an extra training loss (LLM-ESR's self-distillation), or None;
* ``ranking_bonus(recent_items)`` and ``ranking_similarity(recent_items, n_rows)``: ranking-time terms after a
  history's last items (LLMInit's text-neighbour bonus, dense text term and popularity tilt), added by
  ``add_ranking_bonus`` wherever a model ranks (evaluation and serving, never training).

Training and evaluation code only use this contract, so a new model family is one class.

New items (serving, the cold-item protocol) extend the catalogue after training. A family that can represent
an item it never trained on implements one of:

* ``add_items(llm_vectors, assets)``: from the items' raw LLM vectors, preprocessed exactly as in training
  (same provider and prompt template, centred when ``embedding.center_items`` is set); ``assets`` are the
  training-time ``ModelAssets`` (e.g. the PCA projection). LLM-enhanced families (``llmesr``, ``llminit``);
* ``add_untrained_items(count)``: what the family knows about an item it never saw (nothing: an untrained
  row); ID-only families (``id``, ``pop``), so the cold-item protocol can measure them too.

Either way the new items get ids ``n_items + 1 .. n_items + count`` and are scored and read as history inputs
like any other item; ``grow_catalogue`` moves [MASK] (``n_items + 1``, used by BERT4Rec) to the new end, so
every table with a [MASK] row must insert new rows before it (``insert_item_rows``). Families that support
neither raise ``NewItemsUnsupported``; ``new_item_support`` says which path a family takes before any training
starts.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from esrkit.data.tensors import SeqInput
from esrkit.embedding.pca import PCAProjection
from esrkit.models.base import encoder_meta


class NewItemsUnsupported(ValueError):
    """The model family has no way to represent an item it never trained on."""


@dataclass
class ModelAssets:
    """Precomputed inputs a model family may need (computed by the pipeline only if ``requirements`` asks)."""

    llm_items: np.ndarray | None = None  # (n_items, d_llm) LLM item embeddings, row i-1 = item i
    pca_table: np.ndarray | None = None  # (n_items, pca_dim) PCA of llm_items
    pca_projection: PCAProjection | None = None  # the projection that made pca_table (for items added later)


class SequentialRecommender(nn.Module):
    uses_distillation = (
        False  # True: the trainer adds retrieval-augmented self-distillation (needs neighbours)
    )
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
    def item_tables(self) -> list[nn.Parameter]:
        """The trainable per-item embedding tables, which ``train.item_lr`` trains at their own rate; a model
        without them cannot take that option."""
        return []

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

    def target_neighbours(self, pos: Tensor) -> Tensor | None:
        """(m, K) items that share a training target's mass under ``model.neighbour_smoothing`` (the items
        most like each target in ``pos`` (m,)), or None where the model has no such list."""
        return None

    def setup(self, data: Any) -> None:
        """Called once with the SequenceData before training (e.g. to compute popularity or head/tail splits
        from the training part only)."""

    def restore_state(self, data: Any) -> None:
        """Called after a checkpoint is loaded into a rebuilt model, with the run's SequenceData: recompute
        from the training part what a checkpoint written by an older esrkit lacks."""

    def on_epoch_start(self, ctx: Any) -> None:
        """Called before every training epoch (e.g. to refresh statistics a baseline needs)."""

    # how many of a history's last items ``ranking_bonus`` and ``ranking_similarity`` read
    bonus_history: int = 1

    def ranking_bonus(self, recent_items: Tensor) -> tuple[Tensor, Tensor | float] | None:
        """Items that get a score bonus when ranking after histories that end with ``recent_items`` (B,
        bonus_history): the last input items, most recent first, 0 where a history is shorter. Returns (B, J)
        item ids and their bonus (one value, or (B, J) values; an id listed twice gets both), or None.
        Applied by evaluation (final, not epoch selection) and serving, never in training
        (``add_ranking_bonus``)."""
        return None

    def ranking_similarity(self, recent_items: Tensor, n_rows: int) -> list[tuple[Tensor, Tensor]]:
        """Dense ranking-time terms after histories that end with ``recent_items`` (as ``ranking_bonus``):
        per term, (B, E) user factors and (n_rows, E) factors of every item id, whose product is added to the
        scores (``add_ranking_bonus``); none by default. Applied where ``ranking_bonus`` is. A list, not one
        concatenated pair, so that a term's item table can be kept between calls."""
        return []

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

    def run_encoders(
        self,
        inp: SeqInput,
        views: Callable[[SeqInput], list[Tensor]],
        encoders: Sequence[nn.Module],
        *,
        last_only: bool = False,
        shared_pad: bool = True,
        stack: bool = True,
        finish: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """The user states of every view side by side, (B, L, sum of widths) ((B, 1, .) with ``last_only``
        where the encoders support it): ``views(inp)`` gives each view's input sequence, ``encoders`` one
        encoder per view (the same module when the views share it), ``finish`` acts on the states before a
        padding column added here is removed.

        The rules every family's encoder call shares live here, so a model reads as its equations:

        * a recurrent encoder reads the official padding input from a padding column, added to a batch without
          one (``emulate_padding``) and removed from the output;
        * ``pad_count`` / ``shared_pad`` (``shared_pad``: every row's padding input is the same vector)
          reproduce the official fixed-length computation on trimmed batches;
        * views that share one encoder run as one stacked batch when ``stack``: every row of a stacked batch
          gets its own dropout draws, so this equals one call per view.
        """
        first = encoders[0]
        inp, added = self._maybe_leading_pad(first, inp)
        xs = views(inp)
        mask = inp.mask
        kwargs = self._encoder_kwargs(inp, shared_pad)
        last = self._encoder_last_only(first, last_only)
        if len(xs) == 1:
            out = first(xs[0], mask, **kwargs, **last)
        elif stack and all(encoder is first for encoder in encoders):
            n = len(xs)
            repeated = {k: (v.repeat(n) if isinstance(v, Tensor) else v) for k, v in kwargs.items()}
            out = torch.cat(first(torch.cat(xs, 0), mask.repeat(n, 1), **repeated, **last).chunk(n, 0), -1)
        else:
            out = torch.cat(
                [
                    encoder(x, mask, **kwargs, **self._encoder_last_only(encoder, last_only))
                    for encoder, x in zip(encoders, xs)
                ],
                -1,
            )
        if finish is not None:
            out = finish(out)
        return out[:, 1:] if added and not last else out

    def _encoder_kwargs(self, inp: SeqInput, shared_pad: bool) -> dict[str, Any]:
        if not self.emulate_padding:
            return {}
        return {"pad_count": inp.pad_count, "shared_pad": shared_pad}

    def _maybe_leading_pad(self, encoder: nn.Module, inp: SeqInput) -> tuple[SeqInput, bool]:
        """Recurrent encoders read the padding input from a padding column; add one when the batch has
        none."""
        if (
            self.emulate_padding
            and getattr(encoder, "needs_leading_pad", False)
            and inp.tokens.shape[1] < self.max_len
        ):
            return inp.with_leading_pad(), True
        return inp, False

    def _encoder_last_only(self, encoder: nn.Module, last_only: bool) -> dict[str, Any]:
        """``last_only`` for encoders that support it (an encoder that does not returns every position)."""
        return {"last_only": True} if last_only and getattr(encoder, "supports_last_only", False) else {}

    # -------------------------------------------------------------------- new items (module docstring)
    @classmethod
    def new_item_support(cls, cfg: Any) -> str:
        """``"text"`` (``add_items``), ``"untrained"`` (``add_untrained_items``) or ``""`` (neither), for a
        ModelConfig, known before training. The default reads which of the two methods the family
        overrides."""
        if cls.add_items is not SequentialRecommender.add_items:
            return "text"
        if cls.add_untrained_items is not SequentialRecommender.add_untrained_items:
            return "untrained"
        return ""

    def add_items(self, llm_vectors: np.ndarray, assets: ModelAssets) -> None:
        """Append ``len(llm_vectors)`` items represented from their (preprocessed) LLM vectors."""
        raise NewItemsUnsupported(
            f"model family {type(self).__name__} scores items by vectors learned in training only, so an "
            "item added after training has no representation; train an LLM-enhanced family (llmesr, "
            "llminit) to add items from their text"
        )

    def add_untrained_items(self, count: int, generator: torch.Generator | None = None) -> None:
        """Append ``count`` items the family knows nothing about (ID-only families: an untrained row)."""
        raise NewItemsUnsupported(f"model family {type(self).__name__} cannot add items it never trained on")

    def grow_catalogue(self, count: int) -> None:
        """Record ``count`` appended items: ``n_items`` grows and [MASK] moves to the new ``n_items + 1``."""
        self.n_items += int(count)
        self.mask_token = self.n_items + 1


def add_ranking_bonus(
    scores: Tensor, model: SequentialRecommender, recent_items: Tensor, candidates: Tensor | None = None
) -> Tensor:
    """``scores`` plus the model's ranking bonus (``SequentialRecommender.ranking_bonus``) and dense terms
    (``ranking_similarity``) after histories ending with ``recent_items`` (B, model.bonus_history), in place:
    (B, n_items + 1) scores of every item id, or (B, C) scores of the ``candidates`` (B, C) ids. Padding never
    gets either."""
    n_rows = scores.shape[1] if candidates is None else model.n_items + 1
    for query, table in dense_terms(model.ranking_similarity(recent_items, n_rows)):
        if candidates is None:
            scores.addmm_(query.to(scores.dtype), table.to(scores.dtype).T)
        else:
            scores.add_((table[candidates] * query.unsqueeze(1)).sum(-1).to(scores.dtype))
    bonus = model.ranking_bonus(recent_items)
    if bonus is None:
        return scores
    ids, value = bonus
    value = torch.as_tensor(value, dtype=scores.dtype, device=scores.device).expand(ids.shape)
    if candidates is None:  # touch the (B, J) boosted scores only, not a (B, n_items + 1) mask
        padding = scores[:, 0].clone()  # an id list may hold padding (an item without neighbours)
        scores.scatter_add_(1, ids, value)
        scores[:, 0] = padding
        return scores
    hits = (candidates.unsqueeze(-1) == ids.unsqueeze(1)) & (candidates != 0).unsqueeze(-1)  # (B, C, J)
    return scores.add_((hits.to(scores.dtype) * value.unsqueeze(1)).sum(-1))


def dense_terms(returned) -> list[tuple[Tensor, Tensor]]:
    """``ranking_similarity``'s terms as a list; a plug-in written for the earlier contract (one
    (query, table) pair, or None) still works."""
    if returned is None:
        return []
    if isinstance(returned, tuple) and len(returned) == 2 and all(isinstance(t, Tensor) for t in returned):
        return [returned]
    return list(returned)


def recent_items(histories: Sequence[np.ndarray], count: int) -> np.ndarray:
    """(B, count) the last ``count`` items of each history, most recent first, 0 where a history is shorter:
    what ``ranking_bonus`` reads."""
    out = np.zeros((len(histories), count), dtype=np.int64)
    for row, history in enumerate(histories):
        tail = np.asarray(history, dtype=np.int64)[::-1][:count]
        out[row, : len(tail)] = tail
    return out


def insert_item_rows(table: Tensor, rows: Tensor, n_items: int) -> Tensor:
    """``table`` (padding row 0, items 1..n_items, then any [MASK] row) with ``rows`` inserted after item
    ``n_items``: the new items take ids n_items+1.., and a [MASK] row moves to the new end."""
    rows = rows.to(device=table.device, dtype=table.dtype)
    if rows.ndim != table.ndim or rows.shape[1:] != table.shape[1:]:
        raise ValueError(
            f"new item rows have shape {tuple(rows.shape)}; the table's rows are {tuple(table.shape[1:])}"
        )
    return torch.cat([table[: n_items + 1], rows, table[n_items + 1 :]], 0)


def grow_embedding(embedding: nn.Embedding, rows: Tensor, n_items: int) -> None:
    """Insert ``rows`` into an item ``nn.Embedding`` (``insert_item_rows``), trainable or not as before."""
    weight = insert_item_rows(embedding.weight.detach(), rows, n_items)
    embedding.weight = nn.Parameter(weight, requires_grad=embedding.weight.requires_grad)
    embedding.num_embeddings = weight.shape[0]


def as_vectors(llm_vectors: np.ndarray | Tensor, dim: int, family: str) -> np.ndarray:
    """New items' LLM vectors as a (m, dim) float32 array, or a clear error."""
    arr = np.asarray(
        llm_vectors.detach().cpu() if isinstance(llm_vectors, Tensor) else llm_vectors, dtype=np.float32
    )
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(
            f"{family}: new items need (n, {dim}) LLM vectors (the training table's width), "
            f"got shape {arr.shape}; embed them with the provider the model was trained with"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{family}: new items' LLM vectors contain NaN or infinity")
    return arr


@functools.cache
def _takes_last_only(cls: type) -> bool:
    """Whether ``cls.encode`` accepts ``last_only`` (a subclass overriding ``encode`` without it does not)."""
    return "last_only" in inspect.signature(cls.encode).parameters
