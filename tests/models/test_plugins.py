"""``--set model.backbone=package.module:Class`` and ``--set model.name=package.module:Class`` load a user's
encoder and model family without registering them (the same mechanism as providers' ``kind``)."""

from __future__ import annotations

import pytest

from esrkit.config import ConfigError, resolve_recipe
from esrkit.models import build_model, encoder_meta
from esrkit.registry import ENCODERS
from esrkit.runs.train import train
from esrkit.training import checkpoint as ckpt
from tests.conftest import TINY_RUN
from tests.models.plugins import MeanPool, ScaledID

PLUGINS = ["model.name=tests.models.plugins:ScaledID", "model.backbone=tests.models.plugins:MeanPool"]


def test_a_plugged_in_family_and_encoder_are_built_from_the_config() -> None:
    cfg = resolve_recipe("demo", PLUGINS + ["model.hidden=16"])
    model = build_model(cfg.model, n_items=50, max_len=20)
    assert type(model) is ScaledID and type(model.encoder) is MeanPool
    assert (model.objective, model.input_style) == ("seq2seq", "plain")  # the encoder's class attributes
    assert encoder_meta("tests.models.plugins:MeanPool") == {"objective": "seq2seq", "inputs": "plain"}
    assert encoder_meta("torch.nn:Identity") == {"objective": "seq2seq", "inputs": "transformer"}  # defaults


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tests.models.plugins:Nope", "module 'tests.models.plugins' has no 'Nope'"),
        ("tests.models.nowhere:Encoder", "cannot import 'tests.models.nowhere'"),
        ("meanpool", "is not a registered encoder; known: bert4rec, gru4rec, sasrec"),
    ],
)
def test_a_bad_plugin_fails_when_the_config_is_checked(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_recipe("demo", [f"model.backbone={value}"])


def test_a_plugged_in_family_trains_and_tests_end_to_end(tmp_path) -> None:
    cfg = resolve_recipe(
        "demo",
        TINY_RUN + PLUGINS + ["model.hidden=16", "embedding.provider=none"],
        top={"output_dir": str(tmp_path / "runs"), "workdir": str(tmp_path / "work")},
    )
    summary = train(cfg, progress=False)
    assert summary["model"] == "tests.models.plugins:ScaledID" and summary["best_epochs"] == [0]
    tensors, _ = ckpt.load_tensors(
        tmp_path / "runs" / cfg.name / "seed-42" / "checkpoints" / "best.safetensors"
    )
    assert "scale" in tensors and "encoder.mlp.0.weight" in tensors  # the plug-ins' own weights were trained
    assert float(tensors["scale"]) != 1.0


def test_a_misspelt_registry_name_gets_the_close_one_suggested():
    with pytest.raises(
        KeyError, match=r"unknown encoder 'sasrecc' \(did you mean 'sasrec'\?\); known: bert4rec"
    ):
        ENCODERS.get("sasrecc")
    with pytest.raises(KeyError) as far:
        ENCODERS.get("transformer-xl")
    assert "did you mean" not in str(far.value)
