"""A tiny name -> factory registry, used for encoders, providers, models and metrics.

Registries replace if/elif chains: a new encoder or provider is one decorated class, and error messages can list
what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from esrkit.utils.errors import quote

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: ``@ENCODERS.register("sasrec", objective="seq2seq")``."""

        def wrap(obj: T) -> T:
            key = name.lower()
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return wrap

    def get(self, name: str) -> T:
        key = name.lower()
        if key not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise KeyError(f"unknown {self.kind} {quote(name)}; known: {known}")
        return self._entries[key]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name.lower()]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
