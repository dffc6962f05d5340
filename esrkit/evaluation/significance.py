"""Significance tests for comparing runs, as the paper reports them.

* ``seed_ttest``: the paper's "two-sided t-test" over seeds (independent samples: one metric value per seed).
* ``paired_user_ttest``: a paired two-sided t-test over users of one seed (same users, same negatives), which
  has far more power and is what the per-user rank files in every run directory are for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from esrkit.evaluation.metrics import METRICS


def seed_ttest(a: Sequence[float], b: Sequence[float]) -> float:
    """p-value of a two-sided Student t-test between per-seed values (nan with fewer than 2 seeds each)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if np.allclose(a.std(), 0) and np.allclose(b.std(), 0):
        return 0.0 if not np.isclose(a.mean(), b.mean()) else 1.0
    return float(stats.ttest_ind(a, b).pvalue)


def paired_user_ttest(ranks_a: np.ndarray, ranks_b: np.ndarray, metric: str = "ndcg@10") -> float:
    name, k = metric.split("@")
    fn = METRICS.get(name)
    x, y = fn(ranks_a, int(k)), fn(ranks_b, int(k))
    if len(x) != len(y):
        raise ValueError("paired test needs the same users in both runs")
    if np.allclose(x, y):
        return 1.0
    return float(stats.ttest_rel(x, y).pvalue)
