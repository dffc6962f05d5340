"""Name -> implementation registries, and the registries of the pipeline's extension points.

Registries replace if/elif chains: a new encoder, model family, loss or provider is one decorated class or
function, and error messages can list what exists. The instances live here, in the foundation layer, so that
``esrkit.config`` can check names (``model.name``, ``model.backbone``, ``model.loss``) without importing the
layers that fill them: a registry with ``builtins`` imports those modules (``importlib``) the first time it is
asked for a name, and their decorators register the built-in entries.

A name of the form ``package.module:Attribute`` is a plug-in: ``get`` imports the module and returns the
attribute, so a user's own encoder, model family or provider works from the command line
(``--set model.backbone=mypkg.encoders:MeanPool``) without being registered first. A plug-in's metadata (e.g.
an encoder's ``objective``) are its class attributes of the same names, else the registry's ``defaults``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from esrkit.utils.errors import choices, quote

if TYPE_CHECKING:  # the registered types, for annotations only
    from torch import nn

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(
        self,
        kind: str,
        builtins: str | tuple[str, ...] = (),
        defaults: dict[str, Any] | None = None,
        plugins: bool = False,
    ) -> None:
        self.kind = kind
        self.plugins = plugins  # whether ``package.module:Attribute`` names are accepted
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._builtins = (builtins,) if isinstance(builtins, str) else tuple(builtins)
        self._loaded = not self._builtins
        self.defaults = dict(defaults or {})

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
        if self._is_plugin(name):
            return load_plugin(name, self.kind)
        self._load_builtins()
        key = name.lower()
        if key not in self._entries:
            also = " (or package.module:Class for your own)" if self.plugins else ""
            raise KeyError(f"unknown {self.kind} {quote(name)}{choices(key, self._entries)}{also}")
        return self._entries[key]

    def meta(self, name: str) -> dict[str, Any]:
        """The entry's metadata over the registry's defaults (a plug-in's: its class attributes)."""
        obj = self.get(name)
        if self._is_plugin(name):
            return {key: getattr(obj, key, default) for key, default in self.defaults.items()}
        return {**self.defaults, **self._meta[name.lower()]}

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if self._is_plugin(name):
            try:
                self.get(name)
            except (ImportError, KeyError):
                return False
            return True
        self._load_builtins()
        return name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _is_plugin(self, name: str) -> bool:
        return self.plugins and is_plugin(name)

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: the modules imported below register into this registry
        for module in self._builtins:
            importlib.import_module(module)


def is_plugin(name: str) -> bool:
    return ":" in name


def load_plugin(name: str, kind: str) -> Any:
    """``package.module:Attribute`` -> the attribute; a clear error when the module or attribute is
    missing."""
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise KeyError(f"{kind} {quote(name)}: a plug-in is written package.module:Class")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise KeyError(
            f"{kind} {quote(name)}: cannot import {module!r} ({exc}); is it on PYTHONPATH?"
        ) from None
    try:
        return getattr(loaded, attr)
    except AttributeError:
        raise KeyError(f"{kind} {quote(name)}: module {module!r} has no {attr!r}") from None


# ---------------------------------------------------------------------------------------------- extension
# points Sequence encoders (esrkit/models/sasrec.py, bert4rec.py, gru4rec.py): ``objective`` is how the
# backbone trains (seq2seq, cloze or last), ``inputs`` the input stage it expects (transformer or plain); see
# models/base.py.
ENCODERS: Registry[type[nn.Module]] = Registry(
    "encoder",
    builtins="esrkit.models",
    defaults={"objective": "seq2seq", "inputs": "transformer"},
    plugins=True,
)
# Model families (esrkit/models/): classes with ``from_config`` (models/recommender.py).
MODELS: Registry[type[nn.Module]] = Registry("model", builtins="esrkit.models", plugins=True)
# Ranking losses (esrkit/training/losses.py): ``per_position_negatives`` says the batch builder draws
# negatives.
LOSSES: Registry[Callable[..., Any]] = Registry(
    "loss", builtins="esrkit.training.losses", defaults={"per_position_negatives": False}
)
