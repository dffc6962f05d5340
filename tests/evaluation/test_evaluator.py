"""Both protocols on a toy model whose scores are known, groups, and the official negative sampling rules."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from esrkit.data.sequences import SequenceData
from esrkit.data.tensors import DeviceSequences, SeqInput
from esrkit.evaluation.evaluator import Evaluator
from esrkit.evaluation.negatives import sample_eval_negatives
from esrkit.models.recommender import SequentialRecommender


class FixedScores(SequentialRecommender):
    """Every user scores item i with ``item_scores[i]``."""

    def __init__(self, item_scores: list[float]) -> None:
        super().__init__(len(item_scores) - 1, "sasrec", 200, False)
        self.table = nn.Parameter(torch.tensor(item_scores).unsqueeze(1))

    def encode(self, inp: SeqInput) -> torch.Tensor:
        return torch.ones(*inp.tokens.shape, 1)

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


def _data() -> SequenceData:
    seqs = [[1, 2, 3, 4], [5, 6, 7], [2, 9, 8, 10, 1]]
    return SequenceData.from_sequences(seqs, n_items=10)


def test_full_ranking_excludes_history_but_never_the_target() -> None:
    data = _data()
    # item i scores i: item 10 is best
    model = FixedScores([0.0] + [float(i) for i in range(1, 11)])
    ev = Evaluator(data, "test", DeviceSequences(data), negatives=3, exclude_history=True)
    ranks = ev.evaluate(model, ("full",)).ranks["full"]
    # user 0: target 4, history {1,2,3}: items above 4 = 5..10 -> rank 6
    # user 1: target 7, history {5,6}: above 7 = 8,9,10 -> 3
    # user 2: target 1, history {2,9,8,10}: above 1 = 3,4,5,6,7 -> 5
    assert ranks.tolist() == [6, 3, 5]
    ev2 = Evaluator(data, "test", DeviceSequences(data), negatives=3, exclude_history=False)
    assert ev2.evaluate(model, ("full",)).ranks["full"].tolist() == [6, 3, 9]


def test_valid_split_targets_and_sampled_protocol() -> None:
    data = _data()
    model = FixedScores([0.0] + [float(i) for i in range(1, 11)])
    ev = Evaluator(data, "valid", DeviceSequences(data), negatives=3, seed=1)
    assert ev.targets.tolist() == [3, 6, 10]
    res = ev.evaluate(model, ("sampled",))
    negs = ev.negatives()
    expected = [(negs[u] > t).sum() for u, t in enumerate(ev.targets)]
    assert res.ranks["sampled"].tolist() == expected
    assert set(res.metrics["sampled"]) >= {"overall", "tail_item", "user_1-4"}
    assert not {"head_user", "item_100+"} & set(res.metrics["sampled"])  # empty here: left out, not NaN


def test_eval_negatives_follow_the_official_rules() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 300, size=int(n)).tolist() for n in rng.integers(3, 60, size=200)]
    data = SequenceData.from_sequences(seqs, n_items=300)
    for split in ("valid", "test"):
        negs = sample_eval_negatives(data, split, 100, seed=7)
        assert negs.shape == (200, 100)
        for u in range(data.n_users):
            seq = data.sequence(u)
            excluded = set((seq[:-1] if split == "valid" else seq).tolist())
            row = negs[u].tolist()
            assert len(set(row)) == 100 and not excluded & set(row)
            assert min(row) >= 1 and max(row) <= 300
    again = sample_eval_negatives(data, "test", 100, seed=7)
    assert (again == sample_eval_negatives(data, "test", 100, seed=7)).all()
    assert not (sample_eval_negatives(data, "test", 100, seed=8) == again).all()
    # validation may draw the held-out test item (the official code does not exclude it)
    test_items = data.targets("test")
    v = sample_eval_negatives(data, "valid", 100, seed=7)
    allowed = [t for u, t in enumerate(test_items) if t not in data.sequence(u)[:-1]]
    assert allowed and any(test_items[u] in v[u] for u in range(200))


def _chi_square_against_uniform(counts: np.ndarray) -> float:
    expected = counts.mean()
    return float(((counts - expected) ** 2 / expected).sum())


def test_uniformity_of_eval_negatives() -> None:
    """1,000 allowed items, 100 negatives for each of 2,000 users: every allowed item is drawn about 200
    times. A chi-square test against uniform (999 degrees of freedom: 999 +- 45) passes the sampler and fails
    a sampler that is only slightly biased (shown below), so the test can catch one."""
    data = SequenceData.from_sequences([[1, 2, 3]] * 2000, n_items=1003)
    negs = sample_eval_negatives(data, "test", 100, seed=0)
    assert all(len(set(row)) == 100 for row in negs)  # distinct within a user
    counts = np.bincount(negs.ravel(), minlength=1004)
    assert counts[:4].sum() == 0  # padding and the user's own items are never negatives
    assert _chi_square_against_uniform(counts[4:]) < 1200
    biased = counts[4:].astype(float).copy()
    biased[:100] *= 1.2  # 20% more draws of the lowest tenth of the ids (as a modulo bias would give)
    assert _chi_square_against_uniform(biased) > 1200


def test_empty_groups_are_left_out_not_nan() -> None:
    """Three short users: no head user under the official rule, no item in the popular buckets. Those groups
    are absent from the metrics (no NaN row anywhere); the others carry their user counts."""
    import math

    data = _data()
    model = FixedScores([0.0] + [float(i) for i in range(1, 11)])
    metrics = Evaluator(data, "test", DeviceSequences(data), negatives=3).evaluate(model).metrics
    for protocol, groups in metrics.items():
        assert "head_user" not in groups and "item_100+" not in groups and "user_20+" not in groups
        assert groups["tail_user"]["users"] == 3 and groups["overall"]["users"] == 3
        values = [v for g in groups.values() for v in g.values()]
        assert all(math.isfinite(v) for v in values), protocol


def test_results_table_shows_a_dash_for_an_absent_group() -> None:
    from esrkit.reporting.console import results_table

    groups = {"overall": {"hr@10": 0.5, "ndcg@10": 0.25}, "tail_user": {"hr@10": 0.4, "ndcg@10": 0.2}}
    line = results_table([("run", groups)], "sampled").splitlines()[-1]
    dash = "–"
    assert line.split() == ["run", "0.5000", "0.2500", dash, dash, dash, dash, "0.4000", "0.2000", dash, dash]


class BonusScores(FixedScores):
    """FixedScores plus a ranking bonus: after last item a, the items in ``follow[a]`` get ``value``."""

    def __init__(self, item_scores: list[float], follow: dict[int, list[int]], value: float) -> None:
        super().__init__(item_scores)
        self.follow, self.value = follow, value

    def ranking_bonus(self, recent_items: torch.Tensor):
        ids = torch.tensor([self.follow.get(int(a), [0, 0]) for a in recent_items[:, 0]])
        return ids, self.value


class RecentBonus(FixedScores):
    """After recent items (a, b), items a % 10 + 1 and b % 10 + 1 get 3.5 and a and b themselves 1.25: a
    per-id bonus over several recent items, where an id listed twice gets both."""

    bonus_history = 2

    def ranking_bonus(self, recent_items: torch.Tensor):
        ids = torch.cat([(recent_items % 10) + 1, recent_items], 1)  # (B, 4): the next ids, then the items
        values = torch.tensor([3.5, 3.5, 1.25, 1.25]).expand(ids.shape)
        return ids, values


def test_the_ranking_bonus_is_applied_by_both_protocols_unless_turned_off() -> None:
    data = _data()  # test inputs end in 3, 6, 10; targets 4, 7, 1
    scores = [0.0] + [float(i) for i in range(1, 11)]
    model = BonusScores(scores, {3: [4, 0], 6: [1, 7], 10: [9, 5]}, 5.5)
    ev = Evaluator(data, "test", DeviceSequences(data), negatives=3, exclude_history=True)
    # user 0: target 4 + 5.5 = 9.5 beats 5..9 -> only 10 above; user 1: 7 + 5.5 = 12.5 -> first, (1 gets
    # the bonus too: 6.5, below); user 2: 5 -> 10.5 jumps over the target 1 along with 3,4,6,7 (9 is history)
    assert ev.evaluate(model, ("full",)).ranks["full"].tolist() == [1, 0, 5]
    negs = ev.negatives()
    bonus = {0: {4}, 1: {1, 7}, 2: {9, 5}}
    boosted = [
        sum(scores[n] + 5.5 * (n in bonus[u]) > scores[t] + 5.5 * (t in bonus[u]) for n in negs[u])
        for u, t in enumerate(ev.targets)
    ]
    assert ev.evaluate(model, ("sampled",)).ranks["sampled"].tolist() == boosted
    ev.ranking_bonus = False  # training's epoch selection: the model's own scores
    assert ev.evaluate(model, ("full",)).ranks["full"].tolist() == [6, 3, 5]
    # the valid split ranks after its own last input items (2, 5, 8): none of them has a bonus here
    valid = Evaluator(data, "valid", DeviceSequences(data), negatives=3)
    assert valid.recent_input_items(np.arange(3), 1).tolist() == [[2], [5], [8]]


def test_a_bonus_over_several_recent_items_adds_up_per_item_in_both_protocols() -> None:
    data = _data()  # test inputs 1 2 3 | 5 6 | 2 9 8 10; targets 4, 7, 1
    ev = Evaluator(data, "test", DeviceSequences(data), negatives=3, exclude_history=False)
    assert ev.recent_input_items(np.arange(3), 2).tolist() == [[3, 2], [6, 5], [10, 8]]
    assert ev.recent_input_items(np.arange(3), 5).tolist()[1] == [6, 5, 0, 0, 0]  # shorter: padded with 0
    scores = [0.0] + [float(i) for i in range(1, 11)]
    model = RecentBonus(scores)
    # user 0 (3, 2): 4 -> 7.5, 3 -> 3 + 3.5 + 1.25 = 7.75 (listed twice), 2 -> 3.25: 3, 8, 9, 10 above the
    # target 4; user 1 (6, 5): 7 -> 10.5, 6 -> 10.75 above it; user 2 (10, 8): 1 -> 4.5, below 5..10
    bonus = [{4: 3.5, 3: 4.75, 2: 1.25}, {7: 3.5, 6: 4.75, 5: 1.25}, {1: 3.5, 9: 3.5, 10: 1.25, 8: 1.25}]
    boosted = [[scores[i] + bonus[u].get(i, 0.0) for i in range(11)] for u in range(3)]
    expected = [sum(s > b[t] for s in b[1:]) for b, t in zip(boosted, ev.targets)]
    assert ev.evaluate(model, ("full",)).ranks["full"].tolist() == expected == [4, 1, 6]
    negs = ev.negatives()
    sampled = [sum(b[n] > b[t] for n in negs[u]) for u, (b, t) in enumerate(zip(boosted, ev.targets))]
    assert ev.evaluate(model, ("sampled",)).ranks["sampled"].tolist() == sampled
