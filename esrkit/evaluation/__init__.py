"""Evaluation: the paper's sampled protocol and full ranking, H@K / N@K overall and per long-tail group."""

from esrkit.evaluation.metrics import METRICS, metrics_from_ranks, rank_of_target
from esrkit.evaluation.negatives import sample_eval_negatives

__all__ = ["METRICS", "metrics_from_ranks", "rank_of_target", "sample_eval_negatives"]
