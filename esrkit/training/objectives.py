"""Training objectives: which states each backbone scores, and LLM-ESR's retrieval-augmented self-distillation
(SD).

Scored positions: every real input position (seq2seq), the masked positions (cloze), the last position (last).
The ranking loss applied to them (official: BCE with one negative) is chosen in esrkit/training/losses.py.

SD (official ``--user_sim_func kd``): a *second* forward pass of the same input gives the student (last
position); the N most similar users' train[:-1] sequences go through the same model in training mode (dropout
on) with no gradient, their last positions are averaged into the teacher; ``nn.MSELoss`` (mean over batch x
dims) between them, weighted by alpha. ``sd_loss="paper"`` uses Eq. (9) (squared L2 per user, averaged over
users).

Speed without changing results: sequences are split into a few length buckets so short sequences are not
padded to the longest one in the batch (every sequence is encoded independently, so this is exact), and
teachers run under ``torch.no_grad()`` (the official code builds their autograd graph and then detaches).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from esrkit.data.batches import TrainBatch, teacher_input
from esrkit.data.tensors import DeviceSequences, SeqInput, length_buckets
from esrkit.models.recommender import SequentialRecommender
from esrkit.training.losses import LossContext, ranking_loss_from_states


def _bucket_inputs(
    inp: SeqInput, buckets: list[np.ndarray], lengths: np.ndarray | None = None
) -> list[tuple[Tensor, SeqInput]]:
    """[(rows, their input trimmed to its own longest sequence)] per bucket. ``lengths`` (real items per row,
    on the host) avoids a device synchronisation per bucket."""
    device_lengths = inp.mask.sum(1) if lengths is None else None
    out = []
    for rows_np in buckets:
        rows = torch.as_tensor(rows_np, device=inp.tokens.device)
        if lengths is not None:
            width = max(1, int(lengths[rows_np].max()))
        else:
            width = max(1, int(device_lengths[rows].max().item()))
        out.append((rows, inp.rows(rows).last_columns(width)))
    return out


def encode_bucketed(
    model: SequentialRecommender, inp: SeqInput, buckets: list[np.ndarray], lengths: np.ndarray | None = None
) -> list[tuple[Tensor, Tensor]]:
    """[(rows, encode(rows trimmed to their own longest sequence))] per bucket."""
    return [(rows, model.encode(sub)) for rows, sub in _bucket_inputs(inp, buckets, lengths)]


def last_hidden_bucketed(
    model: SequentialRecommender, inp: SeqInput, buckets: list[np.ndarray], lengths: np.ndarray | None = None
) -> Tensor:
    """``model.last_hidden`` per bucket (the last position only, which is all teachers and students need)."""
    result = None
    for rows, sub in _bucket_inputs(inp, buckets, lengths):
        last = model.last_hidden(sub)
        if result is None:
            result = last.new_empty(inp.tokens.shape[0], last.shape[-1])
        result[rows] = last
    assert result is not None
    return result


def _scored_states(
    model: SequentialRecommender, batch: TrainBatch, outputs: list[tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor, Tensor]:
    """(hidden states that get a loss (m, D), their positive ids (m,), negative ids (m, k)) over all
    buckets."""
    hs, pos_ids, neg_ids = [], [], []
    for rows, h in outputs:
        if model.objective == "last":
            hs.append(h[:, -1])
            pos_ids.append(batch.pos[rows])
            neg_ids.append(batch.neg[rows])
            continue
        width = h.shape[1]
        pos = batch.pos[rows][:, -width:]
        scored = pos != 0
        hs.append(h[scored])
        pos_ids.append(pos[scored])
        neg_ids.append(batch.neg[rows][:, -width:][scored])
    return torch.cat(hs), torch.cat(pos_ids), torch.cat(neg_ids)


def ranking_loss(
    model: SequentialRecommender,
    batch: TrainBatch,
    loss: LossContext,
    buckets: list[np.ndarray] | None = None,
) -> Tensor:
    """L_Rank (Eq. (6) with ``model.loss=bpr``; official: BCE) over the scored states of every length
    bucket."""
    buckets = buckets or [np.arange(batch.inp.tokens.shape[0])]
    outputs = encode_bucketed(model, batch.inp, buckets, batch.lengths_np)
    return ranking_loss_from_states(model, *_scored_states(model, batch, outputs), loss)


def ranking_loss_and_student(
    model: SequentialRecommender,
    batch: TrainBatch,
    loss: LossContext,
    buckets: list[np.ndarray] | None = None,
) -> tuple[Tensor, Tensor]:
    """The ranking loss and the SD student (the official code's second forward pass of the same input, with
    new dropout masks).

    On a CPU, with an attention encoder, they are two calls, the student's for the last position only (its
    last layer shrinks to one query). Otherwise (a step bound by kernel launches, or a recurrent encoder,
    which gains nothing from the last position alone) they are *one* call over the batch stacked twice: every
    row of a stacked batch gets its own dropout masks, so [input; input] has exactly the distribution of the
    two passes, at half the launches."""
    n = batch.inp.tokens.shape[0]
    buckets = buckets or [np.arange(n)]
    if batch.inp.tokens.device.type == "cpu" and _attention_encoder(model):
        rank = ranking_loss(model, batch, loss, buckets)
        return rank, last_hidden_bucketed(model, batch.inp, buckets, batch.lengths_np)
    inp = batch.inp
    doubled = SeqInput(
        torch.cat([inp.tokens, inp.tokens]),
        torch.cat([inp.positions, inp.positions]),
        torch.cat([inp.pad_count, inp.pad_count]),
    )
    lengths = None if batch.lengths_np is None else np.concatenate([batch.lengths_np, batch.lengths_np])
    outputs = encode_bucketed(model, doubled, [np.concatenate([b, b + n]) for b in buckets], lengths)
    rank_outputs, student = [], None
    for rows, h in outputs:
        first = rows < n
        rank_outputs.append((rows[first], h[first]))
        last = h[~first][:, -1]
        if student is None:
            student = last.new_empty(n, last.shape[-1])
        student[rows[~first] - n] = last
    rank = ranking_loss_from_states(model, *_scored_states(model, batch, rank_outputs), loss)
    assert student is not None
    return rank, student


def _attention_encoder(model: SequentialRecommender) -> bool:
    """Whether the model's encoder attends (its cost grows with the square of a bucket's width, and it can
    compute the last position alone); recurrent encoders instead pay a loop over the padding steps per call.
    """
    return bool(getattr(getattr(model, "encoder", None), "supports_last_only", False))


def _stochastic(model: torch.nn.Module) -> bool:
    """True when a forward pass in the current mode draws random numbers (dropout with p > 0)."""
    return model.training and any(
        getattr(m, "p", 0.0) > 0
        for m in model.modules()
        if m is not model and hasattr(m, "p") and isinstance(m.p, float)
    )


class SelfDistillation:
    """Retrieval-augmented SD. ``neighbours``: (n_users, >= N) 0-based user rows, most similar first."""

    def __init__(
        self,
        seqs: DeviceSequences,
        neighbours: np.ndarray,
        n_similar: int = 10,
        alpha: float = 0.1,
        scale: str = "mse_mean",
        max_len: int = 200,
        refresh: str = "step",
        buckets: int = 0,
    ) -> None:
        if neighbours.shape[0] != seqs.n_users:
            raise ValueError(f"neighbour table has {neighbours.shape[0]} rows for {seqs.n_users} users")
        if neighbours.shape[1] < n_similar:
            raise ValueError(
                f"neighbour table keeps {neighbours.shape[1]} users per row; N = {n_similar} needed"
            )
        if scale not in ("mse_mean", "paper"):
            raise ValueError(f"sd_loss must be 'mse_mean' or 'paper', not {scale!r}")
        if refresh not in ("step", "epoch"):
            raise ValueError(f"teacher_refresh must be 'step' or 'epoch', not {refresh!r}")
        self.seqs, self.n, self.alpha, self.scale = seqs, n_similar, alpha, scale
        self.neighbours = np.ascontiguousarray(neighbours[:, :n_similar]).astype(np.int64)
        self.max_len, self.refresh, self.buckets = max_len, refresh, buckets
        self._cache: Tensor | None = None

    def teachers(self, model: SequentialRecommender, users: np.ndarray) -> Tensor:
        """Eq. (8): the teacher mediator, mean pooling of the last-position representations of each user's N
        similar users (found by Eq. (7): esrkit/index/), with the gradient stopped."""
        sim = self.neighbours[users].reshape(-1)
        if self.refresh == "epoch":
            assert self._cache is not None, "call refresh_cache() at the start of each epoch"
            rep = self._cache[torch.as_tensor(sim, device=self._cache.device)]
        else:
            # a model without active dropout (GRU4Rec) gives every occurrence of a teacher the same vector, so
            # each distinct teacher is encoded once; with dropout every occurrence keeps its own draw, as
            # official
            unique, inverse = np.unique(sim, return_inverse=True) if not _stochastic(model) else (sim, None)
            with torch.no_grad():  # train mode (dropout on) as official, but no autograd graph
                inp = teacher_input(self.seqs, unique, self.max_len)
                lengths = np.clip(self.seqs.train_lengths(unique) - 1, 0, self.max_len)
                rep = last_hidden_bucketed(model, inp, self._buckets(model, lengths), lengths)
            if inverse is not None:
                rep = rep[torch.as_tensor(inverse, device=rep.device)]
        return rep.view(len(users), self.n, -1).mean(1)  # Eq. (8)

    def _buckets(self, model: SequentialRecommender, lengths: np.ndarray) -> list[np.ndarray]:
        """Teacher length buckets. ``buckets=0``: for an attention encoder on a CPU one bucket per 64 teachers
        (at least 4), because attention costs the square of the bucket's width (10 teachers per user make
        theirs the largest share of a step); otherwise 4 (kernel launches, or a recurrent encoder's padding
        loop, cost more per bucket than the padding)."""
        fine = self.seqs.device.type == "cpu" and _attention_encoder(model)
        n = self.buckets or (max(4, len(lengths) // 64) if fine else 4)
        return length_buckets(lengths, n)

    @torch.no_grad()
    def refresh_cache(self, model: SequentialRecommender, batch_size: int = 1024) -> None:
        """teacher_refresh="epoch": every user's teacher representation once per epoch, in eval mode."""
        was = model.training
        model.eval()
        reps = []
        for start in range(0, self.seqs.n_users, batch_size):
            rows = np.arange(start, min(start + batch_size, self.seqs.n_users))
            inp = teacher_input(self.seqs, rows, self.max_len)
            lengths = np.clip(self.seqs.train_lengths(rows) - 1, 0, self.max_len)
            reps.append(last_hidden_bucketed(model, inp, self._buckets(model, lengths), lengths))
        self._cache = torch.cat(reps)
        model.train(was)

    def loss(
        self,
        model: SequentialRecommender,
        batch: TrainBatch,
        buckets: list[np.ndarray],
        student: Tensor | None = None,
    ) -> Tensor:
        """L_SD between the student [u_co : u_se] of each user and its teacher mediator: the official mean
        squared error (``mse_mean``), or Eq. (9), the squared L2 distance averaged over users (``paper``)."""
        if student is None:  # a second forward pass of the ranking input (new dropout masks)
            student = last_hidden_bucketed(model, batch.inp, buckets, batch.lengths_np)
        users = batch.users_np if batch.users_np is not None else batch.users.cpu().numpy()
        teacher = self.teachers(model, users)
        if self.scale == "mse_mean":
            return F.mse_loss(student, teacher)
        return ((student - teacher) ** 2).sum(-1).mean()  # Eq. (9)
