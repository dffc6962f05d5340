"""The model contract shared by every recommender in esrkit, and the encoder registry.

A *sequence encoder* is any ``nn.Module`` that maps an item-embedding sequence ``x`` (batch, length, d) and
its padding ``mask`` (batch, length; True = real item) to hidden states of the same shape. Sequences are
right-aligned (the most recent item is last), as in the official LLM-ESR code. Two optional keyword arguments
let an encoder reproduce the official fixed-length computation exactly while esrkit trims padding:

* ``pad_count`` (batch,): how many padding slots the official ``max_len`` layout would have had;
* ``shared_pad``: True when every sequence's padding input is the same vector.

Encoders that ignore them simply get trimmed, correctly masked sequences. Register an encoder with the
objective its backbone trains with and the input stage it expects::

    @ENCODERS.register("mine", objective="seq2seq", inputs="transformer")
    class MyEncoder(nn.Module):
        def __init__(self, hidden, **options): ...
        def forward(self, x, mask, **kwargs): ...

``objective``: ``seq2seq`` (next item at every position, SASRec), ``cloze`` (masked items, BERT4Rec) or
``last`` (next item after the sequence, GRU4Rec). ``inputs``: ``transformer`` (item vectors x sqrt(d) +
learned positions, then dropout) or ``plain`` (item vectors as they are).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esrkit.registry import ENCODERS, MODELS  # the registry instances live in the foundation layer

__all__ = [
    "ENCODERS",
    "MODELS",
    "Dropout",
    "InputStage",
    "build_encoder",
    "dropout",
    "dropout_scale",
    "encoder_meta",
    "official_init",
]


# 8 mask values per random byte (bit 7 first, as np.unpackbits): 1 where the bit is set, scaled later
_BIT_TABLE = ((np.arange(256)[:, None] >> np.arange(7, -1, -1)[None, :]) & 1).astype(np.float32)


def dropout(x: Tensor, p: float, training: bool, last_of: int = 0) -> Tensor:
    """Inverted dropout, as ``F.dropout``, but with cheap random bits on the CPU.

    PyTorch's CPU dropout draws one Mersenne-Twister number per element, which made it the largest cost of an
    LLM-ESR step on a small CPU (benchmarks/RESULTS.md). On the CPU the mask comes from numpy's PCG64 instead:
    for p = 0.5 (the official value everywhere) one random *bit* per element, otherwise one float32 per
    element. The numpy generator is seeded from the torch RNG, so runs stay reproducible and resumable
    from torch's saved RNG state. On GPUs ``F.dropout`` (Philox) is already fast and is used as is.

    ``last_of=L``: ``x`` is the last position (dim -2 has size 1) of a tensor with ``L`` positions there, as
    when only the last position of a sequence is computed. The mask is drawn for the whole tensor and its last
    position used, so the result equals the full computation's last position, random numbers included.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    return x * dropout_scale(tuple(x.shape), p, x.dtype, last_of)


def dropout_scale(
    shape: tuple[int, ...], p: float, dtype: torch.dtype = torch.float32, last_of: int = 0
) -> Tensor:
    """The CPU dropout multiplier of :func:`dropout` (0 or 1 / (1 - p) per element; one ``torch.randint``
    draw).

    One multiplication by it gives exactly the values of multiplying by the 0/1 mask and then by 1 / (1 - p).
    """
    full = shape[:-2] + (last_of, shape[-1]) if last_of else shape
    n = int(np.prod(full))
    seed = int(torch.randint(0, 2**62, (1,)).item())
    rng = np.random.Generator(np.random.PCG64(seed))
    scale = np.float32(1.0 / (1.0 - p))
    if p == 0.5:
        random_bytes = np.frombuffer(rng.bytes((n + 7) // 8), dtype=np.uint8)
        if last_of:
            keep = np.unpackbits(random_bytes, count=n).reshape(-1, last_of, shape[-1])[:, -1] * scale
        else:  # one table lookup per byte writes the 8 scaled mask values at once
            keep = (_BIT_TABLE * scale)[random_bytes].reshape(-1)[:n]
    else:
        keep = rng.random(n, dtype=np.float32) >= p
        if last_of:
            keep = keep.reshape(-1, last_of, shape[-1])[:, -1]
        keep = keep * scale
    mask = torch.from_numpy(np.ascontiguousarray(keep, dtype=np.float32)).view(shape)
    return mask if dtype == torch.float32 else mask.to(dtype)


class Dropout(nn.Module):
    """``nn.Dropout`` using :func:`dropout`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor, last_of: int = 0) -> Tensor:
        return dropout(x, self.p, self.training, last_of)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def official_init(module: nn.Module, skip: tuple[str, ...] = ()) -> None:
    """The official ``_init_weights``: xavier-normal for every parameter with >= 2 dims except the named
    tables.

    1-D parameters (biases, LayerNorm) keep PyTorch's defaults, exactly as the official code (where xavier
    raises on them and the error is swallowed).
    """
    for name, param in module.named_parameters():
        if param.dim() >= 2 and not any(s in name for s in skip):
            nn.init.xavier_normal_(param.data)


class InputStage(nn.Module):
    """Item vectors -> encoder input. ``transformer``: x * sqrt(d) + P[position], dropout; ``plain``:
    identity.

    One positional table serves every view (the official dual models share it)."""

    def __init__(self, style: str, hidden: int, max_len: int, dropout: float) -> None:
        super().__init__()
        if style not in ("transformer", "plain"):
            raise ValueError(f"input style must be 'transformer' or 'plain', not {style!r}")
        self.style = style
        self.scale = math.sqrt(hidden)
        if style == "transformer":
            self.positions = nn.Embedding(max_len + 100, hidden)  # official size; no padding_idx
            self.dropout = Dropout(dropout)

    def forward(self, vectors: Tensor, positions: Tensor) -> Tensor:
        if self.style == "plain":
            return vectors
        return self.dropout(vectors * self.scale + self.positions(positions))


def build_encoder(name: str, hidden: int, **options) -> nn.Module:
    cls = ENCODERS.get(name)
    return cls(hidden, **options)


def encoder_meta(name: str) -> dict:
    """``objective`` and ``inputs`` of a registered encoder (or a ``package.module:Class`` plug-in's class
    attributes), the registry's defaults where it declares none."""
    meta = ENCODERS.meta(name)
    return {"objective": meta["objective"], "inputs": meta["inputs"]}
