"""Ranks and ranking metrics, with a registry so new metrics are one function.

``rank`` is the 0-based position of the target among the candidates. Ties are handled deterministically:
``pessimistic`` (every other candidate with an equal score ranks above the target; a model that scores
everything equal gets the worst rank), ``optimistic`` (none do) or ``random`` (a seeded uniform share does).
The official code breaks ties by an unstable sort, which is arbitrary.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from esrkit.registry import Registry

METRICS: Registry[Callable[[np.ndarray, int], np.ndarray]] = Registry("metric")


@METRICS.register("hr")
def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    return (ranks < k).astype(np.float64)


@METRICS.register("ndcg")
def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


@METRICS.register("mrr")
def mrr(ranks: np.ndarray, k: int) -> np.ndarray:
    return np.where(ranks < k, 1.0 / (ranks + 1.0), 0.0)


def rank_of_target(
    target: Tensor, others: Tensor, ties: str = "pessimistic", generator: torch.Generator | None = None
) -> Tensor:
    """target (B,), others (B, C) scores (use -inf for excluded candidates) -> 0-based rank (B,).

    Ranks count the candidates *not below* the target, so a NaN score (a diverged model) can never look good:
    a NaN candidate ranks above the target and a NaN target ranks last (C). Counting ``others >= t`` instead
    would give a NaN target rank 0, i.e. a perfect H@K and N@K."""
    t = target.unsqueeze(1)
    count = lambda mask: mask.sum(1, dtype=torch.int32).long()  # noqa: E731 - int32 sums are faster
    n = others.shape[1]
    if ties == "pessimistic":  # one pass over the scores: every equal candidate ranks above the target
        return n - count(others < t)
    greater = n - count(others <= t)
    if ties == "optimistic":
        return greater
    equal = count(others == t)
    if ties == "random":
        u = torch.rand(equal.shape, generator=generator, device=equal.device)
        return greater + torch.floor(u * (equal + 1).to(u.dtype)).long()
    raise ValueError(f"ties must be pessimistic, optimistic or random, not {ties!r}")


def metrics_from_ranks(
    ranks: np.ndarray, ks: list[int] | tuple[int, ...] = (5, 10, 20), names: tuple[str, ...] = ("hr", "ndcg")
) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in names:
        fn = METRICS.get(name)
        for k in ks:
            out[f"{name}@{k}"] = float(fn(ranks, k).mean()) if len(ranks) else float("nan")
    return out
