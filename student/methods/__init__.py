"""The method registry: `@register_method(name)`; the registry is the only list of methods."""

from __future__ import annotations

from .base import Context, Hparams, Method, Stage

REGISTRY: dict[str, type[Method]] = {}


def register_method(name: str):
    def add(cls: type[Method]) -> type[Method]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def get_method(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {method_names()}")
    return REGISTRY[name]


def method_names() -> list[str]:
    return list(REGISTRY)


from . import adip, erm, kd, rise, scmd, sd  # noqa: E402,F401  (each module registers its method)

__all__ = ["Context", "Hparams", "Method", "Stage", "get_method", "method_names", "register_method", "REGISTRY"]
