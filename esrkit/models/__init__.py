"""Models: sequence encoders (SASRec, BERT4Rec, GRU4Rec, or yours) and recommender families built on them."""

from esrkit.data.tensors import SeqInput
from esrkit.models import (  # noqa: F401 - importing them registers the built-in encoders and model families
    alphafuse,
    baselines,
    bert4rec,
    gru4rec,
    idrec,
    llmesr,
    popularity,
    sasrec,
)
from esrkit.models.base import ENCODERS, MODELS, build_encoder, encoder_meta
from esrkit.models.recommender import ModelAssets, SequentialRecommender

__all__ = [
    "ENCODERS",
    "MODELS",
    "ModelAssets",
    "SeqInput",
    "SequentialRecommender",
    "build_encoder",
    "build_model",
    "encoder_meta",
    "model_class",
]


def model_class(name: str) -> type[SequentialRecommender]:
    return MODELS.get(name)


def build_model(cfg, n_items: int, max_len: int, assets: ModelAssets | None = None) -> SequentialRecommender:
    """The one place a ModelConfig becomes a model: ``MODELS[cfg.name].from_config(...)``, training to
    ``cfg.objective`` where it names one instead of the backbone's own."""
    model = model_class(cfg.name).from_config(cfg, n_items, max_len, assets or ModelAssets())
    if cfg.objective:
        model.objective = cfg.objective
    return model
