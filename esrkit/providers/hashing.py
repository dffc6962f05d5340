"""The offline default: lexical hashing features projected to a small dense vector. No download, no key.

Why this design: the vector of a text must depend only on that text and the options (no vocabulary or IDF
fitted on a corpus), otherwise a cached vector would silently change meaning when the catalogue changes.
Feature hashing (scikit-learn's ``HashingVectorizer``, MurmurHash3, stable across versions) over word
uni/bi-grams and character 3-5-grams gives that; sublinear TF damps repeated words; a fixed sparse random
projection whose entries come from an integer hash (not from a random generator whose stream could change
between numpy versions) maps the ~500k hashed features to ``dim`` dense dimensions while roughly preserving
cosines (Johnson-Lindenstrauss).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from esrkit.providers.base import PROVIDERS, Provider

_WORD = re.compile(r"(?u)\b\w+\b")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class HashingOptions:
    dim: int = 384
    n_features: int = 2**18  # hashed features per analyzer (words, characters)
    word_ngrams: list[int] = field(default_factory=lambda: [1, 2])  # [min, max] word n-gram sizes
    char_ngrams: list[int] = field(default_factory=lambda: [3, 5])  # [min, max] character n-gram sizes
    char_weight: float = 1.0  # weight of the character block relative to the word block
    projection_nnz: int = 4  # non-zeros per hashed feature in the projection
    seed: int = 0
    lowercase: bool = True
    batch_size: int = 1024

    def __post_init__(self) -> None:
        if len(self.word_ngrams) != 2 or len(self.char_ngrams) != 2:
            raise ValueError("hashing provider: word_ngrams and char_ngrams are [min, max] pairs")
        if self.dim < 1 or self.n_features < 16 or self.projection_nnz < 1:
            raise ValueError(
                "hashing provider: dim >= 1, n_features >= 16 and projection_nnz >= 1 are required"
            )


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit integer hash, vectorised (wrap-around arithmetic is intended)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


@lru_cache(maxsize=4)
def sparse_projection(n_in: int, dim: int, nnz: int, seed: int) -> Any:
    """(n_in, dim) CSR matrix with ``nnz`` entries of +-1/sqrt(nnz) per row, fully determined by the
    arguments."""
    import scipy.sparse as sp  # heavy import: only when the offline provider embeds

    keys = np.arange(n_in * nnz, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x100000000)
    h = _splitmix64(keys)
    cols = (h % np.uint64(dim)).astype(np.int64)
    signs = np.where((h >> np.uint64(40)) & np.uint64(1), 1.0, -1.0).astype(np.float32) / np.float32(
        np.sqrt(nnz)
    )
    rows = np.repeat(np.arange(n_in, dtype=np.int64), nnz)
    return sp.csr_matrix((signs, (rows, cols)), shape=(n_in, dim), dtype=np.float32)


def _l2_rows(matrix: Any) -> Any:
    from sklearn.preprocessing import normalize  # heavy optional import: scikit-learn loads only when used

    return normalize(matrix, norm="l2", axis=1, copy=False)


@PROVIDERS.register("hashing")
class HashingProvider(Provider):
    """Deterministic, stateless lexical embeddings (the `offline` provider)."""

    kind = "hashing"
    Options = HashingOptions

    def __init__(self, options: HashingOptions, name: str = "") -> None:
        super().__init__(options, name)
        self._vectorizers: tuple[Any, Any] | None = None

    def identity_model(self) -> str:
        return "hashing-v1"

    def identity_params(self) -> dict[str, Any]:
        o = self.options
        return {
            "n_features": o.n_features,
            "word_ngrams": o.word_ngrams,
            "char_ngrams": o.char_ngrams,
            "char_weight": o.char_weight,
            "projection_nnz": o.projection_nnz,
            "seed": o.seed,
            "lowercase": o.lowercase,
            "sublinear_tf": True,
        }

    def declared_dim(self) -> int:
        return int(self.options.dim)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(_WORD.findall(t))) for t in texts]

    def _get_vectorizers(self) -> tuple[Any, Any]:
        if self._vectorizers is None:
            # heavy optional import: scikit-learn loads only when used
            from sklearn.feature_extraction.text import HashingVectorizer

            o = self.options
            common = dict(
                n_features=o.n_features,
                alternate_sign=False,
                norm=None,
                lowercase=o.lowercase,
                dtype=np.float32,
            )
            words = HashingVectorizer(
                analyzer="word", token_pattern=_WORD.pattern, ngram_range=tuple(o.word_ngrams), **common
            )
            chars = HashingVectorizer(analyzer="char_wb", ngram_range=tuple(o.char_ngrams), **common)
            self._vectorizers = (words, chars)
        return self._vectorizers

    def load(self) -> None:
        self._get_vectorizers()
        sparse_projection(
            2 * self.options.n_features, self.options.dim, self.options.projection_nnz, self.options.seed
        )

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        import scipy.sparse as sp  # heavy import: only when the offline provider embeds

        o = self.options
        words, chars = self._get_vectorizers()
        blocks = []
        for vectorizer, weight in ((words, 1.0), (chars, o.char_weight)):
            m = vectorizer.transform(texts).tocsr()
            m.data = 1.0 + np.log(m.data)  # sublinear TF: counts >= 1, so this stays positive
            m = _l2_rows(m)
            if weight != 1.0:
                m = m * np.float32(weight)
            blocks.append(m)
        features = sp.hstack(blocks, format="csr", dtype=np.float32)
        dense = (features @ sparse_projection(2 * o.n_features, o.dim, o.projection_nnz, o.seed)).toarray()
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        return (dense / np.maximum(norms, 1e-12)).astype(np.float32)
