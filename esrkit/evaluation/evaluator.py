"""Evaluate a recommender on the validation or test split under both protocols.

* ``sampled`` (the paper's): the target against 100 uniform negatives that avoid the user's sequence (fixed
  per seed); every user is evaluated, as in the official code.
* ``full``: the target against every item; items of the user's input history are excluded (they are not
  recommendable), the target itself never is. Scores are computed in blocks of users, so memory is
  O(block x n_items), never O(users x items).

Both return per-user 0-based ranks (kept for significance tests) and H@K / N@K overall and for every long-tail
group (tail/head item, tail/head user, the 5 user and item buckets) that has users; an empty group is left out
rather than reported as NaN. Every output is labelled with its protocol.

A model's ranking-time terms (``SequentialRecommender.ranking_bonus`` and ``ranking_similarity``, e.g.
LLMInit's ``neighbour_boost`` and ``text_boost``) are part of how it ranks, so both protocols apply them,
unless ``ranking_bonus`` is off (training's epoch selection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from esrkit.data.batches import prediction_input
from esrkit.data.groups import Groups, compute_groups
from esrkit.data.sequences import SequenceData
from esrkit.data.tensors import DeviceSequences
from esrkit.evaluation.metrics import metrics_from_ranks, rank_of_target
from esrkit.evaluation.negatives import sample_eval_negatives
from esrkit.models.recommender import SequentialRecommender, add_ranking_bonus

PROTOCOLS = ("sampled", "full")


@dataclass
class EvalResult:
    split: str
    ranks: dict[str, np.ndarray]  # protocol -> (n_users,) 0-based ranks
    metrics: dict[str, dict[str, dict[str, float]]] = field(
        default_factory=dict
    )  # protocol -> group -> metric

    def get(self, protocol: str, metric: str, group: str = "overall") -> float:
        return self.metrics[protocol][group][metric]

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "metrics": self.metrics}


class Evaluator:
    def __init__(
        self,
        data: SequenceData,
        split: str,
        seqs: DeviceSequences,
        *,
        max_len: int = 200,
        negatives: int = 100,
        seed: int = 42,
        ks: tuple[int, ...] = (5, 10, 20),
        ties: str = "pessimistic",
        exclude_history: bool = True,
        batch_size: int = 1024,
        groups: Groups | None = None,
        ts_user: int = 9,
        ts_item: int = 4,
        group_rule: str = "official",
        resample_negatives: bool = False,
    ) -> None:
        if split not in ("valid", "test"):
            raise ValueError(f"split must be valid or test, not {split!r}")
        self.data, self.split, self.seqs = data, split, seqs
        self.max_len, self.n_negatives, self.seed = max_len, negatives, seed
        self.ks, self.ties, self.exclude_history, self.batch_size = (
            tuple(ks),
            ties,
            exclude_history,
            batch_size,
        )
        self.resample = resample_negatives
        self.groups = groups or compute_groups(data, split, ts_user, ts_item, group_rule, max_len)
        self.targets = data.targets(split)
        self.prefix, _ = data.split_lengths(split)  # input length per user: the items before the target
        self._negatives: np.ndarray | None = None
        self._round = 0
        # evaluate users in length order so each block pads little
        self.order = np.argsort(data.lengths(), kind="stable")
        self.ranking_bonus = True  # apply the model's ranking bonus (off while training selects epochs)

    def negatives(self) -> np.ndarray:
        if self._negatives is None or self.resample:
            self._negatives = sample_eval_negatives(
                self.data, self.split, self.n_negatives, self.seed, self._round
            )
            self._round += 1
        return self._negatives

    def encoding_batches(
        self, token_budget: int = 16_384, rows: tuple[int, int] | None = None
    ) -> list[np.ndarray]:
        """User rows in length order, cut so each batch holds about ``token_budget`` padded tokens
        (``rows=(lo, hi)``: only user rows lo..hi-1, for sharded evaluation)."""
        order = self.order if rows is None else self.order[(self.order >= rows[0]) & (self.order < rows[1])]
        width = np.minimum(self.prefix[order], self.max_len) + 1
        batches, start = [], 0
        while start < len(order):
            # rows are sorted by length, so the batch's width is its last row's width
            end = start + 1
            while (
                end < len(order)
                and end - start < self.batch_size
                and (end - start + 1) * width[end] <= token_budget
            ):
                end += 1
            batches.append(order[start:end])
            start = end
        return batches

    @torch.no_grad()
    def user_vectors(self, model: SequentialRecommender, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """(n_users, D) prediction representations, in user-row order (``rows=(lo, hi)``: (hi - lo, D) of
        those rows only)."""
        lo, hi = rows if rows is not None else (0, self.data.n_users)
        was_training = model.training
        model.eval()
        out = None
        for batch in self.encoding_batches(rows=rows):
            inp = prediction_input(
                self.seqs, batch, self.split, self.max_len, model.objective, model.mask_token
            )
            vec = model.last_hidden(inp)
            if out is None:
                out = vec.new_empty(hi - lo, vec.shape[1])
            out[torch.as_tensor(batch - lo, device=vec.device)] = vec
        model.train(was_training)
        assert out is not None
        return out

    @torch.no_grad()
    def evaluate(
        self,
        model: SequentialRecommender,
        protocols: tuple[str, ...] | list[str] = PROTOCOLS,
        users: torch.Tensor | None = None,
    ) -> EvalResult:
        """``users``: the model's ``user_vectors`` computed before, for callers that rank one model several
        ways (ranking-time options) without encoding every user again."""
        for p in protocols:
            if p not in PROTOCOLS:
                raise ValueError(f"unknown protocol {p!r}; use {PROTOCOLS}")
        ranks = self.compute_ranks(model, protocols, users=users)
        result = EvalResult(self.split, ranks)
        for p, r in ranks.items():
            result.metrics[p] = self.group_metrics(r)
        return result

    @torch.no_grad()
    def compute_ranks(
        self,
        model: SequentialRecommender,
        protocols: tuple[str, ...] | list[str],
        rows: tuple[int, int] | None = None,
        users: torch.Tensor | None = None,
    ) -> dict[str, np.ndarray]:
        """protocol -> 0-based rank of every user (``rows=(lo, hi)``: of user rows lo..hi-1 only; ``users``:
        their user vectors if already computed). The hook a sharded evaluator (esrkit/training/distributed.py)
        overrides to split users over processes."""
        lo = rows[0] if rows is not None else 0
        was_training = model.training
        model.eval()
        users = self.user_vectors(model, rows) if users is None else users
        items = model.all_item_vectors()
        ranks: dict[str, np.ndarray] = {}
        bonus = model if self.ranking_bonus else None
        if "sampled" in protocols:
            ranks["sampled"] = self._sampled_ranks(users, items, lo, bonus)
        if "full" in protocols:
            ranks["full"] = self._full_ranks(users, items, lo, bonus)
        model.train(was_training)
        return ranks

    def recent_input_items(self, rows: np.ndarray, count: int) -> torch.Tensor:
        """(len(rows), count): the last ``count`` items of each user row's input, most recent first, 0 where
        the input is shorter, on the sequences' device (what a model's ranking bonus reads)."""
        users = torch.as_tensor(rows, device=self.seqs.device)
        return self.seqs.window(users, self.prefix[rows], count, min_width=count).flip(1)

    def group_metrics(self, ranks: np.ndarray) -> dict[str, dict[str, float]]:
        """Metrics overall and per group; a group without users is left out (no NaN rows)."""
        out = {"overall": metrics_from_ranks(ranks, self.ks)}
        for name, mask in self.groups.masks().items():
            if not mask.any():
                continue
            out[name] = metrics_from_ranks(ranks[mask], self.ks)
            out[name]["users"] = int(mask.sum())
        out["overall"]["users"] = len(ranks)
        return out

    def _sampled_ranks(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        lo: int = 0,
        bonus: SequentialRecommender | None = None,
    ) -> np.ndarray:
        """``users``: vectors of user rows lo.. (lo > 0 only for a shard); ``bonus``: the model whose ranking
        bonus is added."""
        negs = torch.as_tensor(self.negatives()[lo : lo + len(users)], device=users.device)
        targets = torch.as_tensor(self.targets[lo : lo + len(users)], device=users.device)
        gen = torch.Generator(device=users.device).manual_seed(self.seed)
        out = []
        for start in range(0, len(users), self.batch_size):
            u = users[start : start + self.batch_size]
            tgt, neg = targets[start : start + self.batch_size], negs[start : start + self.batch_size]
            t = (u * items[tgt]).sum(-1)
            s = torch.einsum("bd,bnd->bn", u, items[neg])
            if bonus is not None:
                recent = self.recent_input_items(
                    np.arange(lo + start, lo + start + len(u)), bonus.bonus_history
                )
                t = add_ranking_bonus(t.unsqueeze(1), bonus, recent, tgt.unsqueeze(1)).squeeze(1)
                s = add_ranking_bonus(s, bonus, recent, neg)
            out.append(rank_of_target(t, s, self.ties, gen))
        return torch.cat(out).cpu().numpy()

    def _full_ranks(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        lo: int = 0,
        bonus: SequentialRecommender | None = None,
    ) -> np.ndarray:
        targets = torch.as_tensor(self.targets[lo : lo + len(users)], device=users.device)
        gen = torch.Generator(device=users.device).manual_seed(self.seed)
        out = []
        block = max(1, min(self.batch_size, (1 << 26) // max(1, items.shape[0])))  # <= 64M scores per block
        for start in range(0, len(users), block):
            rows = np.arange(lo + start, lo + min(start + block, len(users)))
            u = users[start : start + len(rows)]
            scores = u @ items.T  # (b, n_items + 1)
            if bonus is not None:
                add_ranking_bonus(scores, bonus, self.recent_input_items(rows, bonus.bonus_history))
            tgt = targets[start : start + len(rows)]
            t = scores.gather(1, tgt.unsqueeze(1)).squeeze(1)
            scores[:, 0] = float("-inf")
            if self.exclude_history:
                r, i = self._history(rows, self.prefix)
                scores[r, i] = float("-inf")
            scores.scatter_(1, tgt.unsqueeze(1), float("-inf"))
            out.append(rank_of_target(t, scores, self.ties, gen))
        return torch.cat(out).cpu().numpy()

    def _history(self, rows: np.ndarray, prefix: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        counts = prefix[rows]
        local = np.repeat(np.arange(len(rows)), counts)
        starts = np.repeat(self.data.offsets[rows], counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        items = self.data.items[starts + within]
        dev = self.seqs.device
        return torch.as_tensor(local, device=dev), torch.as_tensor(items.astype(np.int64), device=dev)
