"""Name -> component registries: the one plug-in mechanism for models, datasets, fitness functions,
ES strategies and methods.

Register with a decorator (`@MODELS.register("mlp")`) or a call (`MODELS.register("mine", make_net)`).
A config names a registered component by its name, or any importable callable by an import string
`"package.module:attribute"` (`target:` in YAML); from Python the callable itself may be given.
The config's allowed values are the registry's names at validation time, so a user's component is
accepted as soon as the module that registers it has been imported.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable, Iterator


class RegistryError(ValueError):
    """An unknown name or an import string that does not resolve; the message is one line."""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None):
        """`register(name, obj)`, or `@register(name)` as a decorator. Re-registering replaces."""
        if obj is not None:
            self._items[name] = obj
            return obj

        def deco(o):
            self._items[name] = o
            return o
        return deco

    def get(self, name: str) -> Any:
        if name not in self._items:
            raise RegistryError(f"unknown {self.kind} '{name}' (known: {', '.join(self.names())})")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def resolve_target(target: Any, kind: str = "component") -> Callable:
    """A callable from an import string 'pkg.module:attr' (or 'pkg.module.attr'), or the callable itself."""
    if callable(target):
        return target
    if not isinstance(target, str) or not target.strip():
        raise RegistryError(f"{kind} target must be an import string 'package.module:attribute', got {target!r}")
    mod_name, sep, attr = target.partition(":")
    if not sep:
        mod_name, _, attr = target.rpartition(".")
    try:
        obj: Any = _import(mod_name)
    except Exception as err:  # ImportError, or the module's own error while importing
        raise RegistryError(f"{kind} target '{target}': cannot import '{mod_name}' "
                            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RegistryError(f"{kind} target '{target}': '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RegistryError(f"{kind} target '{target}' is not callable")
    return obj


def _import(mod_name: str):
    """Import a module; a module in the current directory counts too, as with `python -m`."""
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError:
        if os.getcwd() in sys.path:
            raise
        sys.path.insert(0, os.getcwd())
        return importlib.import_module(mod_name)


def target_name(target: Any) -> Any:
    """How a target is written back to config.yaml: an import string where one exists."""
    if isinstance(target, str) or target is None:
        return target
    mod, qual = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if mod and qual and "<" not in qual and mod != "__main__":
        return f"{mod}:{qual}"
    return f"<python callable {getattr(target, '__name__', repr(target))}>"


MODELS = Registry("model")
DATASETS = Registry("dataset")
FITNESS = Registry("fitness")
STRATEGIES = Registry("strategy")
METHODS = Registry("method")
