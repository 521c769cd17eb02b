"""Which images a budget buys: a reproducible priority order over the dataset's files.

A budget of N buys the first N images of the order that are not cached yet, so re-running with the same budget
buys nothing and raising the budget extends the selection. The strategies live in `cache.strategies`, one module
each: `stratified` and `random` need nothing; `kcenter` and `typiclust` read the student's own features of every
image (`Features`, computed locally before anything is bought), start from what earlier runs bought, and with
`balanced` order each domain x class cell on its own and interleave the cells.
"""

from __future__ import annotations

import importlib

from .data.datasets import ImageFile
from .errors import InvalidOption
from .strategies import REGISTRY, Features

STRATEGIES = tuple(name for name in REGISTRY if name != "uncertainty")  # that one is `--rounds`' own


def needs_features(strategy: str) -> bool:
    _check(strategy)
    return REGISTRY[strategy][2]


def priority_order(
    files: tuple[ImageFile, ...] | list[ImageFile],
    strategy: str,
    seed: int,
    exclude_domains: frozenset[str] = frozenset(),
    *,
    features: Features | None = None,
    bought: frozenset[str] = frozenset(),
    budget: int | None = None,
    balanced: bool = False,
    scores: dict[str, float] | None = None,
) -> list[ImageFile]:
    """Order the files not in `exclude_domains` by `strategy`.

    Args:
        features: every file's features (the feature-based strategies need them).
        bought: the content keys (sha256) of images bought before: the feature-based strategies start from them.
        budget: how many images this order is for (TypiClust clusters for it; the others ignore it).
        balanced: the feature-based strategies, each domain x class cell on its own, interleaved.
        scores: the adaptive rounds' probe scores, by content key (`uncertainty` orders by them).
    """
    _check(strategy)
    module, function, wants_features = REGISTRY[strategy]
    if wants_features and features is None:
        raise InvalidOption(f"--select {strategy} needs the student's features of every image")
    if balanced and not wants_features:
        raise InvalidOption(f"--balanced applies to the feature-based strategies; {strategy} is balanced or random")
    eligible = [f for f in files if f.domain not in exclude_domains]
    last: list[ImageFile] = []
    if features is not None and wants_features:  # files with no features (they do not decode) come last
        last = sorted((f for f in eligible if f.path not in features.keys), key=lambda f: f.path)
        eligible = [f for f in eligible if f.path in features.keys]
    order = getattr(importlib.import_module(f"{__package__}.strategies.{module}"), function)
    chosen = order(eligible, seed, features=features, bought=bought, budget=budget, balance=balanced, scores=scores)
    return chosen + last


def _check(strategy: str) -> None:
    if strategy not in REGISTRY:
        raise InvalidOption(f"unknown selection {strategy!r}; choose one of {list(STRATEGIES)}")
