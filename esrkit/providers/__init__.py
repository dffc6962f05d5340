"""Embedding providers: text -> float32 vectors, each with an identity that keys the cache.

``load_provider("offline")`` builds the provider defined by ``providers/offline.toml``; kinds are registered
in ``PROVIDERS`` (hashing, random, openai, decoder, sentence-transformers). Heavy libraries (torch,
transformers, sentence-transformers, openai) are imported only when a provider first embeds.
"""

from esrkit.providers.base import (
    PROVIDERS,
    EmbeddedBatch,
    Provider,
    ProviderAuthError,
    ProviderDefinition,
    ProviderError,
    ProviderIdentity,
    build_provider,
    list_definitions,
    load_provider,
    provider_kinds,
    read_definition,
)

__all__ = [
    "PROVIDERS",
    "EmbeddedBatch",
    "Provider",
    "ProviderAuthError",
    "ProviderDefinition",
    "ProviderError",
    "ProviderIdentity",
    "build_provider",
    "list_definitions",
    "load_provider",
    "provider_kinds",
    "read_definition",
]
