"""Export folders: self-contained, hash-checked, rebuilt exactly (models built directly; no training)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import esrkit
from esrkit.providers.base import Provider
from esrkit.serving import ExportError, verify_export
from tests.serving.helpers import catalogue, served_model

HISTORIES = [["I000001", "I000002", "I000003"], ["I000100", "I000042"], ["I000150"] * 30]


def forbid_llm_calls(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("an LLM provider was called")

    monkeypatch.setattr(Provider, "embed", refuse)
    monkeypatch.setattr(Provider, "iter_embed", refuse)


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("model.backbone=bert4rec", "embedding.center_items=true"),
        ("model.name=llminit",),
        ("model.name=id",),
        ("model.name=pop",),
    ],
    ids=["llmesr", "llmesr-bert4rec-centred", "llminit", "id", "pop"],
)
def test_an_export_loads_elsewhere_and_scores_the_same(overrides, tmp_path, monkeypatch) -> None:
    served = served_model(*overrides)
    forbid_llm_calls(monkeypatch)
    served.save(tmp_path / "made")
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(tmp_path / "made", moved)
    shutil.rmtree(tmp_path / "made")
    monkeypatch.chdir(tmp_path / "elsewhere")  # no recipes, prompts, datasets or caches around
    loaded = esrkit.load(moved)
    assert loaded.n_items == served.n_items and loaded.item_ids == served.item_ids
    assert loaded.titles == served.titles and loaded.new_item_support == served.new_item_support
    for history in HISTORIES:
        np.testing.assert_allclose(loaded.scores(history), served.scores(history), rtol=1e-6, atol=1e-6)
        expected = [r.item for r in served.recommend(history, k=20)]
        assert [r.item for r in loaded.recommend(history, k=20)] == expected
    u = catalogue().user_ids[7]
    assert [r.item for r in loaded.recommend_known(u)] == [r.item for r in served.recommend_known(u)]
    manifest = json.loads((moved / "manifest.json").read_text())
    assert set(manifest["files"]) >= {
        "config.json",
        "serving.json",
        "model.safetensors",
        "items.jsonl",
        "users.safetensors",
        "users.json",
    }


def test_an_llmesr_export_holds_the_frozen_table_and_projection(tmp_path) -> None:
    from safetensors.numpy import load_file

    served = served_model("embedding.center_items=true")
    served.save(tmp_path / "x", users=False)
    tensors = load_file(tmp_path / "x" / "model.safetensors")
    np.testing.assert_array_equal(tensors["buffer.semantic_table"], served.model.semantic_table.numpy())
    assert tensors["serving.item_vectors"].shape == (served.n_items + 1, 32)
    assets = load_file(tmp_path / "x" / "assets.safetensors")
    np.testing.assert_array_equal(assets["pca.components"], served.assets.pca_projection.components)
    np.testing.assert_array_equal(assets["llm.center"], served.llm_center)
    meta = json.loads((tmp_path / "x" / "serving.json").read_text())
    assert meta["provider"]["identity_hash"] == served.provider_spec["identity_hash"]
    first_section = meta["templates"]["item"]["section"][0]["template"]
    assert first_section.startswith("The item has the following attributes")
    assert not (tmp_path / "x" / "users.json").exists() and esrkit.load(tmp_path / "x").users is None


@pytest.mark.parametrize(
    "target", ["items.jsonl", "model.safetensors", "config.json", "users.json", "assets.safetensors"]
)
def test_a_changed_file_is_refused_by_name(target, tmp_path) -> None:
    served_model().save(tmp_path / "x")
    path = tmp_path / "x" / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=rf"{target}: changed since export"):
        esrkit.load(tmp_path / "x")


def test_missing_files_and_foreign_folders_are_refused(tmp_path) -> None:
    served_model().save(tmp_path / "x")
    (tmp_path / "x" / "users.safetensors").unlink()
    with pytest.raises(ExportError, match=r"users.safetensors: missing"):
        verify_export(tmp_path / "x")
    with pytest.raises(ExportError, match="not an esrkit export"):
        esrkit.load(tmp_path)
    (tmp_path / "x" / "manifest.json").write_text("{not json")
    with pytest.raises(ExportError, match="manifest.json: not valid JSON"):
        esrkit.load(tmp_path / "x")


def test_a_model_whose_state_does_not_travel_is_not_exported(tmp_path) -> None:
    served = served_model()
    true_vectors = served.model.all_item_vectors
    served.model.all_item_vectors = lambda: true_vectors() + 1.0  # state the tensors do not hold
    with pytest.raises(ExportError, match="cannot be exported.*item vectors"):
        served.save(tmp_path / "x")
    assert not (tmp_path / "x").exists()
