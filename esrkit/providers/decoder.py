"""Open decoder LLMs (LLaMA and relatives): pooled last hidden state, as the paper's "open-sourced LLMs"
option.

Why it looks like this:

* ``AutoModel`` loads the backbone without the LM head (the head's vocabulary projection would dominate time
  and is not used);
* texts are tokenised in windows, sorted by length (longest first, so an out-of-memory error shows on the
  first batch) and packed into batches of at most ``token_budget`` padded tokens; vectors are returned in
  input order;
* padding never changes a vector: position ids follow the attention mask, pooling ignores pads
  (``masked_fill``, so even NaN rows that some kernels give fully masked pad queries cannot leak), and
  last-token pooling takes the last real token whichever side is padded;
* bf16 on CUDA, fp32 on CPU; SDPA attention; ``device_map="auto"`` (accelerate) spreads a model larger than
  one GPU;
* ``compile=true`` runs the model under ``torch.compile`` (dynamic shapes): unfused, the norms, rotary
  embedding and activation between the matmuls take a large share of a decoder's GPU time unfused; compiling
  fuses them, for a compilation at load (how much it gains and costs: benchmarks/RESULTS.md);
* a GGUF file (e.g. SmolLM2 from PyPI) is dequantised by transformers on its first load; the result is saved
  once as safetensors under ``~/.cache/esrkit/models`` (``$ESRKIT_MODEL_CACHE``) and reloads in under a
  second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esrkit.providers.base import (
    PROVIDERS,
    EmbeddedBatch,
    Provider,
    ProviderError,
    model_fingerprint,
    resolve_model_path,
)
from esrkit.registry import Registry
from esrkit.utils.io import atomic_directory, atomic_write_json, sha256_text

log = logging.getLogger(__name__)

POOLERS: Registry[Any] = Registry("pooling")


@dataclass
class DecoderOptions:
    model: str = ""  # a local folder, a GGUF's folder, or package-dir:NAME; never downloaded
    gguf_file: str = ""  # file name inside `model` for GGUF checkpoints
    pooling: str = "mean"  # mean | last
    max_length: int = 2048  # tokens kept per text (longer texts are cut at the end)
    padding_side: str = "right"  # right | left: both give identical vectors
    token_budget: int = 0  # padded tokens per batch; 0 = 4096 on CPU, 32768 on CUDA
    max_batch_size: int = 4096  # texts per batch at most; the token budget is what normally binds
    sort_window: int = 8192  # texts tokenised and length-sorted together (bounds memory for huge inputs)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16
    device_map: str = ""  # "auto": place layers over all GPUs (and CPU) with accelerate
    attn_implementation: str = "sdpa"
    compile: bool = False  # torch.compile the model: faster on large inputs, costs compile time at load
    add_special_tokens: bool = True
    append_eos: bool = False  # add EOS before last-token pooling (models trained to summarise into it)
    normalize: bool = False  # l2-normalise pooled vectors
    trust_remote_code: bool = False
    convert_gguf: bool = True  # keep a dequantised safetensors copy of a GGUF model
    dim: int = 0  # expected width; 0 = the model's hidden size

    def __post_init__(self) -> None:
        if self.pooling not in POOLERS:
            raise ValueError(
                f"decoder provider: pooling must be one of {POOLERS.names()}, not {self.pooling!r}"
            )
        if self.padding_side not in ("left", "right"):
            raise ValueError("decoder provider: padding_side must be left or right")
        if self.max_length < 2 or self.max_batch_size < 1 or self.token_budget < 0:
            raise ValueError(
                "decoder provider: max_length >= 2, max_batch_size >= 1, token_budget >= 0 required"
            )


# ---------------------------------------------------------------------------------------------- pooling
@POOLERS.register("mean")
def mean_pool(hidden: Any, mask: Any, last_index: Any) -> Any:
    """Average over real tokens."""
    keep = mask.unsqueeze(-1).bool()
    summed = hidden.float().masked_fill(~keep, 0.0).sum(dim=1)
    return summed / mask.sum(dim=1, keepdim=True).clamp(min=1).float()


@POOLERS.register("last")
def last_token_pool(hidden: Any, mask: Any, last_index: Any) -> Any:
    """The state of the last real token (what a causal model has read the whole text into)."""
    import torch  # lazy: a provider imports torch only when it embeds

    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_index.to(hidden.device)].float()


# ---------------------------------------------------------------------------------------------- batching
def token_budget_batches(lengths: Sequence[int], budget: int, max_batch: int) -> list[list[int]]:
    """Positions grouped longest-first so each batch's padded size (count x longest) stays within
    ``budget``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = lengths[i]
        if current and ((len(current) + 1) * max(longest, n) > budget or len(current) >= max_batch):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


def pad_batch(sequences: Sequence[np.ndarray], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, attention mask), both (b, longest)."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if side == "right":
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        else:
            ids[row, longest - len(seq) :] = seq
            mask[row, longest - len(seq) :] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------- model files
