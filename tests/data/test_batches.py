"""Training batches follow the official generators (generators/data.py) exactly."""

from __future__ import annotations

import numpy as np
import torch

from esrkit.data.batches import (
    cloze_batch,
    history_input,
    last_item_batch,
    prediction_input,
    seq2seq_batch,
    teacher_input,
)
from esrkit.data.sequences import SequenceData
from esrkit.data.tensors import DeviceSequences

SEQS = [[1, 2, 3], [2, 3, 4, 5], [1, 3, 5, 7, 8], [4, 4, 6, 2, 1, 8], [6, 7, 8]]


def _seqs() -> DeviceSequences:
    return DeviceSequences(SequenceData.from_sequences(SEQS, n_items=8))


def test_seq2seq_inputs_targets_positions() -> None:
    s = _seqs()
    b = seq2seq_batch(s, np.arange(5), 200, 1, torch.Generator().manual_seed(0))
    # train = seq[:-2]; input = train[:-1]; target = next item; users with one training item have no target
    assert b.inp.tokens.tolist() == [[0, 0, 0], [0, 0, 2], [0, 1, 3], [4, 4, 6], [0, 0, 0]]
    assert b.pos.tolist() == [[0, 0, 0], [0, 0, 3], [0, 3, 5], [4, 6, 2], [0, 0, 0]]
    assert b.inp.positions.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [0, 0, 0]]
    assert b.inp.pad_count.tolist() == [200, 199, 198, 197, 200]
    neg = b.neg.squeeze(-1)
    assert ((neg == 0) == (b.pos == 0)).all()
    for u in range(5):  # negatives avoid the user's training sequence
        train = set(SEQS[u][:-2])
        assert not train & set(neg[u][neg[u] > 0].tolist())


def test_seq2seq_truncates_to_the_most_recent_max_len() -> None:
    b = seq2seq_batch(_seqs(), np.array([3]), 2, 1, torch.Generator().manual_seed(0))
    assert b.inp.tokens.tolist() == [[4, 6]] and b.pos.tolist() == [[6, 2]]
    assert b.inp.positions.tolist() == [[1, 2]] and b.inp.pad_count.tolist() == [0]


def test_last_item_batch() -> None:
    b = last_item_batch(_seqs(), np.arange(5), 200, 3, torch.Generator().manual_seed(0))
    assert b.pos.tolist() == [1, 3, 5, 2, 6]
    assert b.inp.tokens[3].tolist() == [4, 4, 6]
    for u in range(5):
        row = b.neg[u].tolist()
        assert len(set(row)) == 3 and not set(row) & set(SEQS[u][:-2])


def test_cloze_batch_masks_and_last_item_samples() -> None:
    s = _seqs()
    g = torch.Generator().manual_seed(0)
    b = cloze_batch(s, np.arange(10), 200, 1.0, 1, g)  # mask_prob 1: every training token is a target
    mask_token = 9
    train = [u[:-2] for u in SEQS]
    for u in range(5):
        real = b.inp.tokens[u][b.inp.tokens[u] != 0]
        assert len(real) == len(train[u])
        assert b.pos[u][b.pos[u] != 0].tolist() == train[u]
        # the last-item-only sample masks exactly the last training item
        assert b.inp.tokens[5 + u, -1].item() == mask_token
        assert b.pos[5 + u].tolist()[-1] == train[u][-1] and (b.pos[5 + u][:-1] == 0).all()
    # 80/10/10: with mask_prob 1 most tokens become [MASK]
    many = cloze_batch(s, np.zeros(2000, dtype=np.int64) + 3, 200, 1.0, 1, g)
    share = (many.inp.tokens[:, -4:] == mask_token).float().mean().item()
    assert 0.75 < share < 0.85


def test_teacher_and_prediction_inputs() -> None:
    s = _seqs()
    t = teacher_input(s, np.array([2, 3]), 200)  # a similar user's train[:-1]
    assert [row[row != 0].tolist() for row in t.tokens] == [[1, 3], [4, 4, 6]]
    v = prediction_input(s, np.array([2]), "valid", 200, "seq2seq", 9)
    assert v.tokens[0][v.tokens[0] != 0].tolist() == [1, 3, 5]
    te = prediction_input(s, np.array([2]), "test", 200, "seq2seq", 9)
    assert te.tokens[0][te.tokens[0] != 0].tolist() == [1, 3, 5, 7]
    nx = prediction_input(s, np.array([2]), "next", 200, "seq2seq", 9)
    assert nx.tokens[0][nx.tokens[0] != 0].tolist() == [1, 3, 5, 7, 8]


def test_bert_prediction_appends_mask_and_shifts_positions_at_full_length() -> None:
    s = _seqs()
    short = prediction_input(s, np.array([0]), "test", 3, "cloze", 9)  # prefix [1, 2] < max_len
    assert short.tokens.tolist() == [[1, 2, 9]] and short.positions.tolist() == [[1, 2, 3]]
    full = prediction_input(s, np.array([1]), "test", 3, "cloze", 9)  # prefix [2, 3, 4] == max_len
    # official: [2,3,4]+[MASK] with positions 1..4, then the oldest column dropped
    assert full.tokens.tolist() == [[3, 4, 9]] and full.positions.tolist() == [[2, 3, 4]]


def test_history_input_is_the_prediction_input_of_the_same_sequence() -> None:
    """Serving an unseen history must build exactly what evaluation builds for a dataset user."""
    s = _seqs()
    histories = [np.array(q) for q in SEQS]
    for max_len in (2, 4, 5, 200):  # truncating, filling and leaving room
        for objective in ("seq2seq", "cloze", "last"):
            a = prediction_input(s, np.arange(5), "next", max_len, objective, mask_token=9)
            b = history_input(histories, max_len, objective, mask_token=9)
            for field in ("tokens", "positions", "pad_count"):
                assert getattr(a, field).tolist() == getattr(b, field).tolist(), (max_len, objective, field)
