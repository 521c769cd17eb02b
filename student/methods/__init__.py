"""The method registry: one module per method, `student/methods/<name>.py`, whose class registers itself under
that name with `@register_method(name)`. The names come from the module files, so listing them imports no torch
(the CLI starts fast); a method's module is imported when the method is asked for."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from cache.errors import InvalidOption

if TYPE_CHECKING:
    from .base import Method

REGISTRY: dict[str, type[Method]] = {}
_SHARED = {"base"}  # modules here that are not methods


def register_method(name: str):
    def add(cls: type[Method]) -> type[Method]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def method_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _SHARED)


def check_method_name(name: str) -> None:
    """A ValueError naming the choices, unless `name` is a method. Imports nothing."""
    if name not in method_names():
        raise InvalidOption(f"unknown method {name!r}; choose one of {method_names()}")


def get_method(name: str) -> type[Method]:
    check_method_name(name)
    if name not in REGISTRY:
        importlib.import_module(f"{__name__}.{name}")
    if name not in REGISTRY:
        raise RuntimeError(f"{__name__}.{name} registers no method called {name!r}")
    return REGISTRY[name]


__all__ = ["REGISTRY", "check_method_name", "get_method", "method_names", "register_method"]
