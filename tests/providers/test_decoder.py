"""Decoder provider on a tiny random LLaMA saved to disk: padding, pooling and batching never change a
vector."""

from __future__ import annotations

import numpy as np
import pytest

from esrkit.providers.base import ProviderError, build_provider
from esrkit.providers.decoder import pad_batch, token_budget_batches

pytest.importorskip("torch")
pytest.importorskip("transformers")

TEXTS = [
    "short",
    "The item has the following attributes: name is red matte lipstick; brand is acme; price is 9.99.",
    "x",
    (
        "The user has interacted with the following items: shampoo, serum, cream, mascara, perfume, "
        "lotion, soap, "
        "brush, palette, please summarise the user's preference."
    ),
    "pizza coffee bar",
    "gold ring gift for women",
    "",
]


def decoder(path, **options):
    """On CPU unless a test asks otherwise: exactness tests need float32 (CUDA runs bfloat16)."""
    return build_provider("decoder", {"model": str(path), "device": "cpu", **options}, name="tiny")


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_equals_one_at_a_time(tiny_llama, pooling, side):
    provider = decoder(tiny_llama, pooling=pooling, padding_side=side, token_budget=100_000)
    batched = provider.embed(TEXTS)
    single = np.stack([provider.embed([t])[0] for t in TEXTS])
    assert batched.shape == (len(TEXTS), 64) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)


def test_small_budget_sorts_by_length_and_restores_input_order(tiny_llama):
    provider = decoder(tiny_llama, token_budget=64, max_batch_size=3)
    lengths = provider.count_tokens(TEXTS)
    batches = list(provider.iter_embed(TEXTS))
    assert len(batches) > 2
    for b in batches:  # each batch within the budget (a single over-long text may travel alone)
        longest = max(lengths[i] for i in b.indices)
        assert len(b.indices) == 1 or len(b.indices) * longest <= 64
        assert len(b.indices) <= 3
    assert sorted(i for b in batches for i in b.indices.tolist()) == list(range(len(TEXTS)))
    firsts = [lengths[b.indices[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)  # longest first
    reference = decoder(tiny_llama, token_budget=100_000).embed(TEXTS)
    np.testing.assert_allclose(provider.embed(TEXTS), reference, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_compiled_model_gives_the_same_vectors(tiny_llama):
    """``compile=true`` is a speed option only: the same vectors for every batch shape (one dynamic graph)."""
    import shutil

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("torch.compile on CPU needs a C compiler")
    eager = decoder(tiny_llama, token_budget=64).embed(TEXTS)
    provider = decoder(tiny_llama, token_budget=64, compile=True)
    compiled = provider.embed(TEXTS)
    assert type(provider.model).__name__ == "OptimizedModule"
    assert provider.identity.hash() == decoder(tiny_llama).identity.hash()  # same vectors, same cache entries
    np.testing.assert_allclose(compiled, eager, atol=1e-4, rtol=0)


def test_sort_windows_keep_order(tiny_llama):
    provider = decoder(tiny_llama, sort_window=2, token_budget=100_000)
    np.testing.assert_allclose(provider.embed(TEXTS), decoder(tiny_llama).embed(TEXTS), atol=1e-5, rtol=0)


def test_mean_and_last_pooling_differ_and_normalize_works(tiny_llama):
    mean = decoder(tiny_llama, pooling="mean").embed(TEXTS[:3])
    last = decoder(tiny_llama, pooling="last").embed(TEXTS[:3])
    assert not np.allclose(mean, last)
    unit = decoder(tiny_llama, normalize=True).embed(TEXTS[:3])
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


def test_last_token_is_the_last_real_token(tiny_llama):
    """Last-token pooling of a text equals the last position of its own unpadded forward pass."""
    import torch

    provider = decoder(tiny_llama, pooling="last", padding_side="left")
    ids = provider.tokenizer(TEXTS[1])["input_ids"]
    with torch.inference_mode():
        ids_t = torch.tensor([ids], device=provider._input_device())
        hidden = provider.model(input_ids=ids_t).last_hidden_state[0, -1].float().cpu().numpy()
    got = provider.embed([TEXTS[1], TEXTS[0]])[0]
    np.testing.assert_allclose(
        got, hidden, atol=1e-5 if provider.device == "cpu" else 0.05 * np.abs(hidden).max()
    )


def test_empty_text_is_not_the_zero_pad_embedding(tiny_llama):
    vec = decoder(tiny_llama).embed([""])[0]
    assert np.linalg.norm(vec) > 1e-3


def test_max_length_truncates_and_append_eos(tiny_llama):
    provider = decoder(tiny_llama, max_length=8)
    assert max(provider.count_tokens(TEXTS)) <= 8
    eos = decoder(tiny_llama, max_length=8, append_eos=True, pooling="last")
    assert max(eos.count_tokens(TEXTS)) <= 8
    assert eos.identity.hash() != decoder(tiny_llama, max_length=8, pooling="last").identity.hash()


def test_identity_is_lazy_and_describes_the_weights(tiny_llama):
    provider = decoder(tiny_llama)
    ident = provider.identity
    assert provider._model is None  # identity never loads the model
    assert ident.kind == "decoder" and ident.dim == 64 and ident.params["dtype"] == "float32"
    assert ident.params["weights"] and ident.model == tiny_llama.name
    assert decoder(tiny_llama, pooling="last").identity.hash() != ident.hash()
    assert (
        decoder(tiny_llama, token_budget=99).identity.hash() == ident.hash()
    )  # batching never changes vectors


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ProviderError, match="no model given"):
        _ = build_provider("decoder", {}).identity
    with pytest.raises(ProviderError, match="does not exist"):
        _ = decoder(tmp_path / "nope").identity
    with pytest.raises(ValueError, match="pooling"):
        decoder(tmp_path, pooling="max")


def test_cuda_request_without_cuda_is_a_clear_error(tiny_llama):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ProviderError, match="CUDA is not available"):
        decoder(tiny_llama, device="cuda").embed(["a"])


def test_batching_helpers():
    assert token_budget_batches([3, 10, 2, 10], budget=20, max_batch=8) == [[1, 3], [0, 2]]
    assert token_budget_batches([50, 1], budget=20, max_batch=8) == [[0], [1]]
    ids, mask = pad_batch([np.array([5, 6, 7]), np.array([8])], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.gpu
def test_cuda_bf16_matches_cpu_fp32(tiny_llama):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu = decoder(tiny_llama).embed(TEXTS)
    gpu = decoder(tiny_llama, device="auto")  # cuda + bfloat16
    assert gpu.identity.params["dtype"] == "bfloat16"
    got = gpu.embed(TEXTS)
    cos = (got * cpu).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(cpu, axis=1)
    assert cos.min() > 0.99
    single = np.stack([gpu.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(got, single, atol=0.05 * np.abs(single).max())
    mapped = decoder(tiny_llama, device="auto", device_map="auto").embed(TEXTS)
    np.testing.assert_allclose(mapped, got, atol=0.05 * np.abs(got).max())
