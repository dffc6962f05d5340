"""Metrics, ranks and tie handling against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from esrkit.evaluation.metrics import metrics_from_ranks, rank_of_target
from esrkit.evaluation.significance import paired_user_ttest, seed_ttest


def test_hit_rate_and_ndcg_by_hand() -> None:
    ranks = np.array([0, 1, 4, 9, 10, 50])
    m = metrics_from_ranks(ranks, ks=(5, 10))
    assert m["hr@5"] == pytest.approx(3 / 6)
    assert m["hr@10"] == pytest.approx(4 / 6)
    expected = (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 6
    assert m["ndcg@10"] == pytest.approx(expected)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 6)


def test_tie_policies() -> None:
    target = torch.tensor([1.0, 1.0])
    others = torch.tensor([[2.0, 1.0, 1.0, 0.0], [0.0, 0.0, float("-inf"), 1.0]])
    assert rank_of_target(target, others, "optimistic").tolist() == [1, 0]
    assert rank_of_target(target, others, "pessimistic").tolist() == [3, 1]
    g = torch.Generator().manual_seed(0)
    r = rank_of_target(target.repeat(250), others.repeat(250, 1), "random", g)
    assert set(r[::2].tolist()) <= {1, 2, 3} and set(r[1::2].tolist()) <= {0, 1}
    assert 1.7 < r[::2].float().mean() < 2.3  # uniform over 1..3
    with pytest.raises(ValueError):
        rank_of_target(target, others, "nope")


def test_all_equal_scores_get_the_worst_rank_by_default() -> None:
    """A degenerate model must not look perfect (the official argsort trick can make it look so)."""
    r = rank_of_target(torch.zeros(3), torch.zeros(3, 100))
    assert r.tolist() == [100, 100, 100]


def test_significance() -> None:
    assert seed_ttest([0.5, 0.51, 0.49], [0.3, 0.31, 0.29]) < 1e-3
    assert seed_ttest([0.5, 0.52, 0.47], [0.5, 0.49, 0.515]) > 0.5
    assert math.isnan(seed_ttest([0.5], [0.3, 0.2]))
    a = np.zeros(200, dtype=int)
    b = np.full(200, 30)
    assert paired_user_ttest(a, b, "ndcg@10") < 1e-10
    assert paired_user_ttest(a, a, "hr@10") == 1.0


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "random"])
def test_nan_scores_never_look_good(ties: str) -> None:
    """A diverged model scores NaN: its target must rank last, not first (NaN >= x is False, so counting the
    candidates at or above the target would rank it 0 and report H@10 = N@10 = 1.0)."""
    nan = float("nan")
    target = torch.tensor([nan, 1.0, 1.0, nan])
    others = torch.tensor([[0.0, 0.5, float("-inf")], [nan, 0.0, 2.0], [0.0, 0.0, 0.0], [nan, nan, nan]])
    assert rank_of_target(target, others, ties, torch.Generator().manual_seed(0)).tolist() == [3, 2, 0, 3]
    assert metrics_from_ranks(np.array([3, 3]), ks=(1,))["ndcg@1"] == 0.0
