"""An exponential moving average of the trained weights (``train.ema``): validation, epoch selection and the
saved best model use the average, while training goes on from the raw weights.

Why: with a softmax over the whole catalogue every item row moves at every step, and a rarely seen (tail)
item's row moves mostly as a negative, so its position at any one step is noisy; the average keeps where the
rows have been over the last 1 / (1 - decay) steps (Polyak averaging; the model EMA of image classifiers).
docs/RESULTS.md measures what it does for the tail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

PREFIX = "ema."  # names of the average's tensors inside a training checkpoint


class WeightAverage:
    """avg <- decay x avg + (1 - decay) x w after every optimiser step, for each trainable parameter w; the
    first update copies the weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be in (0, 1) to average (0 turns it off), not {decay}")
        self.decay = decay
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.shadow: dict[str, Tensor] = {}

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        return {name: params[name] for name in self.names}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = self._params(model)
        if not self.shadow:
            self.shadow = {name: p.detach().clone() for name, p in params.items()}
            return
        for name, p in params.items():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model holds the average inside the block and exactly its own weights again after it (before the
        first update there is no average, and the model is left as it is)."""
        if not self.shadow:
            yield
            return
        params = self._params(model)
        raw = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(raw[name])

    def state_tensors(self) -> dict[str, Tensor]:
        """The average for a training checkpoint (resuming continues it exactly)."""
        return {PREFIX + name: t for name, t in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, Tensor], device: torch.device) -> bool:
        """Restore from a training checkpoint's tensors; False when the checkpoint holds no average (it was
        written with ``train.ema`` off), in which case the average starts again from the next step."""
        found = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        if set(found) != set(self.names):
            self.shadow = {}
            return False
        self.shadow = {name: found[name].to(device) for name in self.names}
        return True
