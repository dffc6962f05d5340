"""The offline default, the random control, definitions, identities and the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esrkit.providers import PROVIDERS, ProviderIdentity, list_definitions, load_provider, provider_kinds
from esrkit.providers.base import ProviderError, build_provider, resolve_model_path
from esrkit.providers.hashing import sparse_projection

ITEM_A = "The item has the following attributes: name is Red Matte Lipstick; brand is Acme; price is 9.99."
ITEM_A2 = (
    "The item has the following attributes: name is Red Matte Lipstick Long Lasting; brand is Acme; "
    "price is 10.99."
)
ITEM_B = (
    "The item has the following attributes: name is Stainless Steel Chef Knife; brand is Forge; "
    "price is 45.00."
)
UNRELATED = "pizza coffee bar downtown open late"


def cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_offline_is_the_default_and_lexically_sensible():
    provider = load_provider("offline")
    a, a2, b, u = provider.embed([ITEM_A, ITEM_A2, ITEM_B, UNRELATED])
    assert provider.dim == 384 and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm([a, a2, b, u], axis=1), 1.0, atol=1e-5)
    assert cos(a, a2) > 0.75  # near-duplicate prompts
    assert cos(a, a2) > cos(a, b) > cos(a, u)
    assert abs(cos(a, u)) < 0.3


def test_offline_is_stateless_and_deterministic():
    """A text's vector depends on nothing but the text and options: not on batch mates, order or history."""
    texts = [ITEM_A, ITEM_B, UNRELATED, ITEM_A2] * 3
    p1 = load_provider("offline")
    alone = np.stack([p1.embed([t])[0] for t in texts])
    together = load_provider("offline", batch_size=5).embed(list(reversed(texts)))[::-1]
    np.testing.assert_allclose(alone, together, atol=1e-6)
    np.testing.assert_array_equal(
        load_provider("offline").embed(texts), load_provider("offline").embed(texts)
    )


def test_offline_options_change_identity_but_batch_size_does_not():
    base = load_provider("offline").identity.hash()
    assert load_provider("offline", seed=1).identity.hash() != base
    assert load_provider("offline", dim=128).identity.hash() != base
    assert load_provider("offline", batch_size=7).identity.hash() == base
    assert load_provider("offline", dim=128).embed(["x y"]).shape == (1, 128)


def test_projection_is_fixed_by_its_arguments():
    p = sparse_projection(1000, 16, 4, 0)
    q = sparse_projection.__wrapped__(1000, 16, 4, 0)
    assert (p != q).nnz == 0 and p.shape == (1000, 16)
    assert (sparse_projection.__wrapped__(1000, 16, 4, 1) != p).nnz > 0


def test_random_control_is_seeded_per_text():
    r = load_provider("random")
    v = r.embed(["a", "b", "a"])
    assert v.shape == (3, 1536)
    np.testing.assert_array_equal(v[0], v[2])
    np.testing.assert_array_equal(load_provider("random").embed(["b"])[0], v[1])
    assert not np.allclose(load_provider("random", seed=1).embed(["a"])[0], v[0])
    assert load_provider("random", seed=1).identity.hash() != r.identity.hash()


def test_every_definition_loads():
    names = {d.name for d in list_definitions()}
    assert {
        "openai",
        "openai-3-small",
        "openai-3-large",
        "llama",
        "smollm2",
        "sentence-transformers",
        "minilm",
        "offline",
        "random",
    } <= names
    for d in list_definitions():
        provider = load_provider(d.name)  # lazy: no model, no network
        assert provider.kind == d.kind and provider.name == d.name
    assert load_provider("openai-3-large").declared_dim() == 3072


def test_unknown_options_and_kinds_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        load_provider("offline", dimension=12)
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "nope"\n')
    with pytest.raises(KeyError, match="unknown provider 'nope'"):
        load_provider(str(bad))
    bad.write_text('kind = "hashing"\ndim = 3\n')
    with pytest.raises(ValueError, match="put provider settings under \\[options\\]"):
        load_provider(str(bad))


def test_overrides_accept_the_cli_prefix():
    assert load_provider("offline", **{"provider.dim": 64}).options.dim == 64


def test_identity_round_trip_and_stable_hash():
    ident = load_provider("offline").identity
    again = ProviderIdentity.from_dict(json.loads(json.dumps(ident.to_dict())))
    assert again.hash() == ident.hash()
    assert (
        set(PROVIDERS.names())
        == set(provider_kinds())
        >= {"hashing", "random", "openai", "decoder", "sentence-transformers"}
    )


def test_check_vectors_rejects_bad_shapes_and_nan():
    p = build_provider("random", {"dim": 4})
    with pytest.raises(ProviderError, match="expected 2 vectors"):
        p.check_vectors(np.zeros((3, 4)), 2, "batch x")
    with pytest.raises(ProviderError, match="3 dimensions, expected 4"):
        p.check_vectors(np.zeros((2, 3)), 2, "batch x")
    with pytest.raises(ProviderError, match="NaN"):
        p.check_vectors(np.full((2, 4), np.nan), 2, "batch x")


def test_model_fingerprint_follows_content_not_location(tmp_path):
    import shutil

    from esrkit.providers.base import model_fingerprint

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    weights = bytearray(np.arange(3 << 20, dtype=np.uint8).tobytes())
    (model / "model.safetensors").write_bytes(bytes(weights))
    before = model_fingerprint(model)
    shutil.copytree(model, tmp_path / "copy")
    assert model_fingerprint(tmp_path / "copy") == before
    weights[len(weights) // 2] ^= 1  # a "fine-tune" of the same size
    (model / "model.safetensors").write_bytes(bytes(weights))
    assert model_fingerprint(model) != before


def test_model_locators(tmp_path):
    assert resolve_model_path(str(tmp_path)) == tmp_path
    with pytest.raises(ProviderError, match="not installed"):
        resolve_model_path("package-dir:surely_not_a_package_xyz")
    with pytest.raises(ProviderError, match="never downloaded"):
        resolve_model_path("meta-llama/Llama-2-7b-hf")
