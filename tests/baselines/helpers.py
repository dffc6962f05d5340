"""Small, fast setups shared by the baseline tests (the synthetic catalogue of tests/training/helpers.py)."""

from __future__ import annotations

import numpy as np
import torch

from esrkit.data.tensors import DeviceSequences
from esrkit.models.baselines import CITIES, MELT, CitiesOptions, MeltOptions, RLMRec, RLMRecOptions
from esrkit.training.trainer import StepContext, Trainer, TrainerOptions
from tests.training.helpers import small_assets, small_data

BASELINES = ("cities", "melt", "rlmrec")
BACKBONES = ("sasrec", "bert4rec", "gru4rec")
MAX_LEN = 50


def make_model(
    name: str,
    backbone: str = "sasrec",
    data=None,
    hidden: int = 32,
    dropout: float = 0.1,
    seed: int = 0,
    **options,
):
    """A baseline on the small synthetic data, set up; CITIES/MELT start in stage 2 unless told otherwise."""
    data = data if data is not None else small_data()
    torch.manual_seed(seed)
    kw = {"backbone": backbone, "hidden": hidden, "max_len": MAX_LEN, "dropout": dropout}
    if name == "cities":
        opts = {"pretrain_epochs": 0, "item_batch": 32, "layers": 1, "max_shots": 4} | options
        model = CITIES(data.n_items, options=CitiesOptions(**opts), **kw)
    elif name == "melt":
        opts = {"pretrain_epochs": 0} | options
        model = MELT(data.n_items, options=MeltOptions(**opts), **kw)
    elif name == "rlmrec":
        items, _, _ = small_assets()
        model = RLMRec(data.n_items, items, options=RLMRecOptions(**options), **kw)
    else:
        raise ValueError(name)
    model.setup(data)
    return model


def trainer_for(
    model, data=None, lr: float = 3e-3, batch_size: int = 64, epochs: int = 1, validate=None
) -> Trainer:
    data = data if data is not None else small_data()
    opts = TrainerOptions(
        lr=lr, batch_size=batch_size, max_len=MAX_LEN, epochs=epochs, patience=epochs, seed=0
    )
    return Trainer(
        model, DeviceSequences(data), opts, validate or (lambda m, e: {}), None, None, progress=False
    )


def run_steps(model, data=None, steps: int = 10, rows: int = 64, lr: float = 3e-3) -> list[float]:
    """``steps`` optimiser steps of the model's full training loss on the same ``rows`` samples."""
    trainer = trainer_for(model, data, lr=lr, batch_size=rows)
    gen = torch.Generator().manual_seed(0)
    model.train()
    model.on_epoch_start(StepContext(trainer, 0, None, gen))
    sample = np.arange(rows)
    return [trainer.step(sample, gen, 0)["loss"] for _ in range(steps)]


def backbone_state(model) -> dict[str, torch.Tensor]:
    """The plain backbone's weights (item table, input stage, encoder)."""
    keep = ("items.", "inputs.", "encoder.")
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(keep)}