def model_cache_root() -> Path:
    return Path(os.environ.get("ESRKIT_MODEL_CACHE") or Path.home() / ".cache" / "esrkit" / "models")


def read_hidden_size(config: dict[str, Any]) -> int | None:
    for source in (config, config.get("text_config") or {}):
        for key in ("hidden_size", "d_model", "n_embd", "dim"):
            if isinstance(source.get(key), int):
                return int(source[key])
    return None


def gguf_embedding_length(path: Path) -> int | None:
    try:
        from gguf import GGUFReader  # optional dependency (the smollm extra)
    except ImportError:
        return None
    reader = GGUFReader(str(path))
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        return None
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    field = reader.fields.get(f"{arch}.embedding_length")
    return int(field.parts[field.data[0]][0]) if field is not None else None


def torch_dtype(name: str, device: str) -> Any:
    import torch  # lazy: a provider imports torch only when it embeds

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ProviderError(f"dtype must be auto, float32, bfloat16 or float16, not {name!r}") from None


def resolve_device(name: str) -> str:
    import torch  # lazy: a provider imports torch only when it embeds

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ProviderError(f"device {name!r} asked for, but CUDA is not available here")
    return name


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence load reports (e.g. "lm_head.weight UNEXPECTED", which is the point of AutoModel) and progress
    bars while loading; errors still surface as exceptions."""
    # heavy optional import: transformers loads with a model
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def compile_model(model: Any) -> Any:
    """``torch.compile`` with dynamic shapes, so the varying batch shapes of token-budget batching share one
    graph."""
    import torch  # lazy: a provider imports torch only when it embeds

    return torch.compile(model, dynamic=True)


# ---------------------------------------------------------------------------------------------- provider
@PROVIDERS.register("decoder")
class DecoderProvider(Provider):
    kind = "decoder"
    Options = DecoderOptions

    def __init__(self, options: DecoderOptions, name: str = "") -> None:
        super().__init__(options, name)
        self._path: Path | None = None
        self._tokenizer: Any = None
        self._model: Any = None
        self._device: str | None = None

    # -------------------------------------------------------------- files and identity
    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = resolve_model_path(self.options.model)
            if self.options.gguf_file and not (self._path / self.options.gguf_file).is_file():
                raise ProviderError(f"{self._path / self.options.gguf_file} does not exist")
        return self._path

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = resolve_device(self.options.device)
        return self._device

    def _runs_on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def identity_model(self) -> str:
        return self.options.gguf_file or self.path.name

    def identity_params(self) -> dict[str, Any]:
        o = self.options
        dtype = o.dtype if o.dtype != "auto" else ("bfloat16" if self._runs_on_cuda() else "float32")
        return {
            "weights": model_fingerprint(self.path, o.gguf_file),
            "gguf_file": o.gguf_file,
            "pooling": o.pooling,
            "max_length": o.max_length,
            "dtype": dtype,
            "add_special_tokens": o.add_special_tokens,
            "append_eos": o.append_eos,
            "normalize": o.normalize,
        }

    def declared_dim(self) -> int | None:
        if self.options.dim:
            return int(self.options.dim)
        folder = self._converted_dir() if self.options.gguf_file else self.path
        if folder is not None and (folder / "config.json").is_file():
            with open(folder / "config.json", encoding="utf-8") as fh:
                return read_hidden_size(json.load(fh))
        if self.options.gguf_file:
            return gguf_embedding_length(self.path / self.options.gguf_file)
        return None

    def _converted_dir(self) -> Path | None:
        if not (self.options.gguf_file and self.options.convert_gguf):
            return None
        source = self.path / self.options.gguf_file
        stat = source.stat()
        key = sha256_text(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")[:16]
        return model_cache_root() / f"{source.stem}-{key}"

    # -------------------------------------------------------------- loading
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # heavy optional import: transformers loads with a model

            folder, extra = self._load_location()
            self._tokenizer = AutoTokenizer.from_pretrained(
                str(folder), trust_remote_code=self.options.trust_remote_code, **extra
            )
        return self._tokenizer

    def _load_location(self) -> tuple[Path, dict[str, Any]]:
        converted = self._converted_dir()
        if converted is not None:
            if not (converted / "model.safetensors").is_file():
                self._convert_gguf(converted)
            return converted, {}
        if self.options.gguf_file:
            return self.path, {"gguf_file": self.options.gguf_file}
        return self.path, {}

    def _convert_gguf(self, target: Path) -> None:
        """Dequantise once and keep a safetensors copy (atomic: a crash leaves no half-written folder)."""
        import safetensors.torch  # lazy, with torch
        import torch  # lazy: a provider imports torch only when it embeds

        # heavy optional import: transformers loads with a model
        from transformers import AutoModel, AutoTokenizer

        log.warning(
            "%s: dequantising %s once (about 30 s); cached in %s", self.name, self.options.gguf_file, target
        )
        extra = {"gguf_file": self.options.gguf_file}
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(self.path), **extra)
            model = AutoModel.from_pretrained(str(self.path), dtype=torch.float32, **extra)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        with atomic_directory(target, overwrite=True) as tmp:
            safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
            atomic_write_json(tmp / "config.json", config)
            tokenizer.save_pretrained(str(tmp))
        del model

    @property
    def model(self) -> Any:
        if self._model is None:
            with quiet_transformers():
                self._model = self._load_model()
        return self._model

    def _load_model(self) -> Any:
        from transformers import AutoModel  # heavy optional import: transformers loads with a model

        o = self.options
        folder, extra = self._load_location()
        kwargs: dict[str, Any] = dict(
            dtype=torch_dtype(o.dtype, "cuda" if self._runs_on_cuda() else "cpu"),
            trust_remote_code=o.trust_remote_code,
            **extra,
        )
        if o.device_map:
            kwargs["device_map"] = o.device_map
        try:
            model = AutoModel.from_pretrained(
                str(folder), attn_implementation=o.attn_implementation, **kwargs
            )
        except (ValueError, ImportError) as exc:
            if o.attn_implementation == "eager":
                raise
            log.warning(
                "%s: %s attention unavailable (%s); using eager attention",
                self.name,
                o.attn_implementation,
                exc,
            )
            model = AutoModel.from_pretrained(str(folder), attn_implementation="eager", **kwargs)
        if not o.device_map:
            model.to(self.device)
        model.eval()
        return compile_model(model) if o.compile else model

    def load(self) -> None:
        _ = self.tokenizer, self.model

    def _input_device(self) -> Any:
        return self.model.get_input_embeddings().weight.device

    # -------------------------------------------------------------- tokens
    def _encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        o = self.options
        tok = self.tokenizer
        limit = o.max_length - (1 if o.append_eos else 0)
        ids = tok(
            list(texts),
            add_special_tokens=o.add_special_tokens,
            truncation=True,
            max_length=limit,
            return_attention_mask=False,
        )["input_ids"]
        eos = tok.eos_token_id
        if o.append_eos and eos is None:
            raise ProviderError(f"{self.name}: append_eos is set but the tokenizer has no EOS token")
        out = []
        for seq in ids:
            seq = list(seq) + ([eos] if o.append_eos else [])
            out.append(np.asarray(seq or [self._empty_text_token()], dtype=np.int64))
        return out

    def _empty_text_token(self) -> int:
        """An empty text still needs one token; not the pad token, whose embedding is often all zeros."""
        tok = self.tokenizer
        for candidate in (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id):
            if candidate is not None:
                return int(candidate)
        return self._pad_id()

    def _pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(s) for s in self._encode(texts)]

    @property
    def tokens_exact(self) -> bool:
        return True

    @property
    def budget(self) -> int:
        return self.options.token_budget or (32768 if self._runs_on_cuda() else 4096)

    # -------------------------------------------------------------- embedding
    def iter_embed(self, texts: Sequence[str]) -> Iterator[EmbeddedBatch]:
        texts = list(texts)
        window = max(1, self.options.sort_window)
        for start in range(0, len(texts), window):
            encoded = self._encode(texts[start : start + window])
            lengths = [len(s) for s in encoded]
            for group in token_budget_batches(
                lengths, max(self.budget, max(lengths)), self.options.max_batch_size
            ):
                vectors = self._forward([encoded[i] for i in group])
                where = f"texts {start + group[0]}.. ({len(group)} texts)"
                yield EmbeddedBatch(
                    np.asarray(group) + start,
                    self.check_vectors(vectors, len(group), where),
                    sum(lengths[i] for i in group),
                )

    def _forward(self, sequences: list[np.ndarray]) -> np.ndarray:
        import torch  # lazy: a provider imports torch only when it embeds

        ids, mask = pad_batch(sequences, self._pad_id(), self.options.padding_side)
        lengths = mask.sum(axis=1)
        last_index = (
            lengths - 1 if self.options.padding_side == "right" else np.full_like(lengths, ids.shape[1] - 1)
        )
        position_ids = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        device = self._input_device()
        ids_t = torch.from_numpy(ids).to(device, non_blocking=True)
        mask_t = torch.from_numpy(mask).to(device, non_blocking=True)
        needs_mask = bool((lengths != ids.shape[1]).any())  # no padding: let SDPA take its causal fast path
        with torch.inference_mode():
            out = self.model(
                input_ids=ids_t,
                attention_mask=mask_t if needs_mask else None,
                position_ids=torch.from_numpy(position_ids).to(device, non_blocking=True),
                use_cache=False,
            )
            hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
            mask_h = mask_t.to(hidden.device)
            pooled = POOLERS.get(self.options.pooling)(hidden, mask_h, torch.from_numpy(last_index))
            if self.options.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return pooled.float().cpu().numpy()

    def close(self) -> None:
        self._model = None
