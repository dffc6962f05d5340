"""BERT4Rec encoder (Sun et al. 2019) as the official LLM-ESR code runs it.

The official ``BertBackbone`` is line for line the SASRec block (bidirectional self-attention, 1 head, dropout
0.5, the same padding behaviour); what makes BERT4Rec is its cloze objective (``objective="cloze"``: mask_prob
0.6, 80/10/10 replacement, plus a second sample per user that masks only the last item) and its prediction
input ([MASK] appended). Those live in esrkit/data/batches.py; this file only registers the encoder.
"""

from __future__ import annotations

from esrkit.models.base import ENCODERS
from esrkit.models.sasrec import SASRecEncoder


@ENCODERS.register("bert4rec", objective="cloze", inputs="transformer")
class BERT4RecEncoder(SASRecEncoder):
    def __init__(
        self, hidden: int, layers: int = 2, heads: int = 1, dropout: float = 0.5, **_: object
    ) -> None:
        super().__init__(hidden, layers=layers, heads=heads, dropout=dropout, causal=False)
